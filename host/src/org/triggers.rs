//! Event triggers: tasks the daemon queues when new mail arrives under a
//! granted label or a new message in a granted channel (`[[trigger]]` in a
//! manifest).
//!
//! Each trigger keeps the ids it has seen (area `triggers`, keyed by
//! employee and the trigger's own id). The first look only learns what is
//! there: history never sets a trigger off. After that, a round that finds
//! new items records them (conditionally, so of two rounds one acts) and
//! queues one task for all of them. The employee's own sent mail and its
//! own posts never set it off, so it cannot trigger itself.

use crate::manifest::{Manifest, Trigger, TriggerSource};
use crate::providers::{ChatProvider as _, MailProvider as _};
use crate::store::StoreError;

use super::{Org, TaskRecord};

const AREA: &str = "triggers";
/// How many recent items a trigger looks at, and remembers.
const WINDOW: usize = 200;

/// What one round of triggers did.
#[derive(Debug, Default)]
pub struct TriggerRound {
    /// Tasks queued.
    pub queued: Vec<TaskRecord>,
    /// Triggers that could not look or queue, with why.
    pub failed: Vec<String>,
}

impl Org {
    /// Look at every trigger of every registered employee and queue a task
    /// for each that found something new.
    pub fn run_triggers(&self) -> Result<TriggerRound, StoreError> {
        let mut round = TriggerRound::default();
        for manifest in self.registered()? {
            if self.disabled(&manifest.name)?.is_some() {
                continue;
            }
            for trigger in &manifest.triggers {
                match self.new_items(&manifest, trigger) {
                    Ok(0) => {}
                    Ok(n) => {
                        let by =
                            format!("trigger: {n} new in {}", crate::human::line(&trigger.scope));
                        match self.request_task(&manifest.name, &trigger.task, &by) {
                            Ok(record) => round.queued.push(record),
                            Err(e) => round
                                .failed
                                .push(format!("{}'s trigger could not queue: {e}", manifest.name)),
                        }
                    }
                    Err(e) => round
                        .failed
                        .push(format!("{}'s trigger could not look: {e}", manifest.name)),
                }
            }
        }
        for why in &round.failed {
            tracing::error!("{why}");
        }
        Ok(round)
    }

    /// How many items are new since the trigger last looked (recording
    /// them as seen); 0 on its first look.
    fn new_items(&self, manifest: &Manifest, trigger: &Trigger) -> Result<usize, String> {
        let scope = trigger.scope.split_once(':').map_or("", |(_, v)| v);
        let current: Vec<String> = match trigger.on {
            TriggerSource::Mail => self
                .sandbox
                .list(scope, "", WINDOW as u32)
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|m| !m.labels.iter().any(|l| l == "SENT"))
                .map(|m| m.id)
                .collect(),
            TriggerSource::Chat => self
                .sandbox
                .read_recent(scope, WINDOW as u32)
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|m| m.author != manifest.name)
                .map(|m| m.id)
                .collect(),
        };
        let key = format!("{}/{}", manifest.name, trigger.id()).into_bytes();
        let stored = self.org.get(AREA, &key).map_err(|e| e.to_string())?;
        let seen: Vec<String> = match &stored {
            Some(bytes) => crate::store::decode(AREA, bytes).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let new: Vec<&String> = current.iter().filter(|id| !seen.contains(id)).collect();
        if stored.is_some() && new.is_empty() {
            return Ok(0);
        }
        let mut remembered: Vec<String> = new.iter().map(|id| (*id).clone()).collect();
        remembered.extend(seen.iter().cloned());
        remembered.truncate(WINDOW * 2);
        let value = crate::store::encode(&remembered).map_err(|e| e.to_string())?;
        let took = self
            .org
            .write_if(
                AREA,
                &key,
                stored.as_deref(),
                vec![(key.clone(), Some(value))],
            )
            .map_err(|e| e.to_string())?;
        Ok(if took && stored.is_some() {
            new.len()
        } else {
            0
        })
    }
}
