//! Asking for more reach, the `elevation` interface: a time-boxed widening
//! of the employee's grants on an integration it already holds. It never
//! reaches a service; on approval the executor records the widening.

use serde::{Deserialize, Serialize};

use super::{Action, EditError, Integration, quote};
use crate::runtime::TaskState;
use crate::runtime::bindings::clancy::employee::elevation as wit;
use crate::runtime::guest_calls::CallResult;

/// The longest widening an employee may ask for: one day.
pub const MAX_ELEVATION_MINUTES: u32 = 24 * 60;

/// A request for a widening (what the approver decides on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum ElevationOp {
    /// `elevation.request`
    #[serde(rename = "elevate")]
    Request {
        /// The integration widened.
        integration: Integration,
        /// The scope widened to (or on).
        scope: String,
        /// The actions asked for (as the guest named them; validated before
        /// the request is queued).
        actions: Vec<String>,
        /// For how long.
        minutes: u32,
    },
}

impl ElevationOp {
    /// The integration it widens.
    pub fn integration(&self) -> Integration {
        match self {
            ElevationOp::Request { integration, .. } => *integration,
        }
    }

    /// The grant action it needs (never granted: always a human's call).
    pub fn action(&self) -> Action {
        Action::Elevate
    }

    /// The contract method.
    pub fn method(&self) -> &'static str {
        "request-elevation"
    }

    /// The audit log's summary of the arguments.
    pub fn summary(&self) -> String {
        match self {
            ElevationOp::Request {
                integration,
                scope,
                actions,
                minutes,
            } => format!(
                "{} on {integration} {} for {minutes} min",
                quote(&actions.join(", ")),
                quote(scope)
            ),
        }
    }

    /// What the approver reads.
    pub fn preview(&self, _scope: &str) -> String {
        match self {
            ElevationOp::Request {
                integration,
                scope,
                actions,
                minutes,
            } => format!(
                "widen its grants: {} on {integration} {} for {minutes} minutes (then it expires on its own)",
                crate::human::line(&actions.join(", ")),
                crate::human::line(scope)
            ),
        }
    }

    /// Guest-supplied bytes in the arguments.
    pub fn argument_bytes(&self) -> usize {
        match self {
            ElevationOp::Request { scope, actions, .. } => {
                scope.len() + actions.iter().map(String::len).sum::<usize>()
            }
        }
    }

    /// The fields an approver may edit: only how long.
    pub fn editable_fields(&self) -> &'static [&'static str] {
        &["minutes"]
    }

    /// The request with `field` set to `value`; `None` if no such field.
    pub fn edited(&self, field: &str, value: &str) -> Result<Option<ElevationOp>, EditError> {
        if field != "minutes" {
            return Ok(None);
        }
        let minutes = value
            .trim()
            .parse()
            .ok()
            .filter(|m| (1..=MAX_ELEVATION_MINUTES).contains(m))
            .ok_or_else(|| {
                EditError::InvalidValue(format!(
                    "minutes must be a number from 1 to {MAX_ELEVATION_MINUTES}"
                ))
            })?;
        let ElevationOp::Request {
            integration,
            scope,
            actions,
            ..
        } = self.clone();
        Ok(Some(ElevationOp::Request {
            integration,
            scope,
            actions,
            minutes,
        }))
    }
}

impl wit::Host for TaskState {
    fn request(
        &mut self,
        integration: String,
        scope: String,
        actions: Vec<String>,
        minutes: u32,
        reason: String,
    ) -> CallResult<wit::Outcome> {
        self.count_call()?;
        let result = self.mediator().request_elevation(
            self.task_id(),
            &integration,
            &scope,
            actions,
            minutes,
            &reason,
        );
        written!(Ok::<_, wasmtime::Error>(result))
    }
}
