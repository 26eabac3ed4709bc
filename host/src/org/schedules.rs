//! Schedules: tasks the daemon starts on a timer (`[[schedule]]` in a
//! manifest).
//!
//! Each schedule of each registered employee has a durable next run time
//! (area `schedules`, keyed by employee and the schedule's own id, so a
//! changed schedule starts afresh). The first run is one period after the
//! schedule is first seen. A due run moves the next time on *before* the
//! task starts: a restart never runs a slot twice, and a task cut short by
//! a kill is recorded as interrupted at the next start, never silently lost.

use chrono::{DateTime, Duration, Utc};

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
                        // First seen: the first run is one period from now.
                        let first = now + period(schedule.every_secs);
                        self.org.put_json(AREA, &key, &first)?;
                        continue;
                    }
                };
                if now < next {
                    continue;
                }
                // The slot is taken before the task runs, conditionally: of
                // two rounds, one runs it.
                let after = crate::store::encode(&(now + period(schedule.every_secs)))?;
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
                            &format!("{} every {}s", manifest.name, schedule.every_secs),
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

fn period(secs: u64) -> Duration {
    i64::try_from(secs)
        .ok()
        .and_then(Duration::try_seconds)
        .unwrap_or(Duration::days(30))
}
