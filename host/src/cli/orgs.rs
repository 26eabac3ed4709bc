//! `clancy orgs list|export|delete`: the organisations of a data dir, one
//! organisation's whole data exported, or deleted.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::{Global, data_dir, open, who};
use crate::org::{DataDirMode, Org};

#[derive(Subcommand, Debug)]
pub(super) enum OrgsCommand {
    /// The organisations of the data dir (through a daemon: the token's own).
    List,
    /// Everything `--org` holds, as one JSON document without secrets
    /// (operators, tokens, employees, requests, tasks, notifications, the
    /// sandbox workspace, files, the audit log and its checkpoints).
    Export {
        /// Write here instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Delete an organisation and everything it holds: records, audit log,
    /// files, pinned components. Needs the daemon stopped.
    Delete {
        /// The organisation.
        name: String,
        /// Its name again.
        #[arg(long, value_name = "NAME")]
        confirm: String,
    },
}

/// Run an `orgs` command.
pub(super) fn run(global: &Global, command: OrgsCommand, out: &mut impl Write) -> Result<ExitCode> {
    let remote = super::remote(global)?;
    match command {
        OrgsCommand::List => {
            if let Some(remote) = remote {
                let mine = remote.get("/api/v1/organisation", &[])?;
                writeln!(
                    out,
                    "{}",
                    crate::human::line(mine["name"].as_str().unwrap_or_default())
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            let host = open(global, DataDirMode::Existing)?;
            for name in host.org_names()? {
                writeln!(out, "{name}")?;
            }
        }
        OrgsCommand::Export { output } => {
            // Written as it is read, by this process or the daemon.
            super::write_export(output.as_deref(), out, |w| match &remote {
                Some(remote) => remote.download("/api/v1/organisation/export", w),
                None => {
                    let host = open(global, DataDirMode::Existing)?;
                    let by = who(None).unwrap_or_else(|_| "the CLI".into());
                    Ok(host.export_organisation_to(&by, w)?)
                }
            })?;
        }
        OrgsCommand::Delete { name, confirm } => {
            if name != confirm {
                anyhow::bail!(
                    "--confirm must repeat the organisation's name ({name:?}); nothing was deleted"
                );
            }
            if let Some(remote) = remote {
                anyhow::bail!(
                    "a daemon serves this data dir at {}: stop it to delete an organisation; nothing was deleted",
                    remote.url
                );
            }
            let data = data_dir(global)?;
            let orgs = Org::open_all(&data, &[&name], DataDirMode::Existing)?;
            let Some(org) = orgs.into_iter().find(|o| o.org() == name) else {
                anyhow::bail!("no organisation {name:?} in {}", data.display());
            };
            let deleted = org.delete_organisation()?;
            if deleted.keys == 0 && !deleted.files {
                anyhow::bail!("no organisation {name:?} in {}", data.display());
            }
            writeln!(
                out,
                "organisation {name} deleted: {} records{}",
                deleted.keys,
                if deleted.files {
                    ", its files and pinned components"
                } else {
                    ""
                }
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
