//! The employee manifest (`employee.toml`): which component to run, what it
//! is granted, and its limits.
//!
//! This module owns parsing and validation. It is strict: unknown keys,
//! unknown integrations or actions, malformed or duplicate scopes are errors
//! that name the file and line. It must never guess what an operator meant;
//! a grant that is not written down does not exist.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use toml::Spanned;

use crate::operators::Approver;

/// Upper bound for `limits.memory_mb` (the engine's pooling allocator reserves this much per slot).
pub const MAX_MEMORY_MB: u32 = 512;
/// Upper bound for `limits.time_ms`.
pub const MAX_TIME_MS: u64 = 10 * 60 * 1000;

/// A manifest error, already rendered as `file:line: what is wrong`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(String);

pub use crate::integrations::{Action, Integration, Interface};

/// Default hours before an unanswered approval request expires.
pub const DEFAULT_APPROVAL_HOURS: u32 = 72;

/// When a grant's writes wait for a human. Conditions are OR-ed: a write is
/// gated if any of them holds. Evaluated by the mediator, never the guest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApprovalPolicy {
    /// Gate every covered write.
    pub always: bool,
    /// Gate writes whose amount (an expense report's total) exceeds this, in cents.
    pub over_amount_cents: Option<i64>,
    /// Gate mail and invitations to anyone outside this domain.
    pub outside_domain: Option<String>,
    /// Gate the first N writes of this grant.
    pub first: Option<u32>,
    /// Which write actions the policy covers; empty means all of them.
    pub actions: BTreeSet<Action>,
    /// Hours before an unanswered request expires (expiry means deny).
    /// With an escalation ladder, the sum of its steps.
    pub expires_after_hours: u32,
    /// Who decides, step by step: each step's approver has its hours, then
    /// the request escalates to the next; after the last, it is denied.
    /// Empty means any operator may decide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalation: Vec<EscalationStep>,
}

/// One step of an escalation ladder.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EscalationStep {
    /// Who may decide during this step (admins always may).
    pub approver: Approver,
    /// How long this step lasts.
    pub hours: u32,
}

fn parse_ladder(value: &toml::Value) -> Result<Vec<EscalationStep>, String> {
    const SHAPE: &str = "approval.escalation must be a list of { approver = \"role:manager\" | \"NAME\", hours = 1-720 }";
    let list = value.as_array().ok_or(SHAPE)?;
    if list.is_empty() {
        return Err(SHAPE.into());
    }
    list.iter()
        .map(|step| {
            let table = step.as_table().ok_or(SHAPE)?;
            if let Some(k) = table.keys().find(|k| *k != "approver" && *k != "hours") {
                return Err(format!(
                    "unknown escalation key {k:?} (expected: approver, hours)"
                ));
            }
            let approver = table
                .get("approver")
                .and_then(toml::Value::as_str)
                .ok_or(SHAPE)?
                .parse()
                .map_err(|e: crate::operators::OperatorError| e.to_string())?;
            let hours = table
                .get("hours")
                .and_then(toml::Value::as_integer)
                .filter(|h| (1..=720).contains(h))
                .ok_or(SHAPE)?;
            Ok(EscalationStep {
                approver,
                hours: hours as u32,
            })
        })
        .collect()
}

impl ApprovalPolicy {
    /// No approvals: writes run as soon as the grant allows them.
    pub fn none() -> ApprovalPolicy {
        ApprovalPolicy {
            always: false,
            over_amount_cents: None,
            outside_domain: None,
            first: None,
            actions: BTreeSet::new(),
            expires_after_hours: DEFAULT_APPROVAL_HOURS,
            escalation: Vec::new(),
        }
    }

    /// Every covered write waits for a human.
    pub fn required() -> ApprovalPolicy {
        ApprovalPolicy {
            always: true,
            ..ApprovalPolicy::none()
        }
    }

    /// Whether the policy can gate anything.
    pub fn is_none(&self) -> bool {
        !self.always
            && self.over_amount_cents.is_none()
            && self.outside_domain.is_none()
            && self.first.is_none()
    }

    /// Whether the policy can send a mail to recipients outside the
    /// grant's domains to a human instead of refusing it: it gates every
    /// covered write, or it gates recipients outside a domain.
    pub fn gates_recipients(&self) -> bool {
        self.always || self.outside_domain.is_some()
    }

    /// Whether `action` is covered.
    pub fn covers(&self, action: Action) -> bool {
        self.actions.is_empty() || self.actions.contains(&action)
    }

    fn parse(value: &toml::Value, integration: Integration) -> Result<ApprovalPolicy, String> {
        let table = match value {
            toml::Value::String(s) if s == "none" => return Ok(ApprovalPolicy::none()),
            toml::Value::String(s) if s == "required" => return Ok(ApprovalPolicy::required()),
            toml::Value::String(other) => {
                return Err(format!(
                    "unknown approval policy {other:?} (expected \"none\", \"required\" or a table such as {{ over_amount = 250.0 }})"
                ));
            }
            toml::Value::Table(t) => t,
            _ => return Err("approval must be \"none\", \"required\" or a table".into()),
        };
        let mut policy = ApprovalPolicy::none();
        for (key, v) in table {
            match (key.as_str(), v) {
                ("required", toml::Value::Boolean(b)) => policy.always = *b,
                ("over_amount", toml::Value::Float(f)) if *f >= 0.0 && f.is_finite() => {
                    policy.over_amount_cents = Some((f * 100.0).round() as i64)
                }
                ("over_amount", toml::Value::Integer(i)) if *i >= 0 => {
                    policy.over_amount_cents = Some(i * 100)
                }
                ("outside_domain", toml::Value::String(d))
                    if d.contains('.') && !d.contains('@') =>
                {
                    policy.outside_domain = Some(d.to_lowercase())
                }
                ("first", toml::Value::Integer(n)) if *n >= 1 && *n <= 1_000_000 => {
                    policy.first = Some(*n as u32)
                }
                ("expires_after_hours", toml::Value::Integer(h)) if (1..=720).contains(h) => {
                    policy.expires_after_hours = *h as u32
                }
                ("escalation", ladder) => policy.escalation = parse_ladder(ladder)?,
                ("actions", toml::Value::Array(list)) => {
                    for a in list {
                        let name = a.as_str().ok_or("approval actions must be strings")?;
                        let writes = integration.write_actions();
                        match Action::parse(name).filter(|a| writes.contains(a)) {
                            Some(action) => policy.actions.insert(action),
                            None => {
                                return Err(format!(
                                    "approval cannot cover {name:?} for {integration} (its writes are: {})",
                                    crate::integrations::action_list(&writes)
                                ));
                            }
                        };
                    }
                }
                (
                    "required"
                    | "over_amount"
                    | "outside_domain"
                    | "first"
                    | "expires_after_hours"
                    | "actions",
                    _,
                ) => {
                    return Err(format!(
                        "invalid value for approval.{key} (required: true/false; over_amount: a non-negative amount; \
                         outside_domain: a domain like \"example.com\"; first: 1 or more; expires_after_hours: 1-720; \
                         actions: a list of write actions)"
                    ));
                }
                (other, _) => {
                    return Err(format!(
                        "unknown approval key {other:?} (expected: required, over_amount, outside_domain, first, actions, expires_after_hours, escalation)"
                    ));
                }
            }
        }
        if !policy.escalation.is_empty() {
            if table.contains_key("expires_after_hours") {
                return Err(
                    "give either approval.escalation or approval.expires_after_hours: \
                            with a ladder, a request is denied when its last step runs out"
                        .into(),
                );
            }
            policy.expires_after_hours = policy.escalation.iter().map(|s| s.hours).sum();
        }
        if policy.is_none() && table.get("required").is_none() {
            return Err("an approval table needs a condition: required, over_amount, outside_domain or first".into());
        }
        Ok(policy)
    }
}

impl fmt::Display for ApprovalPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return f.write_str("none");
        }
        let mut when = Vec::new();
        if self.always {
            when.push("always".to_string());
        }
        if let Some(c) = self.over_amount_cents {
            when.push(format!("amount over {}.{:02}", c / 100, c % 100));
        }
        if let Some(d) = &self.outside_domain {
            when.push(format!("recipients outside {d}"));
        }
        if let Some(n) = self.first {
            when.push(format!("the first {n} writes"));
        }
        write!(f, "required when {}", when.join(" or "))?;
        if !self.actions.is_empty() {
            write!(
                f,
                " (for {})",
                crate::integrations::action_list(&self.actions)
            )?;
        }
        if !self.escalation.is_empty() {
            let steps: Vec<String> = self
                .escalation
                .iter()
                .map(|s| format!("{} for {} h", s.approver, s.hours))
                .collect();
            write!(f, "; decided by {}, then denied", steps.join(", then "))?;
        }
        Ok(())
    }
}

/// One thing an employee may reach: an integration, one scope in it, and the
/// actions it may take there.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    /// The service.
    pub integration: Integration,
    /// The full scope as written, e.g. `label:INBOX`.
    pub scope: String,
    /// Allowed actions (each one of [`Integration::actions`]).
    pub actions: BTreeSet<Action>,
    /// Approval policy for this grant's writes.
    pub approval: ApprovalPolicy,
    /// Optional per-grant rate limit, in addition to the employee's.
    pub calls_per_minute: Option<u32>,
    /// Daily budgets of this grant's writes.
    #[serde(default)]
    pub budget: crate::limits::Budget,
    /// Mail grants: the recipient domains `send` may reach. Empty means the
    /// organisation's own domain only (the domain of its mailbox).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Files grants: the folder's size quota in MiB (default
    /// [`DEFAULT_FOLDER_MB`]); a write that would take it past is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mb: Option<u32>,
}

/// The size quota of a granted folder unless its grant sets `max_mb`.
pub const DEFAULT_FOLDER_MB: u32 = 64;
/// The largest `max_mb` a files grant may set.
pub const MAX_FOLDER_MB: u32 = 10 * 1024;

impl Grant {
    /// The folder quota of a files grant, in bytes.
    pub fn folder_quota_bytes(&self) -> u64 {
        u64::from(self.max_mb.unwrap_or(DEFAULT_FOLDER_MB)) * 1024 * 1024
    }

    /// The part of the scope after `kind:`.
    pub fn scope_value(&self) -> &str {
        self.scope.split_once(':').map(|(_, v)| v).unwrap_or("")
    }

    /// Whether this grant allows `action`.
    pub fn allows(&self, action: Action) -> bool {
        self.actions.contains(&action)
    }
}

/// Resource limits for each task.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Linear memory cap per task, in MiB.
    pub memory_mb: u32,
    /// Wall-clock cap per task, in milliseconds.
    pub time_ms: u64,
    /// Calls to integrations per minute, across the employee.
    pub calls_per_minute: u32,
    /// Calls to the host (integrations and notes) per task.
    pub max_calls: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 64,
            time_ms: 5000,
            calls_per_minute: 120,
            max_calls: 1000,
        }
    }
}

/// A validated manifest.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// The employee's name (lowercase letters, digits, `-`).
    pub name: String,
    /// The component, resolved against the manifest's directory.
    pub component: PathBuf,
    /// The SHA-256 of the component as registered: the host keeps that
    /// copy in its data dir and runs only it on the employee's behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_sha256: Option<String>,
    /// What the employee may reach.
    pub grants: Vec<Grant>,
    /// Per-task limits.
    pub limits: Limits,
    /// Where notifications about its approval requests go.
    #[serde(default)]
    pub notify: Vec<crate::notify::Target>,
    /// Tasks the daemon runs on a timer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<Schedule>,
    /// Tasks the daemon runs when something new arrives in a granted scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
}

/// Where a trigger watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerSource {
    /// New mail under a granted label.
    Mail,
    /// A new message in a granted channel.
    Chat,
}

/// A task the daemon starts when new mail or a new message arrives in a
/// scope the employee may read (its own mail and posts never trigger it).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trigger {
    /// What it watches.
    pub on: TriggerSource,
    /// The granted scope, e.g. `label:support` or `channel:#support`.
    pub scope: String,
    /// The task's instruction.
    pub task: String,
}

impl Trigger {
    /// A stable name for this trigger (its terms' digest).
    pub fn id(&self) -> String {
        hex::encode(&crate::digest::digest(self)[..8])
    }
}

/// A task the daemon starts every `every_secs` seconds, or at the times a
/// cron expression names (in UTC).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    /// Seconds between two runs (`every = "15m"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_secs: Option<u64>,
    /// A cron expression (`cron = "0 9 * * MON-FRI"`), in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The task's instruction.
    pub task: String,
}

/// The shortest and longest `every` of a schedule.
pub const SCHEDULE_EVERY: std::ops::RangeInclusive<u64> = 1..=30 * 24 * 3600;

impl Schedule {
    /// A stable name for this schedule (its terms' digest): a changed
    /// schedule starts its own timer.
    pub fn id(&self) -> String {
        hex::encode(&crate::digest::digest(self)[..8])
    }

    /// When it runs next after `now` (`None`: a cron expression that never
    /// matches again).
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match (&self.cron, self.every_secs) {
            (Some(cron), _) => parse_cron(cron)
                .ok()?
                .find_next_occurrence(&now, false)
                .ok(),
            (None, Some(secs)) => i64::try_from(secs)
                .ok()
                .and_then(chrono::Duration::try_seconds)
                .map(|d| now + d),
            (None, None) => None,
        }
    }

    /// How it reads in a diff or a list.
    pub fn when(&self) -> String {
        match (&self.cron, self.every_secs) {
            (Some(cron), _) => format!("cron {cron:?} (UTC)"),
            (None, Some(secs)) => format!("every {secs}s"),
            (None, None) => "never".into(),
        }
    }
}

/// A standard five-field cron expression (minute hour day-of-month month
/// day-of-week), or six with seconds first.
fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    use std::str::FromStr as _;
    let fields = text.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "{text:?} has {fields} fields; a cron expression has 5 (minute hour day month weekday) or 6 (seconds first)"
        ));
    }
    croner::Cron::from_str(text).map_err(|e| format!("{text:?} is not a cron expression: {e}"))
}

impl Manifest {
    /// Grants that reach `interface`.
    pub fn grants_for(&self, interface: Interface) -> impl Iterator<Item = (usize, &Grant)> {
        self.grants
            .iter()
            .enumerate()
            .filter(move |(_, g)| g.integration.interface() == interface)
    }

    /// Whether any grant reaches `interface`.
    pub fn grants_interface(&self, interface: Interface) -> bool {
        self.grants_for(interface).next().is_some()
    }

    /// Read and validate a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read(path)
            .map_err(|e| ManifestError(format!("{}: cannot read manifest: {e}", path.display())))?;
        let text = String::from_utf8(text).map_err(|_| {
            ManifestError(format!("{}: manifest is not UTF-8 text", path.display()))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Manifest::parse(&text, &path.display().to_string(), base)
    }

    /// Parse manifest text; `file` names it in errors and `base` resolves the component path.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Manifest, ManifestError> {
        let at = |span: Range<usize>, msg: String| {
            ManifestError(format!("{file}:{}: {msg}", line_of(text, span.start)))
        };
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            ManifestError(format!("{file}:{line}: {}", e.message().trim_end()))
        })?;

        let name = raw.name.as_ref();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(at(
                raw.name.span(),
                format!("invalid name {name:?} (expected 1-64 lowercase letters, digits or '-')"),
            ));
        }
        if raw.component.as_ref().trim().is_empty() {
            return Err(at(raw.component.span(), "component path is empty".into()));
        }
        let component = base.join(raw.component.as_ref());

        let mut grants: Vec<Grant> = Vec::new();
        for g in raw.grant {
            let integration = Integration::parse(g.integration.as_ref()).ok_or_else(|| {
                at(
                    g.integration.span(),
                    format!(
                        "unknown integration {:?} (expected one of: {})",
                        g.integration.as_ref(),
                        Integration::ALL.map(|i| i.name()).join(", ")
                    ),
                )
            })?;
            let scope = g.scope.as_ref().trim().to_string();
            let kind = integration.scope_kind();
            let value = match scope.split_once(':') {
                Some((k, v)) if k == kind => v,
                _ => {
                    return Err(at(
                        g.scope.span(),
                        format!("scope {scope:?} for {integration} must look like \"{kind}:NAME\""),
                    ));
                }
            };
            if let Err(why) = validate_scope_value(integration, value) {
                return Err(at(
                    g.scope.span(),
                    format!("scope {scope:?} for {integration}: {why}"),
                ));
            }
            if grants
                .iter()
                .any(|other| other.integration == integration && other.scope == scope)
            {
                return Err(at(
                    g.scope.span(),
                    format!(
                        "duplicate grant for {integration} {scope:?}; merge the actions into one grant"
                    ),
                ));
            }
            if g.actions.as_ref().is_empty() {
                return Err(at(
                    g.actions.span(),
                    format!("grant for {integration} {scope:?} lists no actions"),
                ));
            }
            let mut actions = BTreeSet::new();
            for action in g.actions.as_ref() {
                match Action::parse(action.as_ref()).filter(|a| integration.offers(*a)) {
                    Some(a) => actions.insert(a),
                    None => {
                        return Err(at(
                            action.span(),
                            format!(
                                "unknown action {:?} for {integration} (expected one of: {})",
                                action.as_ref(),
                                crate::integrations::action_list(integration.actions())
                            ),
                        ));
                    }
                };
            }
            let approval = match &g.approval {
                None => ApprovalPolicy::none(),
                Some(a) => ApprovalPolicy::parse(a.as_ref(), integration)
                    .map_err(|why| at(a.span(), why))?,
            };
            let calls_per_minute = match g.calls_per_minute {
                Some(n) if *n.as_ref() == 0 => {
                    return Err(at(n.span(), "calls_per_minute must be at least 1".into()));
                }
                other => other.map(|n| n.into_inner()),
            };
            let mut budget = crate::limits::Budget::default();
            if let Some(n) = &g.max_writes_per_day {
                match n.as_ref() {
                    toml::Value::Integer(i) if (1..=1_000_000).contains(i) => {
                        budget.max_writes_per_day = Some(*i as u32)
                    }
                    _ => {
                        return Err(at(
                            n.span(),
                            "max_writes_per_day must be a whole number from 1 to 1000000".into(),
                        ));
                    }
                }
            }
            if let Some(a) = &g.max_amount_per_day {
                if integration != Integration::Quickbooks {
                    return Err(at(
                        a.span(),
                        format!(
                            "max_amount_per_day only applies to quickbooks grants, not {integration}"
                        ),
                    ));
                }
                budget.max_amount_per_day_cents =
                    Some(positive_amount_cents(a.as_ref()).ok_or_else(|| {
                        at(
                            a.span(),
                            "max_amount_per_day must be an amount above zero, e.g. 500 or 499.99"
                                .into(),
                        )
                    })?);
            }
            let mut to = Vec::new();
            if let Some(list) = &g.to {
                if integration != Integration::Gmail {
                    return Err(at(
                        list.span(),
                        format!("to only applies to gmail grants, not {integration}"),
                    ));
                }
                if list.as_ref().is_empty() {
                    return Err(at(
                        list.span(),
                        "to lists no domain (leave it out to allow only the organisation's own domain)"
                            .into(),
                    ));
                }
                for domain in list.as_ref() {
                    let d = domain.as_ref().trim().to_ascii_lowercase();
                    if !crate::addresses::valid_domain(&d) {
                        return Err(at(
                            domain.span(),
                            format!(
                                "to: {:?} is not a domain (expected a name like \"northwind.example\", without '@')",
                                domain.as_ref()
                            ),
                        ));
                    }
                    if !to.contains(&d) {
                        to.push(d);
                    }
                }
            }
            let max_mb = match &g.max_mb {
                None => None,
                Some(_) if integration != Integration::Files => {
                    return Err(at(
                        g.max_mb.as_ref().map_or(0..0, |m| m.span()),
                        format!("max_mb only applies to files grants, not {integration}"),
                    ));
                }
                Some(m) => match m.as_ref() {
                    toml::Value::Integer(i) if (1..=i64::from(MAX_FOLDER_MB)).contains(i) => {
                        Some(*i as u32)
                    }
                    _ => {
                        return Err(at(
                            m.span(),
                            format!(
                                "max_mb must be a whole number of MiB from 1 to {MAX_FOLDER_MB}"
                            ),
                        ));
                    }
                },
            };
            grants.push(Grant {
                integration,
                scope,
                actions,
                approval,
                calls_per_minute,
                budget,
                to,
                max_mb,
            });
        }

        let mut limits = Limits::default();
        if let Some(raw_limits) = raw.limits {
            if let Some(m) = raw_limits.memory_mb {
                if *m.as_ref() == 0 || *m.as_ref() > MAX_MEMORY_MB {
                    return Err(at(
                        m.span(),
                        format!("memory_mb must be between 1 and {MAX_MEMORY_MB}"),
                    ));
                }
                limits.memory_mb = m.into_inner();
            }
            if let Some(t) = raw_limits.time_ms {
                if *t.as_ref() == 0 || *t.as_ref() > MAX_TIME_MS {
                    return Err(at(
                        t.span(),
                        format!("time_ms must be between 1 and {MAX_TIME_MS}"),
                    ));
                }
                limits.time_ms = t.into_inner();
            }
            if let Some(c) = raw_limits.calls_per_minute {
                if *c.as_ref() == 0 {
                    return Err(at(c.span(), "calls_per_minute must be at least 1".into()));
                }
                limits.calls_per_minute = c.into_inner();
            }
            if let Some(c) = raw_limits.max_calls {
                if *c.as_ref() == 0 {
                    return Err(at(c.span(), "max_calls must be at least 1".into()));
                }
                limits.max_calls = c.into_inner();
            }
        }

        let mut notify = Vec::new();
        for n in raw.notify {
            use crate::notify::{Event, Format, Target, validate_url};
            let allow_private = n.allow_private_address.unwrap_or(false);
            validate_url(n.url.as_ref(), allow_private).map_err(|why| at(n.url.span(), why))?;
            let format = match n.format.as_ref().map(|f| (f.as_ref().as_str(), f.span())) {
                None | Some(("json", _)) => Format::Json,
                Some(("slack", _)) => Format::Slack,
                Some((other, span)) => {
                    return Err(at(
                        span,
                        format!("unknown notify format {other:?} (expected \"json\" or \"slack\")"),
                    ));
                }
            };
            let mut events = BTreeSet::new();
            for e in n.events.iter().flatten() {
                let event = Event::parse(e.as_ref()).ok_or_else(|| {
                    at(
                        e.span(),
                        format!(
                            "unknown notify event {:?} (expected one of: {})",
                            e.as_ref(),
                            Event::ALL.map(Event::name).join(", ")
                        ),
                    )
                })?;
                events.insert(event);
            }
            notify.push(Target {
                url: n.url.into_inner(),
                format,
                events,
                include_content: n.include_content.unwrap_or(false),
                allow_private_address: allow_private,
            });
        }

        let mut schedules = Vec::new();
        for s in raw.schedule {
            let (every, cron) = match (&s.every, &s.cron) {
                (Some(every), None) => {
                    let secs = humantime::parse_duration(every.as_ref().trim())
                        .ok()
                        .map(|d| d.as_secs())
                        .filter(|secs| SCHEDULE_EVERY.contains(secs))
                        .ok_or_else(|| {
                            at(
                                every.span(),
                                format!(
                                    "every = {:?} is not a period from 1s to 30d (e.g. \"15m\", \"1h 30m\", \"1d\")",
                                    every.as_ref()
                                ),
                            )
                        })?;
                    (Some(secs), None)
                }
                (None, Some(cron)) => {
                    let text = cron.as_ref().trim();
                    let parsed = parse_cron(text).map_err(|e| at(cron.span(), e))?;
                    if parsed
                        .find_next_occurrence(&chrono::Utc::now(), false)
                        .is_err()
                    {
                        return Err(at(cron.span(), format!("cron = {text:?} never runs")));
                    }
                    (None, Some(text.to_string()))
                }
                _ => {
                    return Err(at(
                        s.task.span(),
                        "a schedule needs exactly one of every = \"15m\" or cron = \"0 9 * * MON-FRI\"".to_string(),
                    ));
                }
            };
            let task = s.task.as_ref().trim();
            if task.is_empty() || task.len() > crate::runtime::MAX_INSTRUCTION_BYTES {
                return Err(at(
                    s.task.span(),
                    format!(
                        "a schedule's task needs text, at most {} bytes",
                        crate::runtime::MAX_INSTRUCTION_BYTES
                    ),
                ));
            }
            schedules.push(Schedule {
                every_secs: every,
                cron,
                task: task.to_string(),
            });
        }
        let mut triggers = Vec::new();
        for t in raw.trigger {
            let on = match t.on.as_ref().as_str() {
                "mail" => TriggerSource::Mail,
                "chat" => TriggerSource::Chat,
                other => {
                    return Err(at(
                        t.on.span(),
                        format!("on = {other:?}: a trigger watches \"mail\" or \"chat\""),
                    ));
                }
            };
            let scope = t.scope.as_ref().trim();
            let readable = grants.iter().any(|g| {
                g.scope == scope
                    && g.allows(crate::integrations::Action::Read)
                    && matches!(
                        (on, g.integration),
                        (TriggerSource::Mail, crate::integrations::Integration::Gmail)
                            | (TriggerSource::Chat, crate::integrations::Integration::Slack)
                    )
            });
            if !readable {
                return Err(at(
                    t.scope.span(),
                    format!(
                        "scope = {scope:?}: a {} trigger watches a scope this employee has a {} grant with \"read\" for",
                        t.on.as_ref(),
                        if on == TriggerSource::Mail {
                            "gmail"
                        } else {
                            "slack"
                        }
                    ),
                ));
            }
            let task = t.task.as_ref().trim();
            if task.is_empty() || task.len() > crate::runtime::MAX_INSTRUCTION_BYTES {
                return Err(at(
                    t.task.span(),
                    format!(
                        "a trigger's task needs text, at most {} bytes",
                        crate::runtime::MAX_INSTRUCTION_BYTES
                    ),
                ));
            }
            triggers.push(Trigger {
                on,
                scope: scope.to_string(),
                task: task.to_string(),
            });
        }
        Ok(Manifest {
            name: name.clone(),
            component,
            component_sha256: None,
            grants,
            limits,
            notify,
            schedules,
            triggers,
        })
    }
}

/// Check the value part of a scope (after `kind:`) for `integration`.
pub fn validate_scope_value(integration: Integration, value: &str) -> Result<(), &'static str> {
    if value.trim().is_empty() {
        return Err("the scope is empty");
    }
    if value.len() > 128 || !crate::human::is_plain(value) {
        return Err(
            "the scope must be at most 128 printable characters (no control, bidirectional or invisible characters)",
        );
    }
    match integration {
        Integration::Slack if !value.starts_with('#') || value.len() < 2 => {
            Err("a channel starts with '#'")
        }
        Integration::Slack
        | Integration::Hubspot
        | Integration::GoogleCalendar
        | Integration::Quickbooks
            if value.contains('/') =>
        {
            Err("this scope cannot contain '/'")
        }
        Integration::Files => {
            let ok = value.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
            if ok {
                Ok(())
            } else {
                Err(
                    "a folder is a relative path of plain names (letters, digits, '-', '_', '.'), without '..'",
                )
            }
        }
        _ => Ok(()),
    }
}

/// An amount above zero (`500` or `499.99`) in cents, if the value is one.
fn positive_amount_cents(value: &toml::Value) -> Option<i64> {
    let cents = match value {
        toml::Value::Integer(i) => i.checked_mul(100)?,
        toml::Value::Float(f) if f.is_finite() && *f < 1e15 => (f * 100.0).round() as i64,
        _ => return None,
    };
    (cents > 0).then_some(cents)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: Spanned<String>,
    component: Spanned<String>,
    #[serde(default)]
    grant: Vec<RawGrant>,
    limits: Option<RawLimits>,
    #[serde(default)]
    notify: Vec<RawNotify>,
    #[serde(default)]
    schedule: Vec<RawSchedule>,
    #[serde(default)]
    trigger: Vec<RawTrigger>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    on: Spanned<String>,
    scope: Spanned<String>,
    task: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    every: Option<Spanned<String>>,
    cron: Option<Spanned<String>>,
    task: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    url: Spanned<String>,
    format: Option<Spanned<String>>,
    events: Option<Vec<Spanned<String>>>,
    include_content: Option<bool>,
    allow_private_address: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    integration: Spanned<String>,
    scope: Spanned<String>,
    actions: Spanned<Vec<Spanned<String>>>,
    approval: Option<Spanned<toml::Value>>,
    calls_per_minute: Option<Spanned<u32>>,
    max_writes_per_day: Option<Spanned<toml::Value>>,
    max_amount_per_day: Option<Spanned<toml::Value>>,
    max_mb: Option<Spanned<toml::Value>>,
    to: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_mb: Option<Spanned<u32>>,
    time_ms: Option<Spanned<u64>>,
    calls_per_minute: Option<Spanned<u32>>,
    max_calls: Option<Spanned<u32>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, "employee.toml", Path::new("/m"))
    }

    const GOOD: &str = r##"name = "customer-service"
component = "cs.wasm"

[[grant]]
integration = "gmail"
scope = "label:INBOX"
actions = ["read"]

[[grant]]
integration = "slack"
scope = "channel:#support"
actions = ["post"]
approval = "none"

[limits]
memory_mb = 32
"##;

    #[test]
    fn a_good_manifest_parses_with_defaults_and_resolved_component() -> anyhow::Result<()> {
        let m = parse(GOOD)?;
        assert_eq!(m.name, "customer-service");
        assert_eq!(m.component, Path::new("/m/cs.wasm"));
        assert_eq!(m.grants.len(), 2);
        assert!(m.grants[0].allows(Action::Read) && !m.grants[0].allows(Action::Send));
        assert_eq!(m.limits.memory_mb, 32);
        assert_eq!(m.limits.time_ms, Limits::default().time_ms);
        assert!(m.grants_interface(Interface::Chat) && !m.grants_interface(Interface::Crm));
        Ok(())
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_unknown_action_names_the_line_and_the_choices() {
        let text = GOOD.replace(r#"actions = ["post"]"#, r#"actions = ["delete"]"#);
        assert_eq!(
            err(&text),
            r#"employee.toml:12: unknown action "delete" for slack (expected one of: read, post)"#
        );
    }

    #[test]
    fn unknown_keys_integrations_and_empty_scopes_are_errors_with_lines() {
        let e = err(&GOOD.replace("approval = \"none\"", "aproval = \"none\""));
        assert!(
            e.starts_with("employee.toml:13: ") && e.contains("aproval"),
            "{e}"
        );
        let e = err(&GOOD.replace("\"gmail\"", "\"outlook\""));
        assert!(
            e.starts_with("employee.toml:5: unknown integration \"outlook\""),
            "{e}"
        );
        let e = err(&GOOD.replace("label:INBOX", "label:"));
        assert!(
            e.starts_with("employee.toml:6: ") && e.contains("empty"),
            "{e}"
        );
        let e = err(&GOOD.replace("label:INBOX", "channel:#x"));
        assert!(e.contains("must look like \"label:NAME\""), "{e}");
        let e = err(&GOOD.replace("memory_mb = 32", "memory_mb = 100000"));
        assert!(e.starts_with("employee.toml:16: memory_mb"), "{e}");
        let e = err(&GOOD.replace("[limits]", "[limits]\nthreads = 4"));
        assert!(
            e.starts_with("employee.toml:16: ") && e.contains("threads"),
            "{e}"
        );
        let e = err("name = 3");
        assert!(e.starts_with("employee.toml:1: "), "{e}");
    }

    #[test]
    fn folder_scopes_cannot_climb_out() {
        for bad in ["folder:..", "folder:a/../b", "folder:/etc", "folder:a//b"] {
            let text = format!(
                "name = \"a\"\ncomponent = \"a.wasm\"\n[[grant]]\nintegration = \"files\"\nscope = \"{bad}\"\nactions = [\"read\"]\n"
            );
            let e = err(&text);
            assert!(e.starts_with("employee.toml:5: "), "{bad}: {e}");
        }
    }

    #[test]
    fn duplicate_grants_and_empty_actions_are_refused() {
        let dup = format!(
            "{GOOD}\n[[grant]]\nintegration = \"gmail\"\nscope = \"label:INBOX\"\nactions = [\"send\"]\n"
        );
        assert!(err(&dup).contains("duplicate grant"));
        assert!(
            err(&GOOD.replace(r#"actions = ["read"]"#, "actions = []"))
                .contains("lists no actions")
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const INTEGRATIONS: [&str; 8] = [
        "gmail",
        "slack",
        "hubspot",
        "google-calendar",
        "quickbooks",
        "files",
        "telex",
        "",
    ];
    const SCOPES: [&str; 9] = [
        "label:support",
        "channel:#general",
        "portal:main",
        "calendar:sales",
        "company:acme",
        "folder:out",
        "label:",
        "channel:#a\u{202e}b",
        "nonsense",
    ];
    const ACTIONS: [&str; 8] = [
        "read", "send", "post", "write", "list", "update", "explode", "",
    ];
    const EXTRAS: [&str; 12] = [
        "",
        "calls_per_minute = 0",
        "calls_per_minute = 5",
        "max_mb = 5",
        "max_mb = 0",
        "max_writes_per_day = -1",
        "max_amount_per_day = 10.5",
        "to = []",
        "to = [\"northwind.example\"]",
        "approval = \"required\"",
        "approval = \"sometimes\"",
        "approval = { over_amount = 100 }",
    ];

    proptest! {
        /// Any text at all: the parser answers Ok or an error, never panics.
        #[test]
        fn any_manifest_text_parses_or_is_refused_without_panicking(text in "\\PC{0,300}") {
            let _ = Manifest::parse(&text, "m.toml", Path::new("/"));
        }

        /// Manifests assembled from valid and invalid pieces: each parses
        /// to grants that hold only what was written, or fails with an
        /// error that names the file (and so the line).
        #[test]
        fn assembled_manifests_parse_to_what_was_written_or_name_the_line(
            name in "[a-z-]{0,10}",
            grants in proptest::collection::vec(
                (
                    prop::sample::select(INTEGRATIONS.to_vec()),
                    prop::sample::select(SCOPES.to_vec()),
                    proptest::collection::vec(prop::sample::select(ACTIONS.to_vec()), 0..3),
                    prop::sample::select(EXTRAS.to_vec()),
                ),
                0..4,
            ),
            time_ms in proptest::option::of(0u64..200_000),
        ) {
            let mut text = format!("name = {name:?}\ncomponent = \"e.wasm\"\n");
            for (integration, scope, actions, extra) in &grants {
                text.push_str(&format!(
                    "[[grant]]\nintegration = {integration:?}\nscope = {scope:?}\nactions = {actions:?}\n{extra}\n"
                ));
            }
            if let Some(t) = time_ms {
                text.push_str(&format!("[limits]\ntime_ms = {t}\n"));
            }
            match Manifest::parse(&text, "m.toml", Path::new("/")) {
                Ok(m) => {
                    prop_assert_eq!(&m.name, &name);
                    prop_assert_eq!(m.grants.len(), grants.len());
                    for (g, (integration, scope, actions, _)) in m.grants.iter().zip(&grants) {
                        prop_assert_eq!(g.integration.name(), *integration);
                        prop_assert_eq!(&g.scope, scope);
                        prop_assert!(crate::human::is_plain(&g.scope));
                        for a in &g.actions {
                            prop_assert!(actions.contains(&a.name()));
                        }
                    }
                    prop_assert!(m.limits.time_ms >= 1 && m.limits.time_ms <= MAX_TIME_MS);
                }
                Err(e) => {
                    let text = e.to_string();
                    prop_assert!(text.starts_with("m.toml"), "{}", text);
                }
            }
        }
    }
}
