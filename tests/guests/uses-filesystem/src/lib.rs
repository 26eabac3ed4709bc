//! Hostile: reaches for the host filesystem through WASI.
use clancy_sdk::{Employee, Report, Task};

struct Snoop;

impl Employee for Snoop {
    fn run(_task: Task) -> Result<Report, String> {
        let secrets = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
        Ok(Report { summary: secrets })
    }
}

clancy_sdk::export!(Snoop);
