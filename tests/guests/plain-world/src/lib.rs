//! A component of the plain `employee` world, built without the SDK: it
//! exports `run` and no `on-decision`. It posts one message (which the tests
//! gate) so the host has a decision to tell it about, and it must not be
//! called back.

#[allow(missing_docs, clippy::all, unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "clancy:employee/employee",
        generate_all,
    });

    // Exported from inside this module: the generated glue is unsafe code.
    use super::Plain;
    export!(Plain with_types_in self);
}

use bindings::clancy::employee::chat;
use bindings::clancy::employee::types::{Outcome, Report, Task};

struct Plain;

impl bindings::Guest for Plain {
    fn run(task: Task) -> Result<Report, String> {
        let channel = chat::channels().into_iter().next().ok_or("no channel")?;
        let outcome = channel
            .post(&task.instruction, "The task asked for this post.")
            .map_err(|e| format!("{e:?}"))?;
        let summary = match outcome {
            Outcome::Done(id) => format!("posted: done ({id})"),
            Outcome::Queued(id) => format!("posted: queued for approval ({id})"),
        };
        Ok(Report { summary })
    }
}
