//! The srvd daemon: parse arguments, set up logging, run.

use srvd::input::error::InputError;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use srvd::dns::server::DnsSockets;
use srvd::input::config::Config;
use tokio_util::sync::CancellationToken;

/// Authoritative DNS for Puppet SRV records, with health-checked failover.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML). Without it, srvd runs its embedded example
    /// (zone puppet.example.test. on 127.0.0.1:5353).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Validate the config, zone file and registry, then exit (0 valid, 1 invalid).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SRVD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("srvd: invalid configuration: {e}");
            return ExitCode::from(1);
        }
    };
    if args.check_config {
        return match srvd::zone::publish::Inputs::load(config) {
            Ok(_) => {
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("srvd: invalid configuration: {e}");
                ExitCode::from(1)
            }
        };
    }
    srvd::daemon::raise_fd_limit();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("srvd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(run(config));
    // The daemon has waited for its tasks (and for srvctl changes in
    // progress) up to its shutdown deadline; do not wait again for a
    // blocking job left behind (a check stuck in a system call).
    rt.shutdown_timeout(EXIT_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("srvd: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// After the stop, how long blocking jobs still running may delay the exit.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

fn load(args: &Args) -> Result<Config, InputError> {
    match &args.config {
        Some(p) => Config::load(p),
        None => srvd::daemon::example_config(),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Validate everything before taking the sockets.
    srvd::zone::publish::Inputs::load(config.clone()).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let sockets = DnsSockets::bind(&config.server.listen).await?;
    // Handlers in place before anything is served, so that a SIGTERM right
    // after start is a clean stop rather than the default (death).
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, deadline = ?srvd::daemon::SHUTDOWN_DEADLINE, "shutting down");
        token.cancel();
        // A second signal: the operator does not want to wait.
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::warn!("second signal: exiting at once");
        std::process::exit(1);
    });
    srvd::daemon::run(config, sockets, shutdown).await?;
    Ok(())
}
