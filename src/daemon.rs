//! Wiring: load the inputs, publish the first snapshot, start the DNS side
//! (and the health checker and control socket), stop everything on one token.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::{self, Control};
use crate::dns::server::{self, DnsSockets};
use crate::dns::stats::DnsStats;
use crate::health::HealthStates;
use crate::input::config::Config;
use crate::input::error::InputError;
use crate::metrics;
use crate::zone::publish::{Inputs, Publisher};
use crate::zone::serial::StateDir;

/// Why srvd could not start (or run).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// An input file is invalid (config, zone file, registry); names file, key and reason.
    #[error("{0}")]
    Config(#[from] InputError),
    /// `server.state_dir` could not be prepared.
    #[error("state_dir {dir}: {source}")]
    State {
        /// The directory.
        dir: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The metrics address could not be listened on.
    #[error("server.metrics {addr}: cannot listen: {source}")]
    Metrics {
        /// The `server.metrics` address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another I/O failure: the control socket, signal handling, writing the example files.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running daemon: its publisher, the addresses it serves and its tasks.
pub struct Running {
    /// The publisher of the served zone; tests read inputs and snapshots through it.
    pub publisher: Arc<Publisher>,
    /// The DNS addresses actually bound (of the UDP sockets, port 0 resolved).
    pub dns_addrs: Vec<std::net::SocketAddr>,
    /// Where `GET /metrics` is served (`server.metrics`, port 0 resolved).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The token every task stops on (the one given to [`start`]).
    pub shutdown: CancellationToken,
    /// The control socket's side (srvctl); `reload` is also what SIGHUP does.
    pub control: Arc<Control>,
    /// The health checker's last check of every (master, role), for
    /// `srvctl status` (see [`crate::health`]).
    pub health: Arc<crate::health::HealthBoard>,
    tasks: Tasks,
}

/// How long a stop waits for the tasks after the shutdown token fired; then
/// srvd logs what is still running and exits anyway (state is persisted as
/// it changes, and a started change is waited for first, see below).
pub const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a stop waits for srvctl changes already started (a registry
/// write and fsync, a reload) to be persisted; only a stuck disk takes long.
pub const CHANGE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Every task, by the part of srvd it belongs to (so that a stop that
/// overruns its deadline can say which part did not stop).
struct Tasks {
    /// srvctl changes in flight: waited for first, they persist state.
    changes: TaskTracker,
    /// (name, tasks): the DNS side (and any task spawned on the general tracker), health, control, notify, metrics.
    groups: Vec<(&'static str, TaskTracker)>,
    /// Stops the last group (the metrics listener), which keeps answering
    /// during a stop (`/healthz` says 503 then) until the others stopped.
    stop_last: CancellationToken,
}

impl Tasks {
    /// Waits for the in-flight changes, then (until [`SHUTDOWN_DEADLINE`]
    /// after `begun`) for the rest.
    async fn wait(&self, begun: tokio::time::Instant) {
        self.changes.close();
        for (_, t) in &self.groups {
            t.close();
        }
        if !self.changes.is_empty() {
            tracing::info!(changes = self.changes.len(), "waiting for srvctl changes in progress to be written");
        }
        if tokio::time::timeout(CHANGE_DEADLINE, self.changes.wait()).await.is_err() {
            tracing::error!(changes = self.changes.len(), deadline = ?CHANGE_DEADLINE, "srvctl changes still not written; exiting anyway");
        }
        let all = async {
            for (i, (_, t)) in self.groups.iter().enumerate() {
                if i + 1 == self.groups.len() {
                    self.stop_last.cancel();
                }
                t.wait().await;
            }
        };
        let in_time = tokio::time::timeout_at(begun + SHUTDOWN_DEADLINE, all).await.is_ok();
        self.stop_last.cancel();
        if !in_time {
            let left: Vec<String> =
                self.groups.iter().filter(|(_, t)| !t.is_empty()).map(|(n, t)| format!("{n}: {} tasks", t.len())).collect();
            tracing::warn!(deadline = ?SHUTDOWN_DEADLINE, still_running = %left.join(", "), "tasks did not stop in time; exiting anyway");
        } else {
            tracing::info!(took = ?begun.elapsed(), "stopped");
        }
    }
}

impl Running {
    /// Stops every task and waits for them: for the srvctl changes in
    /// progress, then for the rest until [`SHUTDOWN_DEADLINE`] (what is
    /// still running then is logged and left behind).
    pub async fn stop(self) {
        let begun = tokio::time::Instant::now();
        self.shutdown.cancel();
        self.tasks.wait(begun).await;
    }

    /// Waits until the shutdown token fires, then like [`Running::stop`].
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.tasks.wait(tokio::time::Instant::now()).await;
    }
}

/// Loads everything and starts serving on the given sockets.
pub async fn start(config: Config, sockets: DnsSockets, shutdown: CancellationToken) -> Result<Running, DaemonError> {
    start_with(config, sockets, shutdown, None).await
}

/// Like [`start`], with the health checks made by `checks` instead of the
/// network checks of `[health]` (tests use checks they script).
pub async fn start_with(
    config: Config,
    sockets: DnsSockets,
    shutdown: CancellationToken,
    checks: Option<Arc<dyn crate::health::CheckFactory>>,
) -> Result<Running, DaemonError> {
    // The serial files are cleaned up by StateDir::new, the others here.
    for p in [&config.server.registry, &config.server.state_dir.join(crate::health::store::FILE_NAME)] {
        let n = crate::input::fsutil::remove_stale_temps(p);
        if n > 0 {
            tracing::info!(file = %p.display(), removed = n, "removed temp files left by an interrupted write");
        }
    }
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let inputs = Inputs::load(config)?;
    let cfg = inputs.config.clone();
    // Problems with state_dir are logged, never fatal (see Publisher::new).
    let state = StateDir::new(&cfg.server.state_dir);
    // Health checks (DESIGN.md §6): the TLS settings must load, and the last
    // known states come from state_dir (no state: up until the first check).
    let network_checks = crate::health::NetworkChecks::new(&cfg.health);
    let stored = crate::health::Stored::load(&cfg.server.state_dir);
    let health: HealthStates = stored.states_for(&inputs.registry);
    let publisher = Publisher::new(inputs, health, Some(state))
        .map_err(|e| DaemonError::State { dir: cfg.server.state_dir.display().to_string(), source: e })?;
    // Bound before any task starts, so a taken port fails the start cleanly.
    let metrics_listener = match cfg.server.metrics {
        Some(addr) => Some(server::listen_tcp(addr).map_err(|source| DaemonError::Metrics { addr, source })?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let tracker = TaskTracker::new();
    let factory: Arc<dyn crate::health::CheckFactory> = match checks {
        Some(f) => f,
        None => Arc::new(network_checks),
    };
    let (health_tasks, control_tasks, changes, notify_tasks, metrics_tasks) =
        (TaskTracker::new(), TaskTracker::new(), TaskTracker::new(), TaskTracker::new(), TaskTracker::new());
    let network = Some(crate::health::netwatch::watch(&health_tasks, shutdown.clone()));
    let health_opts = crate::health::Options { factory, stored, jitter: crate::health::DEFAULT_JITTER, network };
    // The metrics listener stops last (see Tasks::stop_last): during a stop
    // it answers /healthz with 503 until the DNS side has stopped.
    let metrics_stop = CancellationToken::new();
    let health_board = crate::health::spawn(publisher.clone(), health_opts, &health_tasks, shutdown.clone());
    let control_socket = control::server::bind(&cfg.server.control_socket)?;
    let control = Control::new(publisher.clone());
    control.set_health_board(health_board.clone());
    control::server::spawn(control_socket, control.clone(), &control_tasks, &changes, shutdown.clone());
    let dns_addrs = sockets.local_addrs();
    let dns_stats = Arc::new(DnsStats::new());
    let served = crate::dns::served::ServedZone::attach(&publisher);
    let masters = publisher.lock().inputs.registry.masters.len();
    server::spawn(sockets, served, dns_stats.clone(), &cfg.server.tcp, masters, &tracker, shutdown.clone());
    let notify_status = crate::dns::notify::NotifyStatus::new();
    crate::dns::notify::spawn(publisher.clone(), dns_addrs.clone(), notify_status.clone(), &notify_tasks, shutdown.clone());
    if let Some(listener) = metrics_listener {
        let sources = metrics::Sources {
            publisher: publisher.clone(),
            dns: dns_stats,
            health: health_board.clone(),
            control: control.clone(),
            notify: notify_status,
            shutdown: shutdown.clone(),
        };
        metrics::http::spawn(listener, Arc::new(sources), &metrics_tasks, metrics_stop.clone());
        tracing::info!(addr = ?metrics_addr, "serving metrics at /metrics, the status page at /, /healthz");
    }
    tracing::info!(zone = %cfg.zone.origin, serial = publisher.snapshot().serial, addrs = ?dns_addrs, "serving");
    let groups =
        vec![("dns", tracker), ("health", health_tasks), ("control", control_tasks), ("notify", notify_tasks), ("metrics", metrics_tasks)];
    let tasks = Tasks { changes, groups, stop_last: metrics_stop };
    Ok(Running { publisher, dns_addrs, metrics_addr, shutdown, control, health: health_board, tasks })
}

/// Runs until `shutdown` fires; SIGHUP reloads config, zone file and
/// registry (like `srvctl reload`; an invalid file keeps the old state).
pub async fn run(config: Config, sockets: DnsSockets, shutdown: CancellationToken) -> Result<(), DaemonError> {
    // Before anything is served: a SIGHUP sent as soon as srvctl answers
    // must reload, not kill srvd (the default action of SIGHUP).
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let running = start(config, sockets, shutdown).await?;
    // systemd Type=notify: sockets bound, first snapshot served (no-op without NOTIFY_SOCKET).
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot send READY=1 to systemd (NOTIFY_SOCKET)");
    }
    loop {
        tokio::select! {
            _ = running.shutdown.cancelled() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                let control = running.control.clone();
                // The outcome is logged by reload itself.
                let _ = tokio::task::spawn_blocking(move || control.reload()).await;
            }
        }
    }
    running.wait().await;
    Ok(())
}

/// The embedded example config, materialised in a scratch directory
/// (`$TMPDIR/srvd-example`) so that its registry can be edited with srvctl.
/// Existing files there (an edited registry) are kept.
pub fn example_config() -> Result<Config, InputError> {
    use crate::input::config::{EXAMPLE_CONFIG, EXAMPLE_REGISTRY, EXAMPLE_ZONE_FILE};
    let dir = std::env::temp_dir().join("srvd-example");
    let path = dir.join("example.toml");
    let io = |e: std::io::Error| InputError::new(&dir, "-", format!("cannot prepare the example directory: {e}"));
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::write(&path, EXAMPLE_CONFIG).map_err(io)?;
    std::fs::write(dir.join("example.zone"), EXAMPLE_ZONE_FILE).map_err(io)?;
    let reg = dir.join("example-masters.toml");
    if !reg.exists() {
        std::fs::write(&reg, EXAMPLE_REGISTRY).map_err(io)?;
    }
    Config::parse(EXAMPLE_CONFIG, &path, &dir)
}

/// Raises the soft limit on open files to the hard limit: every https
/// master keeps a connection open, and DNS over TCP needs sockets too, so
/// the common soft default of 1024 is too low for a large estate. DNS over
/// TCP is then capped well below the limit
/// ([`crate::dns::server::default_tcp_max_connections`]), so that clients can
/// never take the descriptors health checks and srvctl need.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                tracing::warn!(soft = lim.rlim_cur, hard = lim.rlim_max, "cannot raise the open-files limit");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_stop_waits_for_changes_then_for_the_rest_until_the_deadline() {
        // A change still writing (7 s on a slow disk) is waited for; a stuck
        // task is not waited for beyond the deadline.
        let (changes, stuck, done) = (TaskTracker::new(), TaskTracker::new(), TaskTracker::new());
        changes.spawn(tokio::time::sleep(Duration::from_secs(7)));
        stuck.spawn(std::future::pending::<()>());
        done.spawn(tokio::time::sleep(Duration::from_millis(10)));
        let stop_last = CancellationToken::new();
        let tasks = Tasks {
            changes: changes.clone(),
            groups: vec![("done", done.clone()), ("stuck", stuck.clone())],
            stop_last: stop_last.clone(),
        };
        let begun = Instant::now();
        tasks.wait(begun).await;
        assert_eq!(begun.elapsed(), Duration::from_secs(7));
        assert!(changes.is_empty() && done.is_empty());
        assert_eq!(stuck.len(), 1);
        assert!(stop_last.is_cancelled(), "the last group is stopped even when the others overran");

        // A quick change: the stuck task gets until the deadline, no more.
        let (changes, stuck) = (TaskTracker::new(), TaskTracker::new());
        changes.spawn(tokio::time::sleep(Duration::from_secs(1)));
        stuck.spawn(std::future::pending::<()>());
        let tasks = Tasks { changes, groups: vec![("stuck", stuck)], stop_last: CancellationToken::new() };
        let begun = Instant::now();
        tasks.wait(begun).await;
        assert_eq!(begun.elapsed(), SHUTDOWN_DEADLINE);
    }
}
