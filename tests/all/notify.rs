//! Notifications: signed webhooks delivered to a real HTTP receiver on
//! 127.0.0.1 started by the test, with retries and backoff when it fails,
//! a Slack-compatible payload, and bad webhook URLs refused.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use chrono::Duration;
use clancy::audit::Kind;
use clancy::notify::{DeliveryState, MAX_ATTEMPTS, sign};
use clancy::org::Verdict;
use clancy_guests::HOSTILE;

use crate::env::{TestEnv, clocked_env, completed, queued_id, with_hostile_imports};

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A webhook receiver on 127.0.0.1 answering each request with the next
/// status of `script` (then 200), recording what it got.
pub struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn start(script: Vec<u16>) -> Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let got = Arc::new(Mutex::new(Vec::new()));
        let record = got.clone();
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let Ok(received) = read_request(&mut stream) else {
                    continue;
                };
                record.lock().map(|mut g| g.push(received)).ok();
                let status = script.next().unwrap_or(200);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        Ok(Receiver { addr, got })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/clancy", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> std::io::Result<Received> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Received {
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

pub fn grants(url: &str) -> String {
    with_hostile_imports(&format!(
        r##"
[[notify]]
url = "{url}"
format = "slack"
allow_private_address = true

[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["post"]
approval = "required"
"##
    ))
}

fn queue_post(env: &TestEnv, url: &str, text: &str) -> Result<String> {
    let result = env.run(HOSTILE, &grants(url), &format!("post {text}"))?;
    queued_id(completed(&result)?, "posted")
}

#[test]
fn a_failing_receiver_gets_signed_retries_with_backoff_until_it_recovers() -> Result<()> {
    let receiver = Receiver::start(vec![500, 503])?;
    let (env, clock) = clocked_env()?;
    let id = queue_post(&env, &receiver.url(), "notify me")?;

    let first = env.host.deliver_notifications()?;
    assert_eq!((first.delivered.len(), first.retrying.len()), (0, 1));
    // Not due again before the backoff has passed.
    assert_eq!(env.host.deliver_notifications()?.retrying.len(), 0);
    assert_eq!(receiver.received().len(), 1);
    clock.advance(Duration::seconds(2));
    assert_eq!(env.host.deliver_notifications()?.retrying.len(), 1);
    clock.advance(Duration::seconds(3));
    assert!(
        env.host.deliver_notifications()?.delivered.is_empty(),
        "4 s backoff"
    );
    clock.advance(Duration::seconds(1));
    assert_eq!(env.host.deliver_notifications()?.delivered.len(), 1);

    let got = receiver.received();
    assert_eq!(got.len(), 3, "two failures, then delivered");
    let secret = env.host.outbox().secret()?;
    for r in &got {
        let ts: i64 = r.header("webhook-timestamp").unwrap_or("").parse()?;
        let id = r.header("webhook-id").unwrap_or("");
        assert_eq!(
            r.header("webhook-signature"),
            Some(sign(&secret, id, ts, &r.body).as_str()),
            "every attempt is signed over its id, timestamp and body"
        );
        assert_eq!(r.header("X-Clancy-Event"), Some("requested"));
        assert_eq!(r.body, got[0].body, "the same payload each time");
        assert_eq!(
            Some(id),
            got[0].header("webhook-id"),
            "one id for every retry"
        );
    }
    assert_ne!(
        got[0].header("webhook-signature"),
        Some(
            sign(
                b"another secret",
                got[0].header("webhook-id").unwrap_or(""),
                0,
                &got[0].body
            )
            .as_str()
        )
    );
    // Slack-compatible incoming-webhook payload: text and blocks.
    let payload: serde_json::Value = serde_json::from_str(&got[0].body)?;
    let text = payload["text"].as_str().unwrap_or("");
    assert!(text.contains("test-employee asks for approval") && text.contains(&id));
    assert!(payload["blocks"].as_array().is_some_and(|b| !b.is_empty()));
    assert!(payload.to_string().contains("notify me"));

    // The decision is notified too.
    env.host.decide(&id, Verdict::Deny, "mia", Some("no"))?;
    assert_eq!(env.host.deliver_notifications()?.delivered.len(), 1);
    let last = receiver
        .received()
        .pop()
        .ok_or_else(|| anyhow::anyhow!("nothing"))?;
    assert_eq!(last.header("X-Clancy-Event"), Some("decided"));
    assert!(last.body.contains("mia denied test-employee's request"));
    Ok(())
}

#[test]
fn a_receiver_that_never_answers_is_given_up_after_the_last_attempt_and_audited() -> Result<()> {
    // A port with nothing listening.
    let url = {
        let l = TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}/hook", l.local_addr()?)
    };
    let (env, clock) = clocked_env()?;
    let id = queue_post(&env, &url, "nobody listens")?;
    let mut gave_up = Vec::new();
    for _ in 0..MAX_ATTEMPTS {
        gave_up.extend(env.host.deliver_notifications()?.gave_up);
        clock.advance(Duration::hours(2));
    }
    assert_eq!(gave_up.len(), 1);
    assert_eq!(gave_up[0].attempts, MAX_ATTEMPTS);
    let outbox = env.host.outbox().list()?;
    assert_eq!(outbox[0].state, DeliveryState::GaveUp);
    let audited = env.audit()?.into_iter().any(|e| {
        e.kind == Kind::Note
            && e.record.approval.as_deref() == Some(id.as_str())
            && e.record.result.starts_with("gave up after 8 attempts")
    });
    assert!(audited);
    // The request itself is untouched: still waiting for a human.
    assert_eq!(env.host.approvals().list()?.len(), 1);
    Ok(())
}

#[test]
fn webhook_urls_that_are_not_https_or_not_allowed_are_refused_with_the_line() -> Result<()> {
    for (url, message) in [
        ("ftp://hooks.example/x", "is not an http(s) URL"),
        (
            "http://hooks.example/x",
            "plain http is only allowed to this machine",
        ),
        ("https://user:pw@hooks.example/x", "carries credentials"),
        ("not a url", "is not a valid URL"),
    ] {
        let err = TestEnv::manifest(HOSTILE, &grants(url))
            .err()
            .ok_or_else(|| anyhow::anyhow!("{url} accepted"))?;
        let text = err.to_string();
        assert!(text.starts_with("test.toml:"), "{text}");
        assert!(text.contains(message), "{url}: {text}");
    }
    let bad_event = grants("https://hooks.example/x").replace(
        "format = \"slack\"",
        "format = \"slack\"\nevents = [\"sometimes\"]",
    );
    let err = TestEnv::manifest(HOSTILE, &bad_event)
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("unknown notify event \"sometimes\"")));
    Ok(())
}

#[test]
fn commands_only_queue_notifications_so_a_receiver_that_never_answers_holds_up_nothing()
-> Result<()> {
    // A receiver that accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let manifest = dir.path().join("employee.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"notifier\"\ncomponent = {HOSTILE:?}\n{}",
            grants(&url)
        ),
    )?;
    let manifest = manifest.to_string_lossy().to_string();
    let clancy = |args: &[&str]| crate::env::clancy(&data, args);
    clancy(&["operators", "add", "mia", "--role", "manager"])?;
    let run = clancy(&["run", &manifest, "--task", "post waiting"])?;
    assert_eq!(run.status.code(), Some(0), "{}", crate::env::stderr(&run));
    let list = clancy(&["approvals", "list", "--json"])?;
    let id = crate::env::stdout(&list)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["id"].as_str().map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("nothing queued"))?;
    let approved = clancy(&["approvals", "approve", &id, "--as", "mia"])?;
    assert_eq!(approved.status.code(), Some(0));
    // Neither `run` nor the approvals commands tried to deliver: every
    // notification is still pending with no attempt, and nothing connected.
    let outbox = crate::env::stdout(&clancy(&["notify", "list", "--json"])?);
    let pending: Vec<serde_json::Value> = outbox
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert!(pending.len() >= 2, "{outbox}");
    assert!(
        pending
            .iter()
            .all(|n| n["attempts"] == 0 && n["state"] == "pending"),
        "{outbox}"
    );
    listener.set_nonblocking(true)?;
    assert!(
        listener.accept().is_err(),
        "a command connected to the receiver"
    );
    Ok(())
}

#[test]
fn payloads_carry_what_an_approver_needs_never_the_whole_content_unless_the_target_opts_in()
-> Result<()> {
    let long = format!("{}SECRET-TAIL", "quarterly numbers ".repeat(200));
    for include_content in [false, true] {
        let env = TestEnv::new()?;
        let receiver = Receiver::start(vec![200])?;
        let grants = with_hostile_imports(&format!(
            r##"
[[notify]]
url = "{}"
format = "json"
include_content = {include_content}
allow_private_address = true

[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["post"]
approval = "required"
"##,
            receiver.url()
        ));
        let result = env.run(HOSTILE, &grants, &format!("post {long}"))?;
        let id = queued_id(completed(&result)?, "posted")?;
        assert_eq!(env.host.deliver_notifications()?.delivered.len(), 1);
        let got = receiver.received();
        let payload: serde_json::Value = serde_json::from_str(&got[0].body)?;
        assert_eq!(payload["approval"]["id"], id.as_str());
        assert_eq!(payload["approval"]["reason"], "posting what the task asked");
        let preview = payload["preview"].as_str().unwrap_or_default();
        if include_content {
            assert!(preview.contains("SECRET-TAIL"));
            assert!(
                payload["approval"]["request"]["operation"]["text"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("SECRET-TAIL"))
            );
        } else {
            assert!(!got[0].body.contains("SECRET-TAIL"), "{}", got[0].body);
            assert!(preview.chars().count() < 700, "{preview}");
            assert!(preview.contains("more characters: see `clancy approvals list`"));
            assert!(payload["approval"].get("request").is_none());
        }
    }
    Ok(())
}

/// Real deliveries verify with the Python `standardwebhooks` package (the
/// reference implementation of the spec), given only the secret as
/// `clancy notify secret` prints it; a changed body or a wrong secret do not.
#[test]
fn deliveries_verify_with_the_standard_webhooks_reference_library() -> Result<()> {
    let receiver = Receiver::start(vec![200, 200])?;
    let env = TestEnv::new()?;
    let id = queue_post(&env, &receiver.url(), "verify me")?;
    env.host.decide(&id, Verdict::Deny, "mia", None)?;
    assert_eq!(env.host.deliver_notifications()?.delivered.len(), 2);
    let secret = clancy::notify::secret_text(&env.host.outbox().secret()?);
    let other = clancy::notify::secret_text(b"another secret entirely, 32 b..");
    let deliveries: Vec<serde_json::Value> = receiver
        .received()
        .iter()
        .map(|r| {
            serde_json::json!({
                "body": r.body,
                "headers": {
                    "webhook-id": r.header("webhook-id"),
                    "webhook-timestamp": r.header("webhook-timestamp"),
                    "webhook-signature": r.header("webhook-signature"),
                },
            })
        })
        .collect();
    let input = serde_json::json!({ "secret": secret, "other": other, "deliveries": deliveries });
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
given = json.load(sys.stdin)
results = []
for d in given["deliveries"]:
    ok = Webhook(given["secret"]).verify(d["body"], d["headers"]) is not None
    def refused(secret, body):
        try:
            Webhook(secret).verify(body, d["headers"])
            return False
        except WebhookVerificationError:
            return True
    results.append([ok, refused(given["secret"], d["body"] + " "), refused(given["other"], d["body"])])
print(json.dumps(results))
"#;
    let mut python = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    python
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(input.to_string().as_bytes())?;
    let out = python.wait_with_output()?;
    assert!(
        out.status.success(),
        "python3 with standardwebhooks (installed by the README's test command): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<[bool; 3]> = serde_json::from_slice(&out.stdout)?;
    assert_eq!(results, vec![[true, true, true]; 2]);
    Ok(())
}

/// A webhook target on a private, loopback or link-local address (cloud
/// metadata at 169.254.169.254, an office network, this machine) is refused
/// when the manifest is read, unless its [[notify]] allows it explicitly.
#[test]
fn webhook_targets_on_private_addresses_are_refused_unless_the_manifest_allows_them() -> Result<()>
{
    let manifest = |url: &str, allow: bool| {
        let body = grants(url).replace(
            "allow_private_address = true",
            &format!("allow_private_address = {allow}"),
        );
        TestEnv::manifest(HOSTILE, &body)
    };
    for url in [
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.8/hook",
        "https://172.16.3.4/hook",
        "https://192.168.1.20/hook",
        "https://100.64.0.1/hook",
        "https://[fd00::1]/hook",
        "https://[fe80::1]/hook",
        "https://[::ffff:169.254.169.254]/hook",
        "https://[64:ff9b::a9fe:a9fe]/hook",
        "https://0.0.0.0/hook",
        "http://127.0.0.1:8080/hook",
        "http://localhost:8080/hook",
        "http://[::1]:8080/hook",
    ] {
        let refused = manifest(url, false)
            .err()
            .map(|e| e.to_string())
            .ok_or_else(|| anyhow::anyhow!("{url} accepted"))?;
        assert!(
            refused.contains("is a private, loopback or link-local address")
                && refused.contains("allow_private_address = true"),
            "{url}: {refused}"
        );
        assert!(manifest(url, true).is_ok(), "{url} refused though allowed");
    }
    // Public addresses and names need no allowance.
    for url in [
        "https://hooks.slack.com/services/T/B/x",
        "https://8.8.8.8/hook",
    ] {
        assert!(manifest(url, false).is_ok(), "{url}");
    }
    Ok(())
}

/// A name is checked after it is resolved, at every delivery: this
/// machine's own host name passes the manifest check (it is a name), but
/// resolves to a private or loopback address, so nothing is sent to it.
#[test]
fn a_webhook_name_that_resolves_to_a_private_address_is_never_reached() -> Result<()> {
    use std::net::ToSocketAddrs as _;
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|n| n.trim().to_string())
        .unwrap_or_default();
    let resolved: Vec<std::net::SocketAddr> = (name.as_str(), 443)
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default();
    if name.is_empty()
        || resolved.is_empty()
        || resolved.iter().any(|a| clancy::notify::is_public(a.ip()))
    {
        eprintln!(
            "skipped: this machine's host name {name:?} does not resolve to private addresses only ({resolved:?})"
        );
        return Ok(());
    }
    // Anything reaching this port on any local address is counted.
    let listener = TcpListener::bind("0.0.0.0:0")?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    let env = TestEnv::new()?;
    let url = format!("https://{name}:{port}/hook");
    let body = grants(&url).replace("allow_private_address = true\n", "");
    let result = env.run(HOSTILE, &body, "post rebinding")?;
    queued_id(completed(&result)?, "posted")?;
    let delivery = env.host.deliver_notifications()?;
    assert_eq!(delivery.gave_up.len() + delivery.retrying.len(), 1);
    assert!(delivery.delivered.is_empty());
    let outbox = env.host.outbox().list()?;
    let error = outbox[0].last_error.clone().unwrap_or_default();
    assert!(
        error.contains("resolves only to private, loopback or link-local addresses"),
        "{error}"
    );
    assert!(
        listener.accept().is_err(),
        "a connection reached the private address"
    );
    Ok(())
}

/// Every task end is signed, and a target that lists `checkpoint` gets a
/// copy of each checkpoint (a target listing no events does not).
#[test]
fn a_target_that_asks_for_checkpoints_gets_each_signed_one() -> Result<()> {
    let wants = Receiver::start(vec![])?;
    let default = Receiver::start(vec![])?;
    let env = TestEnv::new()?;
    let body = format!(
        "[[notify]]\nurl = \"{}\"\nevents = [\"checkpoint\"]\nallow_private_address = true\n{}",
        wants.url(),
        grants(&default.url())
    );
    let result = env.run(HOSTILE, &body, "print hello")?;
    completed(&result)?;
    env.host.deliver_notifications()?;
    let got = wants.received();
    assert_eq!(got.len(), 1, "one task, one task end, one checkpoint");
    assert_eq!(got[0].header("X-Clancy-Event"), Some("checkpoint"));
    let payload: serde_json::Value = serde_json::from_str(&got[0].body)?;
    let checkpoint: clancy::keys::Checkpoint =
        serde_json::from_value(payload["checkpoint"].clone())?;
    let public =
        clancy::keys::parse_public_key(&env.host.public_key()).map_err(anyhow::Error::msg)?;
    assert!(checkpoint.signed_by(&public));
    let end = env
        .audit()?
        .into_iter()
        .find(|e| e.kind == Kind::TaskEnd && e.record.task == result.task_id)
        .ok_or_else(|| anyhow::anyhow!("no task end"))?;
    assert_eq!((checkpoint.seq, checkpoint.head), (end.seq, end.hash));
    assert!(default.received().is_empty(), "checkpoints are opt-in");
    Ok(())
}
