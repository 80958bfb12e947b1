//! The srvd daemon: parse arguments, set up logging, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use srvd::config::{self, Config};
use srvd::server::DnsSockets;
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
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SRVD_LOG").unwrap_or_else(|_| "info,hickory_server=warn".into()))
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
        return match srvd::publish::Inputs::load(config) {
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
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("srvd: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load(args: &Args) -> Result<Config, config::ConfigError> {
    match &args.config {
        Some(p) => Config::load(p),
        None => srvd::daemon::example_config(),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Validate everything before taking the sockets.
    srvd::publish::Inputs::load(config.clone()).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let sockets = DnsSockets::bind(&config.server.listen).await?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        token.cancel();
    });
    srvd::daemon::run(config, sockets, shutdown).await?;
    Ok(())
}
