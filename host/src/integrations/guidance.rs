//! Asking a human, the `guidance` interface: a question with the options
//! the employee offers, waiting in the approval queue like a gated write.
//! It never reaches a service; an operator's answer goes back to the
//! employee through `on-decision`.

use serde::{Deserialize, Serialize};

use super::{Action, quote};
use crate::runtime::TaskState;
use crate::runtime::bindings::clancy::employee::guidance as wit;
use crate::runtime::guest_calls::CallResult;

/// Largest question an employee may ask, in bytes.
pub const MAX_QUESTION_BYTES: usize = 4 * 1024;
/// Most options a question may offer.
pub const MAX_OPTIONS: usize = 10;
/// Largest option, in bytes.
pub const MAX_OPTION_BYTES: usize = 200;

/// A question for a human.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum GuidanceOp {
    /// `guidance.ask`
    #[serde(rename = "ask")]
    Ask {
        /// What the employee wants to know.
        question: String,
        /// The answers it offers; the operator picks one.
        options: Vec<String>,
    },
}

impl GuidanceOp {
    /// The options offered.
    pub fn options(&self) -> &[String] {
        match self {
            GuidanceOp::Ask { options, .. } => options,
        }
    }

    /// The grant action it needs (never granted: always a human's call).
    pub fn action(&self) -> Action {
        Action::Ask
    }

    /// The contract method.
    pub fn method(&self) -> &'static str {
        "ask"
    }

    /// The audit log's summary of the arguments.
    pub fn summary(&self) -> String {
        match self {
            GuidanceOp::Ask { question, options } => format!(
                "question {}, options {}",
                quote(question),
                quote(&options.join(" | "))
            ),
        }
    }

    /// What the operator reads.
    pub fn preview(&self, _scope: &str) -> String {
        match self {
            GuidanceOp::Ask { question, options } => format!(
                "know:\n{}\n    options: {}",
                crate::human::block(question, super::GUTTER),
                options
                    .iter()
                    .map(|o| format!("\"{}\"", crate::human::line(o)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Guest-supplied bytes in the arguments.
    pub fn argument_bytes(&self) -> usize {
        match self {
            GuidanceOp::Ask { question, options } => {
                question.len() + options.iter().map(String::len).sum::<usize>()
            }
        }
    }

    /// A question is answered, not edited.
    pub fn editable_fields(&self) -> &'static [&'static str] {
        &[]
    }
}

impl wit::Host for TaskState {
    fn ask(
        &mut self,
        question: String,
        options: Vec<String>,
        reason: String,
    ) -> CallResult<wit::Outcome> {
        self.count_call()?;
        let result = self
            .mediator()
            .ask(self.task_id(), &question, options, &reason);
        written!(Ok::<_, wasmtime::Error>(result))
    }
}
