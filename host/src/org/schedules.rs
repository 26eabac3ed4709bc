//! Schedules: tasks the daemon starts on a timer (`[[schedule]]` in a
//! manifest).
//!
//! Each schedule of each registered employee has a durable next run time
//! (area `schedules`, keyed by employee and the schedule's own id, so a
//! changed schedule starts afresh). The first run is the schedule's next
//! time after it is first seen (one period on, or the cron expression's
//! next match, in UTC); a slot missed while the daemon was down runs once.
//! A due slot is taken (the next time moved on, conditionally) before its
//! task is queued: a restart never queues a slot twice, and the queue
//! ([`Org::request_task`]) keeps the task until a worker runs it.

use chrono::{DateTime, Utc};

use crate::store::StoreError;

use super::{Org, TaskRecord};

const AREA: &str = "schedules";

/// What one round of schedules did.
#[derive(Debug, Default)]
pub struct ScheduleRound {
    /// Tasks queued (the daemon's workers run them).
    pub queued: Vec<TaskRecord>,
    /// Schedules that could not start, with why.
    pub failed: Vec<String>,
}

impl Org {
    /// Queue every scheduled task that is due now.
    pub fn run_due_schedules(&self) -> Result<ScheduleRound, StoreError> {
        let now = self.now();
        let mut round = ScheduleRound::default();
        for manifest in self.registered()? {
            if self.disabled(&manifest.name)?.is_some() {
                continue;
            }
            for schedule in &manifest.schedules {
                let key = format!("{}/{}", manifest.name, schedule.id()).into_bytes();
                let stored = self.org.get(AREA, &key)?;
                let next = match &stored {
                    Some(bytes) => crate::store::decode::<DateTime<Utc>>(AREA, bytes)?,
                    None => {
                        // First seen: the first run is its next time after now.
                        if let Some(first) = schedule.next_after(now) {
                            self.org.put_json(AREA, &key, &first)?;
                        }
                        continue;
                    }
                };
                if now < next {
                    continue;
                }
                // The slot is taken before the task runs, conditionally: of
                // two rounds, one runs it.
                // A cron expression that never matches again waits forever.
                let after = schedule.next_after(now).unwrap_or(DateTime::<Utc>::MAX_UTC);
                let after = crate::store::encode(&after)?;
                if !self.org.write_if(
                    AREA,
                    &key,
                    stored.as_deref(),
                    vec![(key.clone(), Some(after))],
                )? {
                    continue;
                }
                match self.request_task(&manifest.name, &schedule.task, "schedule") {
                    Ok(record) => round.queued.push(record),
                    Err(e) => {
                        let why = format!("{}'s schedule could not queue: {e}", manifest.name);
                        tracing::error!("{why}");
                        let _ = self.audit_operator_action(
                            "schedule",
                            &format!("{} {}", manifest.name, schedule.when()),
                            &format!("not queued: {e}"),
                        );
                        round.failed.push(why);
                    }
                }
            }
        }
        Ok(round)
    }
}
