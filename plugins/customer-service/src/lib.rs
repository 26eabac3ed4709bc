//! Customer service: reads the support label, looks each sender up in the
//! CRM, and files one ticket per mail in the support channel.
//!
//! Granted: Gmail read on one label, Slack post to one channel, CRM read.
//! Not granted (and so not even importable): sending mail, the ledger,
//! changing deals.

use clancy_sdk::{Employee, Report, Task, chat, crm, mail, note};

struct CustomerService;

const MAX_MAILS: u32 = 20;

fn priority(message: &mail::Message) -> &'static str {
    let text = format!("{} {}", message.subject, message.body).to_lowercase();
    if ["urgent", "blocked", "cannot log in", "outage", "down"]
        .iter()
        .any(|w| text.contains(w))
    {
        "P1"
    } else if ["charged twice", "refund", "invoice", "billing"]
        .iter()
        .any(|w| text.contains(w))
    {
        "P2"
    } else {
        "P3"
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
            let p = priority(message);
            let customer = customer_line(portals.first(), &message.from);
            let ticket = format!(
                "[{p}] {subject}\nCustomer: {customer}\nMail {id}, received {at}\n> {body}",
                subject = message.subject,
                id = message.id,
                at = message.received_at,
                body = message.body.chars().take(280).collect::<String>(),
            );
            let reason = format!(
                "Filing a {p} ticket for mail {} from {} so the support team can pick it up; priority from its wording.",
                message.id, message.from
            );
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
}

clancy_sdk::export!(CustomerService);
