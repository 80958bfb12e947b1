//! The srvd daemon: parse arguments, set up logging, run.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use srvd::cli::srvd_args::{LogFormat, SrvdArgs as Args};
use srvd::dns::server::DnsSockets;
use srvd::input::config::Config;
use srvd::input::error::InputError;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => return fail(args.log_format, &format!("invalid configuration: {e}")),
    };
    if args.check_config {
        for w in config.warnings() {
            eprintln!("srvd: warning: {w}");
        }
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
        Err(e) => return fail(args.log_format, &format!("cannot start the async runtime: {e}")),
    };
    let result = rt.block_on(run(config));
    // The daemon has waited for its tasks (and for srvctl changes in
    // progress) up to its shutdown deadline; do not wait again for a
    // blocking job left behind (a check stuck in a system call).
    rt.shutdown_timeout(EXIT_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(args.log_format, &format!("{e:#}")),
    }
}

/// A fatal error: one plain line on stderr, or one JSON log line with
/// `--log-format json` (so that a log shipper sees why srvd stopped).
fn fail(format: LogFormat, msg: &str) -> ExitCode {
    match format {
        LogFormat::Text => eprintln!("srvd: {msg}"),
        LogFormat::Json => tracing::error!(error = msg, "srvd cannot run"),
    }
    ExitCode::from(1)
}

/// Log lines go to stderr (the journal under systemd): colours only when
/// stderr is a terminal, so that files and the journal carry no escape
/// codes; `json` writes one object per line for log shippers.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SRVD_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
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
