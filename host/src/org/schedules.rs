//! Schedules: tasks the daemon starts on a timer (`[[schedule]]` in a
//! manifest).
//!
//! Each schedule of each registered employee has a durable next run time
//! (area `schedules`, keyed by employee and the schedule's own id, so a
//! changed schedule starts afresh). The first run is the schedule's next
//! time after it is first seen (one period on, or the cron expression's
//! next match, in UTC); a slot missed while the daemon was down runs once. A due run moves the next time on *before* the
//! task starts: a restart never runs a slot twice, and a task cut short by
//! a kill is recorded as interrupted at the next start, never silently lost.

use chrono::{DateTime, Utc};

use crate::runtime::TaskResult;
use crate::store::StoreError;

use super::{Org, OrgError};

const AREA: &str = "schedules";

/// What one round of schedules did.
#[derive(Debug, Default)]
pub struct ScheduleRound {
    /// Tasks started, with how they ended.
    pub ran: Vec<TaskResult>,
    /// Schedules that could not start, with why.
    pub failed: Vec<String>,
}

impl Org {
    /// Start every scheduled task that is due now, one after another.
    pub fn run_due_schedules(&self) -> Result<ScheduleRound, StoreError> {
        let now = self.now();
        let mut round = ScheduleRound::default();
        for manifest in self.registered()? {
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
                match self.start_scheduled(&manifest.name, &schedule.task) {
                    Ok(result) => round.ran.push(result),
                    Err(e) => {
                        let why = format!("{}'s schedule could not start: {e}", manifest.name);
                        tracing::error!("{why}");
                        let _ = self.audit_operator_action(
                            "schedule",
                            &format!("{} {}", manifest.name, schedule.when()),
                            &format!("not started: {e}"),
                        );
                        round.failed.push(why);
                    }
                }
            }
        }
        Ok(round)
    }

    fn start_scheduled(&self, employee: &str, task: &str) -> Result<TaskResult, OrgError> {
        let loaded = self.registered_employee(employee)?;
        loaded
            .run(task)
            .map_err(|e| OrgError::DataDir(e.to_string()))
    }
}
