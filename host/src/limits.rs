//! Limits and budgets that hold across tasks, processes and restarts.
//!
//! Rate limits are GCRA buckets (the algorithm behind `governor`) whose
//! state — the theoretical arrival time — lives in the store, keyed by
//! employee and by grant (integration + scope), so a new process, a new
//! task, an undo or a widened scope starts from where the last one left
//! off instead of from a full bucket. Budgets count an employee's writes
//! (and, for the ledger, the amount) per grant per UTC day.
//!
//! This module only meters; the mediator decides what to refuse and audits it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::approvals::Clock;
use crate::manifest::Integration;
use crate::store::{OrgStore, StoreError, decode, encode};

const AREA: &str = "limits";
const MINUTE_NANOS: i64 = 60_000_000_000;

/// Why a call or write was metered out.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// Too many calls; the next one fits after this many seconds.
    #[error("rate limited: retry in {0}s")]
    RateLimited(u32),
    /// A daily budget of the grant is spent.
    #[error("{0}")]
    OverBudget(String),
    /// The store failed; nothing was metered (the caller fails closed).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One bucket: a key and its rate.
pub struct Bucket {
    key: String,
    per_minute: u32,
}

impl Bucket {
    /// The employee-wide bucket.
    pub fn employee(employee: &str, per_minute: u32) -> Bucket {
        Bucket {
            key: format!("r/{employee}"),
            per_minute,
        }
    }

    /// The bucket of one grant (integration + scope).
    pub fn grant(employee: &str, integration: Integration, scope: &str, per_minute: u32) -> Bucket {
        Bucket {
            key: format!("r/{employee}/{integration}/{scope}"),
            per_minute,
        }
    }
}

/// The daily budgets of one grant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Writes per UTC day.
    pub max_writes_per_day: Option<u32>,
    /// Money moved per UTC day, in cents (ledger).
    pub max_amount_per_day_cents: Option<i64>,
}

impl Budget {
    /// Whether any budget is set.
    pub fn is_set(&self) -> bool {
        self.max_writes_per_day.is_some() || self.max_amount_per_day_cents.is_some()
    }
}

/// What one grant spent on one day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spent {
    /// Writes.
    pub writes: u64,
    /// Cents.
    pub amount_cents: i64,
}

/// A write counted against a budget before it runs; give it back with
/// [`Meter::refund`] if the write did not happen.
#[derive(Debug)]
pub struct Reservation {
    key: String,
    amount_cents: i64,
}

/// One organisation's meter.
pub struct Meter {
    store: OrgStore,
    clock: Arc<dyn Clock>,
}

impl Meter {
    /// The meter of `store`'s organisation.
    pub fn new(store: OrgStore, clock: Arc<dyn Clock>) -> Meter {
        Meter { store, clock }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Take one call from every bucket, or none if any is empty (the
    /// answer then says when the fullest of them has room again).
    pub fn take_call(&self, buckets: &[Bucket]) -> Result<(), LimitError> {
        let now = self.now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        // Every caller writes the first bucket, so conditioning the write on
        // it serialises racing callers (threads or processes) on this employee.
        let Some(first) = buckets.first() else {
            return Ok(());
        };
        loop {
            let stored_first = self.store.get(AREA, first.key.as_bytes())?;
            let mut writes = Vec::new();
            let mut wait: i64 = 0;
            for (i, bucket) in buckets.iter().enumerate() {
                let stored = if i == 0 {
                    stored_first.clone()
                } else {
                    self.store.get(AREA, bucket.key.as_bytes())?
                };
                let tat = stored
                    .as_deref()
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|t| t.parse::<i64>().ok())
                    .unwrap_or(now)
                    .max(now);
                let interval = MINUTE_NANOS / i64::from(bucket.per_minute.max(1));
                let tolerance = MINUTE_NANOS - interval;
                if tat - now > tolerance {
                    wait = wait.max(tat - now - tolerance);
                }
                writes.push((
                    bucket.key.clone().into_bytes(),
                    Some((tat + interval).to_string().into_bytes()),
                ));
            }
            if wait > 0 {
                let secs = (wait / 1_000_000_000).saturating_add(1);
                return Err(LimitError::RateLimited(
                    u32::try_from(secs).unwrap_or(u32::MAX),
                ));
            }
            // Rides on the next group commit: a crash can forget the last
            // few milliseconds of calls, never grant one the buckets refused.
            if self.store.write_if_when(
                AREA,
                first.key.as_bytes(),
                stored_first.as_deref(),
                writes,
                crate::store::Durability::Soon,
            )? {
                return Ok(());
            }
        }
    }

    fn budget_key(&self, employee: &str, integration: Integration, scope: &str) -> String {
        format!(
            "b/{employee}/{integration}/{scope}/{}",
            self.now().format("%Y-%m-%d")
        )
    }

    /// What a grant spent today (UTC).
    pub fn spent_today(
        &self,
        employee: &str,
        integration: Integration,
        scope: &str,
    ) -> Result<Spent, StoreError> {
        Ok(self
            .store
            .get_json(
                AREA,
                self.budget_key(employee, integration, scope).as_bytes(),
            )?
            .unwrap_or_default())
    }

    /// Count one write (moving `amount_cents`) against the grant's budget
    /// for today, or refuse it if the budget would be exceeded.
    pub fn reserve_write(
        &self,
        employee: &str,
        integration: Integration,
        scope: &str,
        budget: &Budget,
        amount_cents: Option<i64>,
    ) -> Result<Option<Reservation>, LimitError> {
        if !budget.is_set() {
            return Ok(None);
        }
        let key = self.budget_key(employee, integration, scope);
        let amount = amount_cents.unwrap_or(0).max(0);
        self.update_spent(&key, |spent| {
            let spent = spent.unwrap_or_default();
            if let Some(why) = over_budget(&spent, budget, amount, integration, scope) {
                return Err(LimitError::OverBudget(why));
            }
            Ok(Some(Spent {
                writes: spent.writes + 1,
                amount_cents: spent.amount_cents.saturating_add(amount),
            }))
        })?;
        Ok(Some(Reservation {
            key,
            amount_cents: amount,
        }))
    }

    /// Whether one more write moving `amount_cents` would exceed the grant's
    /// budget today, without counting it (what the mediator asks before it
    /// queues a write for a human: no point asking for what cannot run).
    pub fn check_write(
        &self,
        employee: &str,
        integration: Integration,
        scope: &str,
        budget: &Budget,
        amount_cents: Option<i64>,
    ) -> Result<(), LimitError> {
        if !budget.is_set() {
            return Ok(());
        }
        let spent = self.spent_today(employee, integration, scope)?;
        let amount = amount_cents.unwrap_or(0).max(0);
        match over_budget(&spent, budget, amount, integration, scope) {
            Some(why) => Err(LimitError::OverBudget(why)),
            None => Ok(()),
        }
    }

    /// Give back a reservation whose write did not happen.
    pub fn refund(&self, reservation: Reservation) -> Result<(), StoreError> {
        self.update_spent(&reservation.key, |spent| {
            Ok(spent.map(|spent| Spent {
                writes: spent.writes.saturating_sub(1),
                amount_cents: spent.amount_cents.saturating_sub(reservation.amount_cents),
            }))
        })
    }

    /// Replace the spent record at `key` with what `change` makes of it
    /// (`None` in: no record yet; `None` out: write nothing), by a
    /// conditional write retried until no other writer got there first.
    fn update_spent<E: From<StoreError>>(
        &self,
        key: &str,
        mut change: impl FnMut(Option<Spent>) -> Result<Option<Spent>, E>,
    ) -> Result<(), E> {
        loop {
            let stored = self.store.get(AREA, key.as_bytes())?;
            let spent: Option<Spent> = match &stored {
                Some(bytes) => Some(decode(AREA, bytes)?),
                None => None,
            };
            let Some(next) = change(spent)? else {
                return Ok(());
            };
            if self.store.write_if(
                AREA,
                key.as_bytes(),
                stored.as_deref(),
                vec![(key.as_bytes().to_vec(), Some(encode(&next)?))],
            )? {
                return Ok(());
            }
        }
    }
}

/// Why one more write moving `amount` would exceed `budget`, if it would.
fn over_budget(
    spent: &Spent,
    budget: &Budget,
    amount: i64,
    integration: Integration,
    scope: &str,
) -> Option<String> {
    if let Some(max) = budget.max_writes_per_day
        && spent.writes >= u64::from(max)
    {
        return Some(format!(
            "the daily budget of {max} writes on {integration} {scope} is spent; it renews at midnight UTC"
        ));
    }
    if let Some(max) = budget.max_amount_per_day_cents
        && spent.amount_cents.saturating_add(amount) > max
    {
        return Some(format!(
            "this would move {} on {integration} {scope} today, over the daily budget of {} ({} spent so far); it renews at midnight UTC",
            crate::providers::money(spent.amount_cents.saturating_add(amount)),
            crate::providers::money(max),
            crate::providers::money(spent.amount_cents)
        ));
    }
    None
}
