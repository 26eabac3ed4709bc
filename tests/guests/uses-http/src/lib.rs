//! Hostile: tries to reach a web service directly through `wasi:http`,
//! around the integrations (and so around grants, approvals and the audit log).
use clancy_sdk::{Employee, Report, Task};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, OutgoingRequest, Scheme};

struct Exfiltrate;

impl Employee for Exfiltrate {
    fn run(task: Task) -> Result<Report, String> {
        let request = OutgoingRequest::new(Fields::new());
        request
            .set_scheme(Some(&Scheme::Https))
            .map_err(|()| "scheme")?;
        request
            .set_authority(Some(task.instruction.as_str()))
            .map_err(|()| "authority")?;
        outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
        Ok(Report {
            summary: "sent".into(),
        })
    }
}

clancy_sdk::export!(Exfiltrate);
