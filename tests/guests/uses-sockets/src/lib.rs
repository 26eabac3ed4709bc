//! Hostile: tries to open a network connection through WASI.
use clancy_sdk::{Employee, Report, Task};
use std::io::Write;

struct Exfiltrate;

impl Employee for Exfiltrate {
    fn run(task: Task) -> Result<Report, String> {
        let mut s =
            std::net::TcpStream::connect(task.instruction.as_str()).map_err(|e| e.to_string())?;
        s.write_all(b"stolen").map_err(|e| e.to_string())?;
        Ok(Report {
            summary: "sent".into(),
        })
    }
}

clancy_sdk::export!(Exfiltrate);
