//! `clancy tasks start|list|show|cancel|watch`: tasks queued for the
//! daemon's workers. Without a daemon, `start` queues the task (it runs when
//! `clancy serve` does) and the others read the queue in the data dir;
//! through a daemon, `watch` (and `start --wait`) follow the task's event
//! stream as it runs.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{Value, json};

use super::approvals::path_segment;
use super::remote::no_as;
use super::{Global, Remote, open, who};
use crate::human;
use crate::org::DataDirMode;

#[derive(Subcommand, Debug)]
pub(super) enum TasksCommand {
    /// Queue a task for a registered employee.
    Start {
        /// The employee.
        employee: String,
        #[command(flatten)]
        text: super::task::TaskText,
        /// Follow it until it ends (through a daemon); exit 1 unless it completed.
        #[arg(long)]
        wait: bool,
        /// Who asks [default: $USER] (not through a daemon: the token says).
        #[arg(long = "as", value_name = "NAME")]
        by: Option<String>,
    },
    /// Requested tasks, oldest first.
    List {
        /// JSON Lines.
        #[arg(long)]
        json: bool,
    },
    /// One task and where it stands.
    Show {
        /// The task id.
        id: String,
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a task that has not started.
    Cancel {
        /// The task id.
        id: String,
        /// Who cancels it [default: $USER].
        #[arg(long = "as", value_name = "NAME")]
        by: Option<String>,
    },
    /// Follow a task through the daemon: each audit entry as it is written,
    /// then how it ended; exit 1 unless it completed.
    Watch {
        /// The task id.
        id: String,
    },
}

/// Run a `tasks` command.
pub(super) fn run(
    global: &Global,
    command: TasksCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    if let Some(remote) = super::remote(global)? {
        return through_daemon(&remote, command, out);
    }
    let host = open(global, DataDirMode::Existing)?;
    match command {
        TasksCommand::Start {
            employee,
            text,
            wait,
            by,
        } => {
            if wait {
                anyhow::bail!(
                    "--wait follows the task on a running daemon; none serves this data dir (start one with `clancy serve`, or run the task at once with `clancy run`)"
                );
            }
            let task = text.read()?;
            let t = host.request_task(&employee, &task, &who(by)?)?;
            writeln!(
                out,
                "{} queued for {}; the daemon's workers run it (`clancy serve`)",
                t.id, t.employee
            )?;
            Ok(ExitCode::SUCCESS)
        }
        TasksCommand::List { json } => {
            // A page at a time: every task ever requested is never held at once.
            let mut listed = 0;
            host.for_each_task_page(|page| {
                listed += page.len();
                let page: Vec<Value> = page
                    .iter()
                    .map(serde_json::to_value)
                    .collect::<Result<_, _>>()?;
                print_tasks(out, &page, json)
            })?;
            if listed == 0 && !json {
                writeln!(out, "no tasks")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksCommand::Show { id, json } => {
            let t = host
                .task(&id)?
                .with_context(|| format!("no task {id:?} in this organisation"))?;
            print_task(out, &serde_json::to_value(t)?, json)
        }
        TasksCommand::Cancel { id, by } => {
            let t = host.cancel_task(&id, &who(by)?)?;
            writeln!(out, "{} cancelled", t.id)?;
            Ok(ExitCode::SUCCESS)
        }
        TasksCommand::Watch { .. } => anyhow::bail!(
            "watch follows a task on a running daemon; none serves this data dir (`clancy tasks show ID` reads it)"
        ),
    }
}

fn through_daemon(
    remote: &Remote,
    command: TasksCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    match command {
        TasksCommand::Start {
            employee,
            text,
            wait,
            by,
        } => {
            no_as(&by)?;
            let task = text.read()?;
            let t = remote.post(
                "/api/v1/tasks",
                &json!({"employee": employee, "task": task}),
            )?;
            let id = t["id"].as_str().unwrap_or_default().to_string();
            writeln!(
                out,
                "{} queued for {}",
                human::line(&id),
                human::line(&employee)
            )?;
            if !wait {
                return Ok(ExitCode::SUCCESS);
            }
            let end = follow(remote, &id, out)?;
            Ok(exit_for(&end))
        }
        TasksCommand::List { json } => {
            let list = remote.all_pages("/api/v1/tasks", &[], "cursor")?;
            print_list(out, &list, json)
        }
        TasksCommand::Show { id, json } => {
            let t = remote.get(&format!("/api/v1/tasks/{}", path_segment(&id)?), &[])?;
            print_task(out, &t, json)
        }
        TasksCommand::Cancel { id, by } => {
            no_as(&by)?;
            let t = remote.post(
                &format!("/api/v1/tasks/{}/cancel", path_segment(&id)?),
                &json!({}),
            )?;
            writeln!(
                out,
                "{} cancelled",
                human::line(t["id"].as_str().unwrap_or_default())
            )?;
            Ok(ExitCode::SUCCESS)
        }
        TasksCommand::Watch { id } => {
            let end = follow(remote, path_segment(&id)?, out)?;
            Ok(exit_for(&end))
        }
    }
}

/// 0 when the task completed, 1 when it ended otherwise.
pub(super) fn exit_for(task: &Value) -> ExitCode {
    if task["state"].as_str() == Some("completed") {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Follow a task's event stream to its end: print each audit entry as it
/// comes and each change of state; the task as it ended.
pub(super) fn follow(remote: &Remote, id: &str, out: &mut impl Write) -> Result<Value> {
    let response = remote
        .client
        .get(format!("{}/api/v1/tasks/{id}/events", remote.url))
        .bearer_auth(&remote.token)
        // A task runs as long as its limits let it; the stream says when.
        .timeout(std::time::Duration::from_secs(3600))
        .send()
        .with_context(|| format!("cannot reach the daemon at {}", remote.url))?;
    let status = response.status().as_u16();
    if status != 200 {
        let body: Value =
            serde_json::from_str(&response.text().unwrap_or_default()).unwrap_or(Value::Null);
        anyhow::bail!(
            "the daemon answered {status}: {}",
            human::line(body["detail"].as_str().unwrap_or("refused"))
        );
    }
    let mut last = Value::Null;
    let (mut event, mut data) = (String::new(), String::new());
    for line in std::io::BufReader::new(response).lines() {
        let line = line.context("the daemon broke off the task's event stream")?;
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        } else if line.is_empty() && !data.is_empty() {
            let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            match event.as_str() {
                "entry" => {
                    if let Ok(e) = serde_json::from_value::<crate::audit::Entry>(value) {
                        for l in crate::audit::render_log(&[e]) {
                            writeln!(out, "{l}")?;
                        }
                    }
                }
                "task" => {
                    writeln!(
                        out,
                        "task {}: {}",
                        human::line(value["id"].as_str().unwrap_or_default()),
                        human::line(value["state"].as_str().unwrap_or_default())
                    )?;
                    last = value;
                }
                "error" => anyhow::bail!(
                    "the daemon could not follow the task: {}",
                    human::line(&data)
                ),
                _ => {}
            }
            out.flush()?;
            event.clear();
            data.clear();
        }
    }
    if matches!(last["state"].as_str(), None | Some("queued" | "running")) {
        anyhow::bail!(
            "the task's event stream ended before the task did (`clancy tasks show {id}`)"
        );
    }
    print_end(out, &last)?;
    Ok(last)
}

/// How a task ended, as `clancy run` prints it.
fn print_end(out: &mut impl Write, t: &Value) -> Result<()> {
    for line in t["guest_output"].as_str().unwrap_or_default().lines() {
        writeln!(out, "  guest | {}", human::line(line))?;
    }
    let outcome = human::line(t["outcome"].as_str().unwrap_or_default());
    match t["state"].as_str() {
        Some("completed") => writeln!(out, "completed: {outcome}")?,
        Some("trapped") => writeln!(out, "STOPPED: {outcome}")?,
        Some(other) => writeln!(out, "{}: {outcome}", other.to_uppercase())?,
        None => {}
    }
    Ok(())
}

fn print_task(out: &mut impl Write, t: &Value, json: bool) -> Result<ExitCode> {
    if json {
        writeln!(out, "{t}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let line = |k: &str| human::line(t[k].as_str().unwrap_or_default());
    writeln!(
        out,
        "task {} ({}): {}",
        line("id"),
        line("employee"),
        line("state")
    )?;
    writeln!(
        out,
        "  asked by {} at {}: {}",
        line("requested_by"),
        line("requested_at"),
        line("task")
    )?;
    if !t["outcome"].is_null() {
        print_end(out, t)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_list(out: &mut impl Write, list: &[Value], json: bool) -> Result<ExitCode> {
    print_tasks(out, list, json)?;
    if list.is_empty() && !json {
        writeln!(out, "no tasks")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per task (or its JSON).
fn print_tasks(out: &mut impl Write, list: &[Value], json: bool) -> Result<()> {
    for t in list {
        if json {
            writeln!(out, "{t}")?;
        } else {
            let line = |k: &str| human::line(t[k].as_str().unwrap_or_default());
            writeln!(
                out,
                "{} {} {} (asked by {} at {})",
                line("id"),
                line("employee"),
                line("state"),
                line("requested_by"),
                line("requested_at")
            )?;
        }
    }
    Ok(())
}
