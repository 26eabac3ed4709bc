//! `clancy serve`: run the daemon on the data dir until SIGTERM or Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::{Global, data_dir};
use crate::daemon::{Config, Daemon};
use crate::org::DataDirMode;

#[derive(Args, Debug)]
pub(super) struct ServeArgs {
    /// Where to listen (loopback unless --insecure-http).
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
    listen: SocketAddr,
    /// Seconds between two timer rounds (escalation, expiry, widening ends,
    /// notification delivery).
    #[arg(long, default_value_t = 5, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    tick_secs: u64,
    /// Allow a non-loopback address without TLS (only behind a proxy that
    /// terminates TLS).
    #[arg(long, conflicts_with = "tls_cert")]
    insecure_http: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM, readable by its owner only).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Requests per second from one IP address (bursts of twice that).
    #[arg(long, default_value_t = 50, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate_per_ip: u32,
    /// Requests per second by one operator or token (bursts of twice that).
    #[arg(long, default_value_t = 20, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate_per_operator: u32,
    /// Sign-in and enrolment attempts per minute from one IP address.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    sign_ins_per_minute: u32,
    /// Workers that run queued tasks [default: one per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    /// At SIGTERM, how long running tasks may take to finish before the
    /// daemon exits (they are recorded as interrupted at the next start).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// How long a client may take to send a request's headers before its
    /// connection is closed (1s-5m; slow senders cannot hold connections).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = header_timeout)]
    header_timeout: Duration,
    /// A session without a request for this long ends (e.g. 30m).
    #[arg(long, default_value = "30m", value_name = "DURATION", value_parser = session_duration)]
    session_idle: chrono::Duration,
    /// A session ends this long after sign-in, whatever happens (e.g. 12h).
    #[arg(long, default_value = "12h", value_name = "DURATION", value_parser = session_duration)]
    session_max: chrono::Duration,
}

/// A header deadline: 1 second to 5 minutes.
fn header_timeout(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&d) {
        return Err("expected 1s to 5m".into());
    }
    Ok(d)
}

/// A session length: 1 minute to 30 days.
fn session_duration(text: &str) -> Result<chrono::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if d < Duration::from_secs(60) || d > Duration::from_secs(30 * 86_400) {
        return Err(format!("{text:?} is outside 1m to 30d"));
    }
    chrono::Duration::from_std(d).map_err(|e| e.to_string())
}

/// Serve until told to stop. Prints one line when it listens (with the
/// address, useful with port 0) and one when it stopped.
pub(super) fn run(global: &Global, args: ServeArgs, out: &mut impl Write) -> Result<ExitCode> {
    let config = Config {
        listen: args.listen,
        tick: Duration::from_secs(args.tick_secs),
        insecure_http: args.insecure_http,
        tls: args.tls_cert.zip(args.tls_key),
        rate_limits: crate::daemon::RateLimits {
            per_ip: args.rate_per_ip,
            per_operator: args.rate_per_operator,
            sign_ins_per_minute: args.sign_ins_per_minute,
        },
        sessions: crate::accounts::SessionLimits {
            idle: args.session_idle,
            absolute: args.session_max,
        },
        workers: args.workers.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            usize::from,
        ),
        drain: args.drain,
        header_timeout: args.header_timeout,
    };
    if config.sessions.idle > config.sessions.absolute {
        anyhow::bail!("--session-idle may not be longer than --session-max");
    }
    // Every organisation of the data dir, the one `--org` names first (it
    // is made if new).
    let orgs: Vec<Arc<crate::org::Org>> =
        crate::org::Org::open_all(&data_dir(global)?, &[global.org()], DataDirMode::Create)?
            .into_iter()
            .map(|mut org| {
                if let Some(file) = &global.checkpoint_file {
                    org.use_checkpoint_file(file.clone());
                }
                Arc::new(org)
            })
            .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("clancy-serve")
        .enable_all()
        .build()?;
    let served = runtime.block_on(async {
        let daemon = Daemon::bind(orgs.clone(), &config).await?;
        let scheme = if daemon.tls() { "https" } else { "http" };
        let url = format!("{scheme}://{}", daemon.local_addr()?);
        // Tells the CLI on this data dir where to send its commands.
        let file = data_dir(global)?.join(super::DAEMON_FILE);
        std::fs::write(
            &file,
            serde_json::json!({ "url": url, "pid": std::process::id(), "org": orgs[0].org() })
                .to_string(),
        )?;
        for org in &orgs {
            let first = org.clone();
            let bootstrap =
                tokio::task::spawn_blocking(move || first.bootstrap_admin()).await??;
            if let Some((name, code)) = bootstrap {
                writeln!(
                    out,
                    "no admin of org {} can sign in yet: {name} enrols at {url}/enrol#{code} (single use, valid {} hours)",
                    org.org(),
                    crate::accounts::ENROLMENT_HOURS
                )?;
            }
        }
        writeln!(
            out,
            "clancy serving org{} {} of {} on {url}",
            if orgs.len() == 1 { "" } else { "s" },
            orgs.iter().map(|o| o.org()).collect::<Vec<_>>().join(", "),
            data_dir(global)?.display(),
        )?;
        out.flush()?;
        let served = daemon.run(stopped()).await;
        let _ = std::fs::remove_file(&file);
        served?;
        anyhow::Ok(())
    });
    // The runtime goes first, then the org (its engine owns a runtime of
    // its own, which may not be dropped inside an async context). A task
    // still running after the drain is left to end with the process.
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(orgs);
    served?;
    // Said if anyone still listens; a closed stdout does not make a clean
    // stop a failure.
    let _ = writeln!(out, "clancy stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stopped() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
