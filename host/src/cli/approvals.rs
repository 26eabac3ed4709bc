//! `clancy approvals list|approve|deny|answer|watch`: the queue of actions
//! and questions waiting for a human.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use anyhow::Result;
use clap::{Args, Subcommand};

use super::{Global, housekeeping, open, who};
use crate::approvals::{Approval, Status};
use crate::human;
use crate::integrations::{Action, Integration};
use crate::org::{DataDirMode, Org, Verdict};

#[derive(Subcommand, Debug)]
pub(super) enum ApprovalsCommand {
    /// Show pending requests with the employee's reason and a preview of the action.
    List {
        /// Only this employee's requests.
        #[arg(long)]
        employee: Option<String>,
        /// Include decided requests.
        #[arg(long)]
        all: bool,
        /// JSON Lines, one request per line.
        #[arg(long)]
        json: bool,
    },
    /// Approve requests; the host executes each approved action once.
    Approve(Decide),
    /// Deny requests; they never run.
    Deny(Decide),
    /// Answer a question an employee asked, with one of the options it offered.
    Answer {
        /// The question's id (ap-...).
        id: String,
        /// The option chosen, exactly as offered (see `clancy approvals list`).
        option: String,
        /// Who is answering [default: $USER].
        #[arg(long = "as", value_name = "NAME")]
        by: Option<String>,
        /// A comment kept with the answer.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Keep running: escalate, expire, resume approved actions and deliver
    /// notifications on a timer until interrupted.
    Watch {
        /// Seconds between rounds.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        every: u64,
    },
}

#[derive(Args, Debug)]
pub(super) struct Decide {
    /// Request ids (ap-...).
    ids: Vec<String>,
    /// Every pending request matching a filter: comma-separated key=value with
    /// keys employee, integration, action, task (e.g. "employee=sales-coordinator,action=send").
    #[arg(long, value_name = "FILTER")]
    all_matching: Option<String>,
    /// Who is deciding [default: $USER].
    #[arg(long = "as", value_name = "NAME")]
    by: Option<String>,
    /// A comment kept with the decision.
    #[arg(long)]
    comment: Option<String>,
    /// Approve an edited action instead: FIELD=VALUE (repeatable), e.g.
    /// --set body="..." for a mail. The edit gets its own hash and is audited.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    edits: Vec<String>,
}

/// Run an `approvals` command (housekeeping before and after).
pub(super) fn run(
    global: &Global,
    command: ApprovalsCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    if let Some(remote) = super::remote(global)? {
        return through_daemon(&remote, command, out);
    }
    let host = open(global, DataDirMode::Existing)?;
    housekeeping(&host)?;
    let code = approvals(&host, command, out)?;
    housekeeping(&host)?;
    Ok(code)
}

/// A parsed `--all-matching` filter.
struct Filter(Vec<(String, String)>);

impl Filter {
    /// Parse `key=value,…`. Every value must be non-empty and name
    /// something that exists (a registered employee, an integration, an
    /// action): a filter that could match everything by accident is an error.
    fn parse(text: &str, host: &Org) -> Result<Filter> {
        let terms = parse_terms(text).map_err(anyhow::Error::msg)?;
        for (k, v) in &terms {
            if *k == "employee" && host.stored_manifest(v)?.is_none() {
                anyhow::bail!(
                    "invalid filter value: no employee {v:?} is registered in this organisation"
                );
            }
        }
        Ok(Filter(
            terms.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ))
    }

    fn matches(&self, a: &Approval) -> bool {
        let r = &a.request;
        self.0.iter().all(|(k, v)| match k.as_str() {
            "employee" => &r.employee == v,
            "integration" => r.integration.is_some_and(|i| i.name() == v),
            "action" => r.operation.action().name() == v,
            "task" => r.task.starts_with(v.as_str()),
            _ => false,
        })
    }
}

/// An approvals command sent to a running daemon (the token says who
/// decides). Pending upgrades that widen an employee wait in the same queue
/// for admins: they are listed with the requests and decided by their
/// `up-…` id.
fn through_daemon(
    remote: &super::Remote,
    command: ApprovalsCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    let (verdict, decide) = match command {
        ApprovalsCommand::List {
            employee,
            all,
            json,
        } => {
            if all {
                anyhow::bail!(
                    "--all is not available through the daemon: decided requests are in `clancy audit log`"
                );
            }
            let items: Vec<serde_json::Value> = remote
                .all_pages("/api/v1/approvals", &[], "cursor")?
                .into_iter()
                .filter(|a| {
                    employee
                        .as_ref()
                        .is_none_or(|e| a["employee"].as_str() == Some(e.as_str()))
                })
                .collect();
            for a in &items {
                if json {
                    writeln!(out, "{a}")?;
                } else {
                    writeln!(out, "{}", a["preview"].as_str().unwrap_or_default())?;
                }
            }
            if items.is_empty() && !json {
                writeln!(out, "no pending requests")?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        ApprovalsCommand::Approve(d) => (Verdict::Approve, d),
        ApprovalsCommand::Deny(d) => (Verdict::Deny, d),
        ApprovalsCommand::Answer {
            id,
            option,
            by,
            comment,
        } => {
            super::remote::no_as(&by)?;
            let (status, body) = remote.post_status(
                &format!("/api/v1/approvals/{}/answer", path_segment(&id)?),
                &serde_json::json!({ "option": option, "comment": comment }),
            )?;
            return match status {
                200 => {
                    writeln!(out, "{id}: answered {option:?}")?;
                    Ok(ExitCode::SUCCESS)
                }
                409 => {
                    writeln!(out, "{id}: REFUSED: {}", detail(&body))?;
                    Ok(ExitCode::from(1))
                }
                _ => anyhow::bail!("{id}: {}", detail(&body)),
            };
        }
        ApprovalsCommand::Watch { .. } => {
            anyhow::bail!(
                "`approvals watch` is not needed while the daemon runs: it keeps time itself"
            );
        }
    };
    super::remote::no_as(&decide.by)?;
    let verb = if verdict == Verdict::Approve {
        "approve"
    } else {
        "deny"
    };
    let mut body = serde_json::json!({ "comment": decide.comment });
    if !decide.edits.is_empty() {
        if verdict != Verdict::Approve || decide.ids.len() != 1 || decide.all_matching.is_some() {
            anyhow::bail!(
                "--set edits one request: `clancy approvals approve <id> --set FIELD=VALUE`"
            );
        }
        body["edits"] = serde_json::Value::Object(
            parse_edits(&decide.edits)?
                .into_iter()
                .map(|(f, v)| (f, serde_json::Value::String(v)))
                .collect(),
        );
    }
    let mut ids = decide.ids.clone();
    if let Some(filter) = &decide.all_matching {
        let terms = parse_terms(filter).map_err(anyhow::Error::msg)?;
        ids.extend(
            remote
                .all_pages("/api/v1/approvals", &[], "cursor")?
                .iter()
                .filter(|a| terms.iter().all(|(k, v)| json_matches(a, k, v)))
                .filter_map(|a| a["id"].as_str().map(str::to_string)),
        );
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    if ids.is_empty() {
        anyhow::bail!(
            "no pending request matches (name request ids or --all-matching FILTER; see `clancy approvals list`)"
        );
    }
    let mut refused = 0;
    for id in &ids {
        let path = format!("/api/v1/approvals/{}/{verb}", path_segment(id)?);
        let (status, answer) = remote.post_status(&path, &body)?;
        match status {
            200 if answer["kind"].as_str() == Some("upgrade") => writeln!(
                out,
                "{id}: {}",
                human::line(answer["status"].as_str().unwrap_or(verb))
            )?,
            200 => match answer["status"].as_str().unwrap_or_default() {
                "denied" => writeln!(out, "{id}: denied")?,
                other => writeln!(
                    out,
                    "{id}: approved{}; {}",
                    answer["id"]
                        .as_str()
                        .filter(|new| new != id)
                        .map(|new| format!(" as {new} (edited)"))
                        .unwrap_or_default(),
                    human::line(answer["outcome"].as_str().unwrap_or(other))
                )?,
            },
            409 => {
                refused += 1;
                writeln!(out, "{id}: REFUSED: {}", detail(&answer))?;
            }
            _ => anyhow::bail!("{id}: {}", detail(&answer)),
        }
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The problem's detail, escaped for a terminal.
fn detail(body: &serde_json::Value) -> String {
    human::line(body["detail"].as_str().unwrap_or("the daemon refused"))
}

/// An id as one URL path segment: ids are letters, digits and `-`; anything
/// else is bad input, never a path of its own.
pub(super) fn path_segment(id: &str) -> Result<&str> {
    if id.is_empty()
        || id.len() > 200
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        || id.starts_with('.')
    {
        anyhow::bail!("{:?} is not an id or a name", human::line(id));
    }
    Ok(id)
}

/// Whether a listed request (JSON) matches one filter term.
fn json_matches(a: &serde_json::Value, key: &str, value: &str) -> bool {
    let field = |f: &str| a[f].as_str().unwrap_or_default().to_string();
    match key {
        "task" => field("task").starts_with(value),
        "employee" | "integration" | "action" => field(key) == value,
        _ => false,
    }
}

/// `--set FIELD=VALUE` edits.
fn parse_edits(edits: &[String]) -> Result<Vec<(String, String)>> {
    edits
        .iter()
        .map(|e| {
            e.split_once('=')
                .map(|(f, v)| (f.trim().to_string(), v.to_string()))
                .with_context(|| format!("invalid edit {e:?} (expected FIELD=VALUE)"))
        })
        .collect()
}

/// The filter grammar: `key=value` terms separated by commas, each key one
/// of employee, integration, action, task, each value non-empty (and, for
/// integration and action, a known name). At least one term.
fn parse_terms(text: &str) -> Result<Vec<(&'static str, String)>, String> {
    let mut terms = Vec::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (k, v) = term
            .split_once('=')
            .ok_or_else(|| format!("invalid filter term {term:?} (expected key=value)"))?;
        let (k, v) = (k.trim(), v.trim());
        if v.is_empty() {
            return Err(format!(
                "the filter term {term:?} has no value (expected {k}=VALUE)"
            ));
        }
        let key = match k {
            "employee" => "employee",
            "task" => "task",
            "integration" => {
                if Integration::parse(v).is_none() {
                    return Err(format!(
                        "invalid filter value: unknown integration {v:?} (expected one of: {})",
                        Integration::ALL.map(|i| i.name()).join(", ")
                    ));
                }
                "integration"
            }
            "action" => {
                if Action::parse(v).is_none() {
                    return Err(format!(
                        "invalid filter value: unknown action {v:?} (expected one of: {})",
                        crate::integrations::action_list(&Action::ALL)
                    ));
                }
                "action"
            }
            _ => {
                return Err(format!(
                    "invalid filter key {k:?} (expected one of: employee, integration, action, task)"
                ));
            }
        };
        terms.push((key, v.to_string()));
    }
    if terms.is_empty() {
        return Err(
            "the filter is empty (expected key=value, e.g. employee=sales-coordinator)".into(),
        );
    }
    Ok(terms)
}

fn approvals(host: &Org, command: ApprovalsCommand, out: &mut impl Write) -> Result<ExitCode> {
    let (verdict, decide) = match command {
        ApprovalsCommand::List {
            employee,
            all,
            json,
        } => {
            let mut shown = 0;
            let mut show = |a: &Approval| -> Result<()> {
                if employee.as_ref().is_some_and(|e| &a.request.employee != e) {
                    return Ok(());
                }
                shown += 1;
                if json {
                    writeln!(out, "{}", serde_json::to_string(a)?)?;
                    return Ok(());
                }
                writeln!(out, "{}", a.preview())?;
                if let Some(by) = &a.decided_by {
                    writeln!(
                        out,
                        "  decided by {}{}",
                        human::line(by),
                        a.comment
                            .as_ref()
                            .map(|c| format!(": {}", human::line(c)))
                            .unwrap_or_default()
                    )?;
                }
                if let Some(o) = &a.outcome {
                    writeln!(out, "  outcome: {}", human::line(o))?;
                }
                Ok(())
            };
            if all {
                // The whole history only when asked for, a page at a time.
                host.approvals()
                    .for_each_page(|page| page.iter().try_for_each(&mut show))?;
            } else {
                for a in host.approvals().open()? {
                    if a.status == Status::Pending {
                        show(&a)?;
                    }
                }
            }
            // Versions that may widen an employee wait in the same queue,
            // shown as the daemon's queue shows them.
            let upgrades: Vec<crate::org::Upgrade> = if all {
                host.upgrades()?
            } else {
                host.pending_upgrades()?
            };
            let upgrades: Vec<crate::org::Upgrade> = upgrades
                .into_iter()
                .filter(|u| all || u.status == crate::org::UpgradeStatus::Pending)
                .filter(|u| employee.as_ref().is_none_or(|e| &u.employee == e))
                .collect();
            for u in &upgrades {
                if json {
                    writeln!(out, "{}", super::employees::upgrade_json(u))?;
                } else {
                    writeln!(out, "{}", u.preview())?;
                }
            }
            if shown == 0 && upgrades.is_empty() && !json {
                writeln!(out, "no {}requests", if all { "" } else { "pending " })?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        ApprovalsCommand::Watch { every } => loop {
            let changed = host.tick()?;
            for a in &changed {
                writeln!(out, "{}: {:?} (step {})", a.id, a.status, a.step)?;
            }
            host.resume_approved()?;
            host.deliver_notifications()?;
            out.flush()?;
            std::thread::sleep(std::time::Duration::from_secs(every));
        },
        ApprovalsCommand::Approve(d) => (Verdict::Approve, d),
        ApprovalsCommand::Deny(d) => (Verdict::Deny, d),
        ApprovalsCommand::Answer {
            id,
            option,
            by,
            comment,
        } => {
            let by = who(by)?;
            match host.approvals().get(&id)? {
                None => anyhow::bail!("no approval request {id:?} in this organisation"),
                Some(a) => host.verify_pinned(&a.request.employee)?,
            }
            return match host.answer(&id, &option, &by, comment.as_deref()) {
                Ok(_) => {
                    writeln!(out, "{id}: answered {option:?}")?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(
                    e @ (crate::org::DecideError::BadAnswer { .. }
                    | crate::org::DecideError::NotAQuestion(_)
                    | crate::org::DecideError::Org(_)),
                ) => Err(e.into()),
                Err(e) => {
                    writeln!(out, "{id}: REFUSED: {e}")?;
                    Ok(ExitCode::from(1))
                }
            };
        }
    };
    let by = who(decide.by)?;
    if !decide.edits.is_empty() {
        if verdict != Verdict::Approve || decide.ids.len() != 1 || decide.all_matching.is_some() {
            anyhow::bail!(
                "--set edits one request: `clancy approvals approve <id> --set FIELD=VALUE`"
            );
        }
        let edits = parse_edits(&decide.edits)?;
        let id = &decide.ids[0];
        match host.approvals().get(id)? {
            None => anyhow::bail!("no approval request {id:?} in this organisation"),
            Some(a) => host.verify_pinned(&a.request.employee)?,
        }
        return match host.edit_and_approve(id, &edits, &by, decide.comment.as_deref()) {
            Ok(a) => {
                writeln!(
                    out,
                    "{id}: edited and approved as {}; {}",
                    a.id,
                    human::line(&a.outcome.unwrap_or_default())
                )?;
                Ok(ExitCode::SUCCESS)
            }
            Err(
                e @ (crate::org::DecideError::BadEdit { .. } | crate::org::DecideError::Org(_)),
            ) => Err(e.into()),
            Err(e) => {
                writeln!(out, "{id}: REFUSED: {e}")?;
                Ok(ExitCode::from(1))
            }
        };
    }
    let mut ids = decide.ids.clone();
    if let Some(filter) = &decide.all_matching {
        let filter = Filter::parse(filter, host)?;
        ids.extend(
            host.approvals()
                .open()?
                .into_iter()
                .filter(|a| a.status == Status::Pending && filter.matches(a))
                .map(|a| a.id),
        );
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    if ids.is_empty() {
        anyhow::bail!(
            "no pending request matches (name request ids or --all-matching FILTER; see `clancy approvals list`)"
        );
    }
    // Upgrades waiting in the queue are decided by an admin.
    let (upgrades, ids): (Vec<String>, Vec<String>) =
        ids.into_iter().partition(|id| id.starts_with("up-"));
    let mut refused = 0;
    for id in &upgrades {
        let admin = host.operators().get(&by)?.ok_or_else(|| {
            anyhow::anyhow!("{by} is not an operator of this organisation (pass --as ADMIN)")
        })?;
        match host.decide_upgrade(id, verdict == Verdict::Approve, &admin) {
            Ok(u) => writeln!(out, "{id}: {:?}", u.status)?,
            Err(
                e @ (crate::org::UpgradeError::Unknown(_)
                | crate::org::UpgradeError::NotAllowed(_)
                | crate::org::UpgradeError::Org(_)
                | crate::org::UpgradeError::Invalid(_)),
            ) => return Err(e.into()),
            Err(e) => {
                refused += 1;
                writeln!(out, "{id}: REFUSED: {e}")?;
            }
        }
    }
    // Unknown ids, or an employee whose pinned component is gone, are bad
    // input or bad state: refuse before deciding anything.
    for id in &ids {
        match host.approvals().get(id)? {
            None => anyhow::bail!("no approval request {id:?} in this organisation"),
            Some(a) => host.verify_pinned(&a.request.employee)?,
        }
    }
    for id in &ids {
        match host.decide(id, verdict, &by, decide.comment.as_deref()) {
            Ok(a) => match a.status {
                Status::Executed | Status::Failed => writeln!(
                    out,
                    "{id}: approved; {}",
                    human::line(&a.outcome.unwrap_or_default())
                )?,
                Status::Denied => writeln!(out, "{id}: denied")?,
                other => writeln!(out, "{id}: {other:?}")?,
            },
            // The host cannot work on the employee's behalf (its pinned
            // component is missing, the data dir is unusable): bad state, not
            // a refusal of this one request.
            Err(e @ crate::org::DecideError::Org(_)) => return Err(e.into()),
            Err(e) => {
                refused += 1;
                writeln!(out, "{id}: REFUSED: {e}")?;
            }
        }
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::parse_terms;
    use proptest::prelude::*;

    const KEYS: [&str; 4] = ["employee", "integration", "action", "task"];

    proptest! {
        /// Any text: no panic, and whatever parses has only known keys and
        /// non-empty, trimmed values without separators.
        #[test]
        fn any_filter_text_parses_or_is_refused_without_panicking(text in ".{0,200}") {
            if let Ok(terms) = parse_terms(&text) {
                prop_assert!(!terms.is_empty());
                for (k, v) in &terms {
                    prop_assert!(KEYS.contains(k));
                    prop_assert!(!v.is_empty() && v.trim() == v && !v.contains(','));
                }
            }
        }

        /// Terms written out as `k=v,…` parse back to the same terms.
        #[test]
        fn written_filters_round_trip(
            terms in proptest::collection::vec(
                (prop::sample::select(vec!["employee", "task", "integration", "action"]),
                 "[a-z0-9-]{1,12}"),
                1..5,
            )
        ) {
            let terms: Vec<(&str, String)> = terms
                .into_iter()
                .map(|(k, v)| match k {
                    "integration" => (k, "slack".to_string()),
                    "action" => (k, "post".to_string()),
                    _ => (k, v),
                })
                .collect();
            let text = terms.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            prop_assert_eq!(parse_terms(&text), Ok(terms));
        }

        /// A filter with an empty value anywhere, or no term at all, is an
        /// error: it can never match every request by accident.
        #[test]
        fn empty_values_and_empty_filters_are_errors(
            key in prop::sample::select(KEYS.to_vec()),
            spaces in "[ ,]{0,6}",
        ) {
            let refused = [
                format!("{key}="),
                format!("{key}={spaces}"),
                format!("task=x,{key}= "),
                spaces.clone(),
            ];
            for text in refused {
                prop_assert!(parse_terms(&text).is_err(), "{:?} was accepted", text);
            }
        }
    }
}
