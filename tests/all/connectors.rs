//! The connectors against local stand-ins of the five services: the exact
//! requests they make (and do not make), the grant's scope held on the
//! host whatever the guest or the service says, retries that honour
//! `Retry-After` and never repeat a write the service would perform twice,
//! misbehaving services, expired and revoked connections, and the three
//! example employees running unchanged on real connectors.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clancy::operators::{Operator, Role};
use clancy::org::{Org, Verdict};
use clancy::vault::Secret;
use clancy_guests::{ACCOUNTING_ASSISTANT, CUSTOMER_SERVICE, HOSTILE, SALES_COORDINATOR};

use crate::env::{TestEnv, completed};
use crate::services::{Fault, PORTAL_ID, REALM, SALES_CALENDAR, Services, channel_id, label_id};

/// Providers named as an admin would name them, one per integration.
const PROVIDERS: [(&str, &str); 5] = [
    ("google-mail", "gmail"),
    ("slack", "slack"),
    ("hubspot", "hubspot"),
    ("google-calendar", "google-calendar"),
    ("quickbooks", "quickbooks"),
];

/// `oauth.toml` naming the stand-ins as the five providers.
fn configure(data: &Path, services: &Services, timeout: &str) -> Result<()> {
    let secret = data.join("client.secret");
    {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&secret)?
            .write_all(b"stand-in-client-secret")?;
    }
    let base = &services.base;
    let mut text = String::new();
    for (name, integration) in PROVIDERS {
        let api_base = if integration == "slack" {
            format!("{base}/api")
        } else {
            base.clone()
        };
        text.push_str(&format!(
            r#"
[provider.{name}]
integration = "{integration}"
client_id = "clancy-test"
client_secret_file = "{secret}"
authorize_url = "{base}/authorize"
token_url = "{base}/token"
redirect_uri = "http://127.0.0.1:9/oauth/callback"
timeout = "{timeout}"
api_base = "{api_base}"
"#,
            secret = secret.display()
        ));
        match integration {
            "gmail" => text.push_str("account = \"team@northwind.example\"\n"),
            "hubspot" => text.push_str(&format!("ids = {{ main = \"{PORTAL_ID}\" }}\n")),
            "google-calendar" => text.push_str(&format!("ids = {{ sales = \"{SALES_CALENDAR}\" }}\n")),
            "quickbooks" => text.push_str(&format!(
                "ids = {{ northwind = \"{REALM}\" }}\nsettings = {{ payment_account = \"35\", expense_account = \"7\" }}\n"
            )),
            _ => {}
        }
    }
    std::fs::write(data.join("oauth.toml"), text)?;
    Ok(())
}

/// Connect `provider` the way an admin does (start, then the provider's
/// redirect with a code), and make its integration use it.
fn connect(host: &Org, provider: &str) -> Result<String> {
    let (url, state) = host.begin_connection(provider, "ada")?;
    anyhow::ensure!(url.contains("code_challenge_method=S256"), "{url}");
    let c = host.finish_connection(&state, &Secret::new("stand-in-code"))?;
    host.use_connection(&c.id, "ada")?;
    Ok(c.id)
}

/// A test org with an admin `ada`, the stand-ins configured, and `manifests`
/// registered; then every provider in `providers` connected.
fn connected_env(
    services: &Services,
    manifests: Vec<clancy::manifest::Manifest>,
    providers: &[&str],
) -> Result<(
    TestEnv,
    Vec<std::sync::Arc<clancy::runtime::LoadedEmployee>>,
)> {
    let env = TestEnv::new()?;
    env.host.operators().put(&Operator {
        name: "ada".into(),
        role: Role::Admin,
    })?;
    configure(&env.data_dir(), services, "2s")?;
    let mut loaded = Vec::new();
    for m in manifests {
        loaded.push(std::sync::Arc::new(env.host.load(m)?));
    }
    for p in providers {
        connect(&env.host, p)?;
    }
    Ok((env, loaded))
}

fn hostile(grants: &str) -> Result<clancy::manifest::Manifest> {
    TestEnv::manifest(HOSTILE, grants)
}

/// Every request carried a token the OAuth stand-in issued.
fn all_authorised(services: &Services) -> Result<()> {
    let w = services.world();
    for s in &w.seen {
        anyhow::ensure!(
            w.issued.contains(&s.token),
            "{} {} carried no issued token",
            s.method,
            s.path
        );
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn the_three_example_employees_run_unchanged_on_the_five_connectors() -> Result<()> {
    let services = Services::start()?;
    let manifests = vec![
        TestEnv::plugin_manifest("customer-service", CUSTOMER_SERVICE)?,
        TestEnv::plugin_manifest("accounting-assistant", ACCOUNTING_ASSISTANT)?,
        TestEnv::plugin_manifest("sales-coordinator", SALES_COORDINATOR)?,
    ];
    let names: Vec<&str> = PROVIDERS.iter().map(|(n, _)| *n).collect();
    let (env, employees) = connected_env(&services, manifests, &names)?;
    let sandbox_chat_before = env.host.sandbox().all_chat()?;

    // Customer service: reads the support label (a 429 with Retry-After on
    // the first label lookup is waited out), looks each sender up in
    // HubSpot and files tickets in Slack #support.
    services
        .world()
        .fault("/gmail/v1/users/me/labels", Fault::Status(429, Some(1)));
    let result = employees[0].run("Triage today's support mail")?;
    assert!(
        completed(&result)?.starts_with("filed 3 tickets in channel:#support"),
        "{:?}",
        result.end
    );
    {
        let w = services.world();
        let labels = w.to("/gmail/v1/users/me/labels");
        assert!(labels.len() >= 2);
        assert!(
            labels[1].at.duration_since(labels[0].at) >= Duration::from_millis(950),
            "Retry-After was not honoured"
        );
        let support = &w.slack[&channel_id("#support")];
        let tickets: Vec<&str> = support[1..].iter().map(|(_, _, t)| t.as_str()).collect();
        assert_eq!(tickets.len(), 3, "{tickets:?}");
        assert!(
            tickets
                .iter()
                .any(|t| t.starts_with("[P1]") && t.contains("Kenji Sato at Harbor Logistics")),
            "{tickets:?}"
        );
        // Listings name the support label only; no other label's mail is fetched.
        for s in w.to("/gmail/v1/users/me/messages") {
            if s.path == "/gmail/v1/users/me/messages" {
                assert_eq!(s.query["labelIds"], label_id("support"), "{s:?}");
            }
        }
        for private in ["m-1004", "m-1005", "m-1006", "m-1007", "m-1008"] {
            assert!(
                w.to(&format!("/gmail/v1/users/me/messages/{private}"))
                    .is_empty(),
                "{private} was fetched"
            );
        }
        // Posts went to #support's id only, as plain text.
        for s in w.to("/api/chat.postMessage") {
            assert_eq!(s.body["channel"], channel_id("#support"));
            assert_eq!(s.method, "POST");
        }
        // HubSpot: the token's portal is checked, contacts are searched.
        assert!(!w.to("/account-info/v3/details").is_empty());
        assert!(!w.to("/crm/v3/objects/contacts/search").is_empty());
    }

    // Accounting: receipts from Gmail, an expense purchase in QuickBooks
    // (a 500 on the first try is retried with the same requestid: one
    // purchase), overdue invoices listed, a post in #accounting.
    services.world().fault(
        &format!("/v3/company/{REALM}/purchase"),
        Fault::Status(500, None),
    );
    let result = employees[1].run("Prepare this month's expenses")?;
    let accounting_task = result.task_id.clone();
    let summary = completed(&result)?;
    assert!(
        summary.starts_with("expense report with 3 lines, GBP 255.38"),
        "{summary}"
    );
    {
        let w = services.world();
        let creates: Vec<_> = w
            .to(&format!("/v3/company/{REALM}/purchase"))
            .into_iter()
            .filter(|s| s.method == "POST")
            .collect();
        assert_eq!(creates.len(), 2, "one failure, one retry");
        assert_eq!(creates[0].query["requestid"], creates[1].query["requestid"]);
        assert_eq!(creates[0].body, creates[1].body);
        assert_eq!(w.purchases.len(), 1);
        let purchase = w.purchases.values().next().context("no purchase")?;
        assert_eq!(purchase["TotalAmt"], serde_json::json!(255.38));
        assert_eq!(purchase["AccountRef"]["value"], "35");
        assert_eq!(purchase["Line"].as_array().map(Vec::len), Some(3));
        let queries = w.to(&format!("/v3/company/{REALM}/query"));
        assert!(
            queries
                .iter()
                .all(|q| q.query["query"].starts_with("SELECT * FROM Invoice"))
        );
        let accounting = &w.slack[&channel_id("#accounting")];
        assert!(
            accounting.last().is_some_and(
                |(_, _, t)| t.starts_with("Expense report filed: 3 receipts, GBP 255.38")
            ),
            "{accounting:?}"
        );
        // Only the receipts label's mail was read.
        assert!(w.to("/gmail/v1/users/me/messages/m-1008").is_empty());
    }
    let folder = env.data_dir().join("files/default/expense-reports");
    let text = std::fs::read_to_string(
        std::fs::read_dir(&folder)?
            .next()
            .context("no summary file")??
            .path(),
    )?;
    assert!(text.contains("INV-2040 Harbor Logistics"), "{text}");

    // Sales: a qualified deal gets a demo in Google Calendar (a 503 on the
    // insert is retried under the same event id: one event), its contact
    // an invitation, the deal a new stage; the follow-up mail waits for
    // approval, so nothing is sent.
    services.world().fault(
        &format!("POST /calendar/v3/calendars/{SALES_CALENDAR}/events"),
        Fault::Status(503, None),
    );
    services.world().take_lines();
    let result = employees[2].run("Book demos for qualified deals")?;

    let summary = completed(&result)?.to_string();
    assert!(summary.contains("Acorn Bank - 40 seats: demo"), "{summary}");
    {
        let w = services.world();
        // Exactly these requests: the token's portal checked once, the
        // deals page by page, a day's events, the insert retried once.
        let lines: Vec<String> = w.seen.iter().map(|s| s.line()).collect();
        let event = w
            .to(&format!("/calendar/v3/calendars/{SALES_CALENDAR}/events"))
            .iter()
            .find_map(|s| s.body["id"].as_str().map(str::to_string))
            .context("no insert")?;
        let deals = "GET /crm/v3/objects/deals?";
        let props = "associations=contacts&limit=100&properties=dealname,dealstage,amount";
        let events = format!("/calendar/v3/calendars/{SALES_CALENDAR}/events");
        let deal = "/crm/v3/objects/deals/dl-401";
        let deal_props = "associations=contacts&properties=dealname,dealstage,amount";
        let expected = [
            "GET /account-info/v3/details".to_string(),
            format!("{deals}{props}"),
            format!("{deals}after=2&{props}"),
            "GET /crm/v3/objects/contacts/ct-304?properties=firstname,lastname,email,company,phone,notes".to_string(),
            format!("GET {events}?maxResults=250&orderBy=startTime&singleEvents=true&timeMax="),
            format!("POST {events}?sendUpdates=none"),
            format!("POST {events}?sendUpdates=none"),
            format!("GET {events}/{event}"),
            format!("PATCH {events}/{event}?sendUpdates=all"),
            format!("GET {deal}?{deal_props}"),
            format!("PATCH {deal}"),
            format!("GET {deal}?{deal_props}"),
        ];
        assert_eq!(lines.len(), expected.len(), "{lines:#?}");
        for (line, want) in lines.iter().zip(&expected) {
            assert!(line.starts_with(want.as_str()), "{line} is not {want}");
        }
        assert_eq!(w.deals["dl-401"].1, "demo-scheduled");
        let inserts: Vec<_> = w
            .to(&format!("/calendar/v3/calendars/{SALES_CALENDAR}/events"))
            .into_iter()
            .filter(|s| s.method == "POST")
            .collect();
        assert_eq!(inserts.len(), 2, "{:#?}", w.to("/calendar"));
        assert_eq!(inserts[0].body["id"], inserts[1].body["id"]);
        assert_eq!(inserts[0].query["sendUpdates"], "none");
        let demo = w
            .events
            .values()
            .find(|e| e["summary"] == "Demo: Acorn Bank - 40 seats")
            .context("no demo event")?;
        assert_eq!(
            demo["attendees"][0]["email"],
            "dan.whitfield@acornbank.example"
        );
        let invites: Vec<_> = w
            .seen
            .iter()
            .filter(|s| s.method == "PATCH" && s.path.contains("/events/"))
            .collect();
        assert_eq!(invites.len(), 1);
        assert_eq!(invites[0].query["sendUpdates"], "all");
        assert!(w.to("/gmail/v1/users/me/messages/send").is_empty());
        assert!(w.sent.is_empty());
    }
    assert_eq!(
        env.host.approvals().list()?.len(),
        2,
        "a triage question and a follow-up"
    );

    // Undo the sales task: the deal goes back, the invitation is withdrawn
    // and the event deleted, at the services.
    env.host.undo_task(&result.task_id, "alice")?;
    {
        let w = services.world();
        assert_eq!(w.deals["dl-401"].1, "qualified");
        let demo = w
            .events
            .values()
            .find(|e| e["summary"] == "Demo: Acorn Bank - 40 seats")
            .context("no demo event")?;
        assert_eq!(demo["status"], "cancelled");
        let deletes: Vec<_> = w
            .to(&format!("/calendar/v3/calendars/{SALES_CALENDAR}/events/"))
            .into_iter()
            .filter(|s| s.method == "DELETE")
            .collect();
        assert_eq!(deletes.len(), 1);
        assert_eq!(deletes[0].query["sendUpdates"], "all");
        let withdrawn = w
            .seen
            .iter()
            .rev()
            .find(|s| s.method == "PATCH" && s.path.contains("/events/"))
            .context("no uninvite")?;
        assert_eq!(withdrawn.body["attendees"], serde_json::json!([]));
    }

    // Undo the accounting task: the purchase is voided (with its
    // SyncToken) and the post in #accounting deleted, at the services.
    env.host.undo_task(&accounting_task, "alice")?;
    {
        let w = services.world();
        let purchase = w.purchases.values().next().context("no purchase")?;
        assert_eq!(purchase["TotalAmt"], serde_json::json!(0));
        let void = w
            .seen
            .iter()
            .find(|s| s.query.get("operation").map(String::as_str) == Some("void"))
            .context("no void")?;
        assert_eq!(void.body["SyncToken"], "0");
        let deleted = w.to("/api/chat.delete").pop().context("no chat.delete")?;
        assert_eq!(deleted.body["channel"], channel_id("#accounting"));
        assert!(
            !w.slack[&channel_id("#accounting")]
                .iter()
                .any(|(_, _, t)| t.starts_with("Expense report filed"))
        );
    }

    // The sandbox workspace was not touched by any of it.
    assert_eq!(env.host.sandbox().all_chat()?, sandbox_chat_before);
    all_authorised(&services)?;

    // No token (access or refresh) is in the audit log, its export, the
    // store's files or any task's output.
    let (issued, refresh) = {
        let w = services.world();
        (w.issued.clone(), w.refresh_issued.clone())
    };
    let audit = serde_json::to_string(&env.audit()?)?;
    let export = env.host.export_organisation("ada")?.to_string();
    let files = crate::env::walk(&env.data_dir())?;
    assert!(!issued.is_empty() && !refresh.is_empty());
    for token in issued.iter().chain(&refresh) {
        assert!(!export.contains(token.as_str()), "a token is in the export");
        assert!(
            !audit.contains(token.as_str()),
            "a token is in the audit log"
        );
        assert!(
            !contains(&files, token),
            "a token is in the data dir in clear"
        );
    }
    assert!(env.host.verify_audit(None)?.is_intact());
    Ok(())
}

/// The hostile guest's grants: post to #general, read and send on the
/// support label, write a folder.
fn scoped() -> String {
    crate::env::hostile_mail_grants("")
}

#[test]
fn a_grants_scope_holds_at_the_connector_whatever_the_guest_or_the_service_says() -> Result<()> {
    let services = Services::start()?;
    let (env, employees) = connected_env(
        &services,
        vec![hostile(&scoped())?],
        &["google-mail", "slack"],
    )?;
    let run =
        |task: &str| -> Result<String> { Ok(completed(&employees[0].run(task)?)?.to_string()) };

    // The service ignores the label asked for and lists everything: the
    // connector still shows the support label's mail only.
    services
        .world()
        .fault("/gmail/v1/users/me/messages", Fault::Stray);
    let listed = run("list-mail")?;
    assert_eq!(listed, "m-1003[INBOX,support]");
    // Unprovoked, exactly these requests: the labels, the support label's
    // messages page by page, then each message.
    services.world().take_lines();
    let listed = run("list-mail")?;
    assert_eq!(
        listed,
        "m-1001[INBOX,support] m-1002[INBOX,support] m-1003[INBOX,support]"
    );
    let m = "GET /gmail/v1/users/me/messages";
    assert_eq!(
        services.world().take_lines(),
        [
            "GET /gmail/v1/users/me/labels".to_string(),
            format!("{m}?labelIds=Label_support&maxResults=50"),
            format!("{m}?labelIds=Label_support&maxResults=48&pageToken=2"),
            format!("{m}/m-1001?format=full"),
            format!("{m}/m-1002?format=full"),
            format!("{m}/m-1003?format=full"),
        ]
    );
    // A message of another label is as missing as one that does not exist.
    let read = run("read-other-label m-1008")?;
    assert!(
        read.starts_with("refused:") && !read.contains("salary"),
        "{read}"
    );
    // An id that would walk the API's paths is refused before any request.
    let before = services.world().seen.len();
    for walker in ["../../labels", "..", "m-1001/../../labels", "%2e%2e"] {
        let read = run(&format!("read-other-label {walker}"))?;
        assert!(read.contains("is not an id"), "{walker}: {read}");
    }
    assert_eq!(services.world().seen.len(), before);

    // A send outside the organisation's domain is refused by the host:
    // Gmail never hears of it.
    let sent = run("send-mail")?;
    assert!(sent.starts_with("refused:"), "{sent}");
    assert!(
        services
            .world()
            .to("/gmail/v1/users/me/messages/send")
            .is_empty()
    );
    // Inside it, the mail goes out with the label applied, headers intact
    // (no header can be smuggled in through the address).
    let sent = run("send-to ops@northwind.example")?;
    assert!(sent.starts_with("sent: done"), "{sent}");
    {
        let w = services.world();
        assert_eq!(w.sent.len(), 1);
        assert!(
            w.sent[0].contains("To: ops@northwind.example\r\n"),
            "{}",
            w.sent[0]
        );
        assert!(w.sent[0].contains("From: team@northwind.example\r\n"));
        let modify = w
            .seen
            .iter()
            .find(|s| s.path.ends_with("/modify"))
            .context("not labelled")?;
        assert_eq!(modify.body["addLabelIds"][0], label_id("support"));
    }

    // Slack: the post goes to #general's id, its markup escaped (no
    // @channel from guest text).
    services.world().take_lines();
    let posted = run("post hello <!channel> & <https://evil.example|click>")?;
    assert!(posted.starts_with("posted: done"), "{posted}");
    let post = services
        .world()
        .to("/api/chat.postMessage")
        .pop()
        .context("no post")?;
    let list = "GET /api/conversations.list?";
    let rest = "exclude_archived=true&limit=200&types=public_channel,private_channel";
    assert_eq!(
        services.world().take_lines(),
        [
            format!("{list}{rest}"),
            format!("{list}cursor=dXNlcjo2&{rest}"),
            "POST /api/chat.postMessage".to_string(),
        ]
    );
    {
        assert_eq!(post.body["channel"], channel_id("#general"));
        assert_eq!(
            post.body["text"],
            "hello &lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"
        );
    }
    // Slack answers that it posted elsewhere: the connector says so.
    services
        .world()
        .fault("/api/chat.postMessage", Fault::Stray);
    let posted = run("post hello again")?;
    assert!(
        posted.contains("instead of the granted channel"),
        "{posted}"
    );
    // No handle for another channel exists to post through.
    let other = run("post-to #accounting hi")?;
    assert!(other.starts_with("no handle for #accounting"), "{other}");
    assert!(
        services
            .world()
            .to("/api/chat.postMessage")
            .iter()
            .all(|s| s.body["channel"] == channel_id("#general"))
    );
    all_authorised(&services)?;
    drop(env);
    Ok(())
}

#[test]
fn a_denied_or_queued_write_makes_no_request_and_a_write_that_is_not_safe_to_repeat_is_sent_once()
-> Result<()> {
    let services = Services::start()?;
    let gated = format!(
        "{}{}",
        crate::env::GATED_GENERAL_POST,
        clancy_guests::HOSTILE_IMPORT_GRANTS
    );
    let (env, employees) =
        connected_env(&services, vec![hostile(&gated)?], &["google-mail", "slack"])?;
    let posted = completed(&employees[0].run("post for the team")?)?.to_string();
    let id = crate::env::queued_id(&posted, "posted")?;
    assert!(
        services.world().to("/api/chat.postMessage").is_empty(),
        "queued, not sent"
    );
    env.host
        .decide(&id, Verdict::Deny, "alice", Some("not today"))?;
    assert!(
        services.world().to("/api/chat.postMessage").is_empty(),
        "denied, never sent"
    );

    // Approved, Slack fails with 503: the post is not retried (Slack would
    // post it twice), and the approver hears that it failed.
    let posted = completed(&employees[0].run("post once")?)?.to_string();
    let id = crate::env::queued_id(&posted, "posted")?;
    services
        .world()
        .fault("/api/chat.postMessage", Fault::Status(503, Some(1)));
    let decided = env.host.decide(&id, Verdict::Approve, "alice", None)?;
    assert_eq!(services.world().to("/api/chat.postMessage").len(), 1);
    let outcome = decided.outcome.unwrap_or_default();
    assert!(outcome.contains("not retried"), "{outcome}");
    Ok(())
}

#[test]
fn a_misbehaving_service_gets_a_clear_failure_and_nothing_half_written() -> Result<()> {
    let services = Services::start()?;
    let (env, employees) = connected_env(
        &services,
        vec![hostile(&scoped())?],
        &["google-mail", "slack"],
    )?;
    // A 1 s timeout for these (the stand-ins answer at once otherwise).
    configure(&env.data_dir(), &services, "1s")?;
    let run =
        |task: &str| -> Result<String> { Ok(completed(&employees[0].run(task)?)?.to_string()) };
    let labels = "/gmail/v1/users/me/labels";
    let cases: Vec<(Vec<Fault>, &str)> = vec![
        (vec![Fault::Huge], "larger than 4 MiB"),
        (vec![Fault::Garbage], "not JSON"),
        (
            vec![Fault::Redirect],
            "redirected the call (to 10.9.8.7); redirects are not followed",
        ),
        (vec![Fault::Slow(Duration::from_secs(3)); 3], "timed out"),
        (
            vec![Fault::Status(429, Some(120))],
            "asked to wait too long",
        ),
        (
            vec![
                Fault::Status(502, None),
                Fault::Status(502, None),
                Fault::Status(502, None),
            ],
            "gave up after retries",
        ),
    ];
    for (faults, expected) in cases {
        for f in faults {
            services.world().fault(labels, f);
        }
        let listed = run("list-mail")?;
        assert!(
            listed.starts_with("refused: failed:") && listed.contains(expected),
            "{expected}: {listed}"
        );
    }
    // A send that fails (Gmail 500) is sent once, stores nothing, and the
    // failure is audited with the service's words.
    services
        .world()
        .fault("/gmail/v1/users/me/messages/send", Fault::Status(500, None));
    let sent = run("send-to ops@northwind.example")?;
    assert!(sent.contains("not retried"), "{sent}");
    assert_eq!(
        services
            .world()
            .to("/gmail/v1/users/me/messages/send")
            .len(),
        1
    );
    assert!(services.world().sent.is_empty());
    let audit = serde_json::to_string(&env.audit()?)?;
    assert!(audit.contains("not retried"));
    // The redirect's target was never contacted, and every failure is in
    // the log as the guest saw it.
    assert!(audit.contains("redirects are not followed"));
    Ok(())
}

#[test]
fn an_expired_or_revoked_connection_is_expired_to_the_guest_and_operators_are_told() -> Result<()> {
    let services = Services::start()?;
    let grants = format!(
        "{}\n[[notify]]\nurl = \"http://127.0.0.1:9/hook\"\nallow_private_address = true\n",
        scoped()
    );
    let (env, employees) = connected_env(
        &services,
        vec![hostile(&grants)?],
        &["google-mail", "slack"],
    )?;
    let run =
        |task: &str| -> Result<String> { Ok(completed(&employees[0].run(task)?)?.to_string()) };
    assert!(run("list-mail")?.contains("m-1001"));

    // The provider revokes every token and refuses refreshes: one forced
    // refresh is tried, then the connection needs an admin, the guest gets
    // `expired`, and the employee's notification target hears of it.
    {
        let mut w = services.world();
        w.revoke_all();
        w.refuse_refresh = true;
    }
    let listed = run("list-mail")?;
    assert!(listed.contains("the connection expired"), "{listed}");
    let gmail = env
        .host
        .connections()?
        .into_iter()
        .find(|c| c.provider == "google-mail")
        .context("no gmail connection")?;
    assert_eq!(
        gmail.status,
        clancy::org::ConnectionStatus::NeedsReauthorisation
    );
    let notices: Vec<_> = env
        .host
        .outbox()
        .list()?
        .into_iter()
        .filter(|n| n.event == clancy::notify::Event::Connection)
        .collect();
    assert_eq!(notices.len(), 1);
    assert!(notices[0].body.contains(&gmail.id) && notices[0].body.contains("re-authorisation"));
    let tokens = services.world().issued.clone();
    assert!(tokens.iter().all(|t| !notices[0].body.contains(t.as_str())));
    // From now on: expired without a request.
    let before = services.world().seen.len();
    assert!(run("list-mail")?.contains("the connection expired"));
    assert_eq!(services.world().seen.len(), before);
    // The admin connects Gmail again: the new connection takes the lapsed
    // one's place, and the same employee reads mail again.
    services.world().refuse_refresh = false;
    let (_, state) = env.host.begin_connection("google-mail", "ada")?;
    let again = env.host.finish_connection(&state, &Secret::new("code-2"))?;
    assert_eq!(
        env.host
            .bindings()?
            .get(&clancy::integrations::Integration::Gmail),
        Some(&again.id)
    );
    assert!(run("list-mail")?.contains("m-1001"));
    services.world().refuse_refresh = true;

    // Slack still works; revoked by an admin, its next call is expired
    // with no request to Slack.
    let slack = env
        .host
        .connections()?
        .into_iter()
        .find(|c| c.provider == "slack")
        .context("no slack connection")?;
    services.world().valid.extend(tokens);
    assert!(run("post still here")?.starts_with("posted: done"));
    // Slack says `invalid_auth` (HTTP 200, `ok: false`): expired too.
    services.world().revoke_all();
    assert!(run("post when the token is dead")?.contains("the connection expired"));
    let dead = env
        .host
        .connection(&slack.id)?
        .context("no slack connection")?;
    assert_eq!(
        dead.status,
        clancy::org::ConnectionStatus::NeedsReauthorisation
    );
    env.host.revoke_connection(&slack.id, "ada")?;
    let before = services.world().seen.len();
    assert!(run("post after the revocation")?.contains("the connection expired"));
    assert_eq!(services.world().seen.len(), before);

    // Back to the sandbox for Slack: the same employee posts there again.
    env.host
        .use_sandbox(clancy::integrations::Integration::Slack, "ada")?;
    assert!(run("post to the sandbox")?.starts_with("posted: done"));
    assert!(
        env.channel("#general")?
            .iter()
            .any(|m| m == "to the sandbox")
    );
    Ok(())
}

#[test]
fn a_connection_of_another_organisation_cannot_be_chosen_or_used() -> Result<()> {
    let services = Services::start()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let orgs = Org::open_all(
        &data,
        &["default", "other"],
        clancy::org::DataDirMode::Create,
    )?;
    configure(&data, &services, "2s")?;
    for org in &orgs {
        TestEnv::prepare(org)?;
        org.operators().put(&Operator {
            name: "ada".into(),
            role: Role::Admin,
        })?;
        org.load(hostile(&scoped())?)?;
    }
    let id = connect(&orgs[0], "slack")?;
    // The other organisation knows no such connection: it can neither
    // choose it nor get its token.
    let chosen = orgs[1].use_connection(&id, "ada");
    assert!(
        matches!(chosen, Err(clancy::org::ConnectionError::Unknown(_))),
        "{chosen:?}"
    );
    assert!(orgs[1].connection_token(&id).is_err());
    assert!(orgs[1].bindings()?.is_empty());
    // Its employees still post to its own sandbox, not through the first
    // organisation's Slack.
    let before = services.world().seen.len();
    let employee = orgs[1].load(hostile(&scoped())?)?;
    let posted = completed(&employee.run("post in the other org")?)?.to_string();
    assert!(posted.starts_with("posted: done"), "{posted}");
    assert_eq!(services.world().seen.len(), before);
    Ok(())
}

/// `m` with its grant of `integration` moved to `scope`.
fn rescoped(
    mut m: clancy::manifest::Manifest,
    integration: clancy::integrations::Integration,
    scope: &str,
) -> clancy::manifest::Manifest {
    for g in m.grants.iter_mut().filter(|g| g.integration == integration) {
        g.scope = scope.to_string();
    }
    m
}

#[test]
fn hubspot_and_quickbooks_are_reached_only_for_the_configured_portal_and_company() -> Result<()> {
    use clancy::integrations::Integration;
    let services = Services::start()?;
    let support = TestEnv::plugin_manifest("customer-service", CUSTOMER_SERVICE)?;
    let manifests = vec![
        rescoped(support.clone(), Integration::Hubspot, "portal:other"),
        rescoped(
            TestEnv::plugin_manifest("accounting-assistant", ACCOUNTING_ASSISTANT)?,
            Integration::Quickbooks,
            "company:elsewhere",
        ),
    ];
    let (env, employees) = connected_env(
        &services,
        manifests,
        &["google-mail", "slack", "hubspot", "quickbooks"],
    )?;

    // A portal the connection is not configured for: refused on the host,
    // HubSpot never asked.
    let result = employees[0].run("Triage today's support mail")?;
    assert!(
        completed(&result)?.starts_with("filed 3 tickets"),
        "{:?}",
        result.end
    );
    {
        let w = services.world();
        let tickets: Vec<&str> = w.slack[&channel_id("#support")][1..]
            .iter()
            .map(|(_, _, t)| t.as_str())
            .collect();
        assert!(
            tickets
                .iter()
                .all(|t| t.contains("is not the connected HubSpot portal")),
            "{tickets:?}"
        );
        assert!(w.to("/crm").is_empty() && w.to("/account-info").is_empty());
    }
    // A company the connection is not configured for: the expense report
    // fails on the host, QuickBooks never asked.
    let result = employees[1].run("Prepare this month's expenses")?;
    match &result.end {
        clancy::runtime::TaskEnd::Failed { error } => {
            assert!(
                error.contains("is not a connected QuickBooks company"),
                "{error}"
            )
        }
        other => anyhow::bail!("the task did not fail: {other:?}"),
    }
    assert!(services.world().to("/v3/company").is_empty());

    // The configured portal, but the token is for another: the account
    // check refuses before any CRM request.
    let config = std::fs::read_to_string(env.data_dir().join("oauth.toml"))?;
    std::fs::write(
        env.data_dir().join("oauth.toml"),
        config.replace(&format!("main = \"{PORTAL_ID}\""), "main = \"9999\""),
    )?;
    let employee = env.host.load(support)?;
    let result = employee.run("Triage today's support mail")?;
    assert!(
        completed(&result)?.starts_with("filed 3 tickets"),
        "{:?}",
        result.end
    );
    let w = services.world();
    let last = &w.slack[&channel_id("#support")]
        .last()
        .context("no ticket")?
        .2;
    assert!(
        last.contains("token is for HubSpot portal") && last.contains("9999"),
        "{last}"
    );
    assert!(!w.to("/account-info").is_empty());
    assert!(w.to("/crm").is_empty());
    Ok(())
}
