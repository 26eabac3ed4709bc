//! Customer service: reads the support label, looks each sender up in the
//! CRM, and files one ticket per mail in the support channel.
//!
//! Its priority rules are a few keywords. A mail that fits none of them is
//! not guessed at: the ticket is filed marked "needs triage" and the
//! employee asks an operator which priority it gets (`guidance::ask`); the
//! answer arrives through `on_decision` and is posted beside the ticket.
//!
//! Granted: Gmail read on one label, Slack post to one channel, CRM read.
//! Not granted (and so not even importable): sending mail, the ledger,
//! changing deals.

use clancy_sdk::{Decision, Employee, Report, Task, chat, crm, guidance, mail, note};

struct CustomerService;

const MAX_MAILS: u32 = 20;

/// What an operator may answer when a mail fits no rule.
const TRIAGE_OPTIONS: [&str; 4] = ["P1", "P2", "P3", "not a support request"];

/// The priority the rules give a mail, or `None` when it fits none of them.
fn priority(message: &mail::Message) -> Option<&'static str> {
    let text = format!("{} {}", message.subject, message.body).to_lowercase();
    if ["urgent", "blocked", "cannot log in", "outage", "down"]
        .iter()
        .any(|w| text.contains(w))
    {
        Some("P1")
    } else if ["charged twice", "refund", "invoice", "billing"]
        .iter()
        .any(|w| text.contains(w))
    {
        Some("P2")
    } else {
        None
    }
}

/// Ask an operator which priority `message` gets; the label for its ticket.
fn ask_for_priority(message: &mail::Message) -> String {
    let question = format!(
        "Mail {} from {} (\"{}\") matches none of my triage rules. Which priority should its ticket get?",
        message.id, message.from, message.subject
    );
    let options: Vec<String> = TRIAGE_OPTIONS.iter().map(|o| o.to_string()).collect();
    match guidance::ask(
        &question,
        &options,
        "No keyword rule fits this mail, and a wrong priority would mislead the support team.",
    ) {
        Ok(outcome) => format!("needs triage: asked {}", outcome_id(&outcome)),
        Err(e) => format!("needs triage: could not ask ({})", e.describe()),
    }
}

fn outcome_id(outcome: &clancy_sdk::Outcome) -> &str {
    match outcome {
        clancy_sdk::Outcome::Done(id) | clancy_sdk::Outcome::Queued(id) => id,
    }
}

fn customer_line(portal: Option<&crm::Portal>, sender: &str) -> String {
    let Some(portal) = portal else {
        return format!("{sender} (no CRM access)");
    };
    match portal.find_contacts(sender) {
        Ok(contacts) => match contacts.first() {
            Some(c) => format!("{} at {} ({}; {})", c.name, c.company, c.email, c.notes),
            None => format!("{sender} (not in the CRM yet)"),
        },
        Err(e) => format!("{sender} (CRM lookup failed: {})", e.describe()),
    }
}

impl Employee for CustomerService {
    fn run(task: Task) -> Result<Report, String> {
        note(&format!(
            "Asked: \"{}\". I will read the support label, look each customer up in the CRM and file one ticket per mail.",
            task.instruction
        ));
        let mailbox = mail::mailboxes()
            .into_iter()
            .next()
            .ok_or("no mailbox label is granted")?;
        let channel = chat::channels()
            .into_iter()
            .next()
            .ok_or("no chat channel is granted")?;
        let portals = crm::portals();

        let messages = mailbox
            .list("", MAX_MAILS)
            .map_err(|e| format!("cannot read {}: {}", mailbox.name(), e.describe()))?;
        if messages.is_empty() {
            return Ok(Report {
                summary: format!("no mail under {}; nothing to file", mailbox.name()),
            });
        }
        let mut filed = Vec::new();
        for message in &messages {
            let p = match priority(message) {
                Some(p) => p.to_string(),
                None => ask_for_priority(message),
            };
            let customer = customer_line(portals.first(), &message.from);
            let ticket = format!(
                "[{p}] {subject}\nCustomer: {customer}\nMail {id}, received {at}\n> {body}",
                subject = message.subject,
                id = message.id,
                at = message.received_at,
                body = message.body.chars().take(280).collect::<String>(),
            );
            let reason = if p.starts_with("needs triage") {
                format!(
                    "Filing a ticket for mail {} from {} so the support team sees it now; I asked a human for its priority.",
                    message.id, message.from
                )
            } else {
                format!(
                    "Filing a {p} ticket for mail {} from {} so the support team can pick it up; priority from its wording.",
                    message.id, message.from
                )
            };
            match channel.post(&ticket, &reason) {
                Ok(outcome) => filed.push(format!("{} ({p}, {outcome})", message.id)),
                Err(e) => {
                    return Err(format!(
                        "could not file a ticket for {}: {}",
                        message.id,
                        e.describe()
                    ));
                }
            }
        }
        Ok(Report {
            summary: format!(
                "filed {} tickets in {}: {}",
                filed.len(),
                channel.name(),
                filed.join(", ")
            ),
        })
    }

    /// A human answered a triage question: post the priority beside the
    /// ticket that names the question.
    fn on_decision(question: String, decision: Decision) -> Result<(), String> {
        let Decision::Answered(option) = decision else {
            // Denied or expired: the ticket stays marked "needs triage".
            return Ok(());
        };
        let channel = chat::channels()
            .into_iter()
            .next()
            .ok_or("no chat channel is granted")?;
        let text = if option == "not a support request" {
            format!(
                "Triage for the ticket that asked {question}: not a support request, it can be closed."
            )
        } else {
            format!(
                "[{option}] Triage for the ticket that asked {question}: priority {option}, decided by a human."
            )
        };
        channel
            .post(
                &text,
                &format!("An operator answered my triage question {question} with {option}."),
            )
            .map(|_| ())
            .map_err(|e| e.describe())
    }
}

clancy_sdk::export!(CustomerService);
