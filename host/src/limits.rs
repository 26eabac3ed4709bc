//! Limits and budgets that hold across tasks, processes and restarts.
//!
//! Rate limits are GCRA buckets (the algorithm behind `governor`) whose
//! state — the theoretical arrival time — is keyed by employee and by grant
//! (integration + scope), so a new task, an undo or a widened scope starts
//! from where the last one left off instead of from a full bucket. The
//! organisation's meter keeps the buckets it used in memory (a call is
//! metered without touching the store) and writes them behind, before each
//! group commit and when it is dropped, so a new process starts from where
//! the last one left off too: the store is held by one process at a time,
//! and an organisation has one meter in it. Budgets count an employee's
//! writes (and, for the ledger, the amount) per grant per UTC day.
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
#[derive(Clone, Debug)]
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

/// One organisation's meter (one per organisation in a process: it holds
/// the rate buckets).
pub struct Meter {
    store: OrgStore,
    clock: Arc<dyn Clock>,
    rates: Arc<Rates>,
}

/// The rate buckets this meter used: the theoretical arrival time of each,
/// as read from the store on first use and as taken since, and which of
/// them the store does not have yet.
struct Rates {
    store: OrgStore,
    /// Whether the store commits in the background (and calls
    /// [`Rates::write_behind`] before each commit); if not, each take is
    /// written at once.
    behind: bool,
    state: std::sync::Mutex<RateState>,
}

#[derive(Default)]
struct RateState {
    tat: std::collections::HashMap<String, i64>,
    unwritten: std::collections::BTreeSet<String>,
}

impl Rates {
    fn lock(&self) -> std::sync::MutexGuard<'_, RateState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Write the buckets taken since the last write, riding on the next
    /// group commit: a crash can forget the last few milliseconds of
    /// calls, never grant one the buckets refused before it.
    fn write_behind(&self) -> Result<(), StoreError> {
        let mut st = self.lock();
        let keys: Vec<String> = std::mem::take(&mut st.unwritten).into_iter().collect();
        if keys.is_empty() {
            return Ok(());
        }
        let writes: Vec<crate::store::Write> = keys
            .iter()
            .filter_map(|k| {
                let tat = st.tat.get(k)?.to_string().into_bytes();
                Some((k.clone().into_bytes(), Some(tat)))
            })
            .collect();
        // Behind, only the committer writes them (and the last user, once
        // it is gone), so calls go on meanwhile; a store that writes at
        // once is written under the lock, so two calls' writes land in order.
        let mut held = (!self.behind).then_some(st);
        let written = self
            .store
            .write_when(AREA, writes, crate::store::Durability::Soon);
        if written.is_err() {
            // Tried again at the next commit.
            match held.as_mut() {
                Some(st) => st.unwritten.extend(keys),
                None => self.lock().unwritten.extend(keys),
            }
        }
        written
    }
}

impl crate::store::CommitHook for Rates {
    fn before_commit(&self) {
        if let Err(e) = self.write_behind() {
            tracing::error!(org = %self.store.org(), "could not write the rate limits: {e}");
        }
    }
}

impl Drop for Rates {
    fn drop(&mut self) {
        if let Err(e) = self.write_behind() {
            tracing::error!(org = %self.store.org(), "could not write the rate limits: {e}");
        }
    }
}

impl Meter {
    /// The meter of `store`'s organisation.
    pub fn new(store: OrgStore, clock: Arc<dyn Clock>) -> Meter {
        let rates = Arc::new(Rates {
            store: store.clone(),
            behind: store.commits_in_background(),
            state: std::sync::Mutex::new(RateState::default()),
        });
        if rates.behind {
            let hook: Arc<dyn crate::store::CommitHook> = rates.clone();
            store.before_commit(Arc::downgrade(&hook));
        }
        Meter {
            store,
            clock,
            rates,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Take one call from every bucket, or none if any is empty (the
    /// answer then says when the fullest of them has room again). Racing
    /// callers are serialised on the meter's buckets.
    pub fn take_call(&self, buckets: &[Bucket]) -> Result<(), LimitError> {
        let now = self.now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let mut st = self.rates.lock();
        let mut next = Vec::with_capacity(buckets.len());
        let mut wait: i64 = 0;
        for bucket in buckets {
            let tat = match st.tat.get(&bucket.key) {
                Some(tat) => Some(*tat),
                // First use in this process: where the last one left off.
                None => self
                    .store
                    .get(AREA, bucket.key.as_bytes())?
                    .as_deref()
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|t| t.parse::<i64>().ok()),
            }
            .unwrap_or(now)
            .max(now);
            let interval = MINUTE_NANOS / i64::from(bucket.per_minute.max(1));
            let tolerance = MINUTE_NANOS - interval;
            if tat - now > tolerance {
                wait = wait.max(tat - now - tolerance);
            }
            next.push(tat + interval);
        }
        if wait > 0 {
            let secs = (wait / 1_000_000_000).saturating_add(1);
            return Err(LimitError::RateLimited(
                u32::try_from(secs).unwrap_or(u32::MAX),
            ));
        }
        for (bucket, tat) in buckets.iter().zip(next) {
            match st.tat.get_mut(&bucket.key) {
                Some(known) => *known = tat,
                None => {
                    st.tat.insert(bucket.key.clone(), tat);
                }
            }
            if !st.unwritten.contains(&bucket.key) {
                st.unwritten.insert(bucket.key.clone());
            }
        }
        drop(st);
        if !self.rates.behind {
            self.rates.write_behind()?;
        }
        Ok(())
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
