//! The control plane: srvctl talks to the daemon over a Unix socket
//! (`server.control_socket`), one JSON request per line, one JSON response
//! per line ([`proto`]).
//!
//! Changes are serialised: each one re-reads the registry file, edits it with
//! [`crate::input::regedit`] (keeping comments), validates the whole result, writes
//! it atomically, and only then applies it to the [`Publisher`] and
//! acknowledges. A refused change writes nothing and applies nothing.

pub mod client;
mod edit;
mod peer;
pub mod proto;
mod report;
pub mod server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::health::HealthBoard;
use crate::health::{Health, health_of};
use crate::input::registry::{MasterKey, Role};
use crate::zone::publish::Publisher;
use proto::{Failure, Reply, Request, Response, WaitOutcome};

/// How long `drain --wait-idle` waits by default: a long catalog
/// compilation can take minutes.
pub const DEFAULT_IDLE_WAIT: Duration = Duration::from_secs(600);

/// How often `drain --wait-idle` looks again.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// The wait that follows a change.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// add-master --wait: until the first check has a result.
    Checked(Duration),
    /// drain --wait-idle: until the master is idle.
    Idle(Duration),
}

/// How long `add-master --wait` waits by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// The daemon side of the control socket, shared by every connection (and
/// by the SIGHUP handler, which calls [`Control::reload`]).
pub struct Control {
    publisher: Arc<Publisher>,
    started: SystemTime,
    /// Held for the whole of a change or reload: they are serialised.
    edit: Mutex<EditState>,
    /// When each drained master was drained (for "safe to stop").
    drains: Mutex<HashMap<MasterKey, SystemTime>>,
    /// The health checker's board (state, since, last check), once it runs.
    health: OnceLock<Arc<HealthBoard>>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    /// Unix seconds of the last successful reload; 0: none yet.
    last_reload: AtomicU64,
}

/// Reloads since start (srvctl reload and SIGHUP), for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadCounts {
    /// Reloads applied.
    pub ok: u64,
    /// Reloads refused (an invalid file; the old state kept serving).
    pub failed: u64,
    /// When the last reload was applied, unix seconds (0: never).
    pub last_ok_unix: u64,
    /// When the daemon started, unix seconds.
    pub started_unix: u64,
}

struct EditState {
    /// The registry file as srvd last read or wrote it (None: no file). A
    /// change is refused when the file on disk differs: someone edited it
    /// by hand and has not run `srvctl reload` yet.
    text: Option<String>,
}

impl Control {
    /// Starts from the registry text the publisher's inputs were parsed from.
    pub fn new(publisher: Arc<Publisher>) -> Arc<Control> {
        let started = SystemTime::now();
        let (text, drained): (_, Vec<MasterKey>) = {
            let core = publisher.lock();
            let reg = &core.inputs.registry;
            (core.inputs.registry_text.clone(), reg.masters.iter().filter(|m| m.drained).map(|m| m.key()).collect())
        };
        Arc::new(Control {
            publisher,
            started,
            edit: Mutex::new(EditState { text }),
            // Drained before this start: answers naming them were given
            // before now at the latest.
            drains: Mutex::new(drained.into_iter().map(|k| (k, started)).collect()),
            health: OnceLock::new(),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            last_reload: AtomicU64::new(0),
        })
    }

    /// Lets `status`, `explain` and `add-master --wait` show check results.
    pub fn set_health_board(&self, board: Arc<HealthBoard>) {
        let _ = self.health.set(board);
    }

    /// Reloads since start.
    pub fn reload_counts(&self) -> ReloadCounts {
        ReloadCounts {
            ok: self.reloads.load(Relaxed),
            failed: self.reload_failures.load(Relaxed),
            last_ok_unix: self.last_reload.load(Relaxed),
            started_unix: unix(self.started),
        }
    }

    pub(crate) fn count_reload(&self, ok: bool) {
        if ok {
            self.reloads.fetch_add(1, Relaxed);
            self.last_reload.store(unix(SystemTime::now()), Relaxed);
        } else {
            self.reload_failures.fetch_add(1, Relaxed);
        }
    }

    /// Trouble storing the serial, if any since start (for `srvctl status`).
    pub fn serial_store_report(&self) -> Option<proto::SerialStoreReport> {
        let s = self.publisher.serial_store();
        (s.failures > 0 || s.behind).then_some(proto::SerialStoreReport { failures: s.failures, error: s.error, behind: s.behind })
    }

    /// The publisher the control side changes and reads (the daemon's one).
    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.publisher
    }

    fn edit_state(&self) -> MutexGuard<'_, EditState> {
        self.edit.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drains(&self) -> MutexGuard<'_, HashMap<MasterKey, SystemTime>> {
        self.drains.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one request. Changes run on a blocking thread (file writes
    /// and fsync) and complete even if the caller goes away.
    pub async fn handle(self: &Arc<Self>, req: Request, peer_uid: Option<u32>) -> Response {
        match req {
            Request::List => Response::Ok(Reply::Masters(self.list())),
            Request::Status => Response::Ok(Reply::Status(self.status())),
            Request::Explain(a) => match self.explain_for(a.site.as_deref(), a.client) {
                Ok(r) => Response::Ok(Reply::Explain(r)),
                Err(f) => Response::Refused(f),
            },
            Request::Reload(args) => {
                let this = self.clone();
                let r = tokio::task::spawn_blocking(move || (this.reload_with(args.force), peer::user_name(peer_uid))).await;
                let (resp, user) = r.unwrap_or_else(|e| (Response::Error(Failure::new(format!("reload failed: {e}"))), None));
                log_outcome("reload", "-", (peer_uid, user.as_deref()), &resp);
                resp
            }
            change => {
                let this = self.clone();
                let wait = match &change {
                    Request::AddMaster(a) if a.wait => Some(Wait::Checked(a.wait_timeout_ms.map_or(DEFAULT_WAIT, Duration::from_millis))),
                    Request::Drain(d) if d.wait_idle => {
                        Some(Wait::Idle(d.wait_timeout_ms.map_or(DEFAULT_IDLE_WAIT, Duration::from_millis)))
                    }
                    _ => None,
                };
                let what = change_target(&change);
                let name = change.name();
                let r = tokio::task::spawn_blocking(move || (this.change(&change), peer::user_name(peer_uid))).await;
                let (resp, user) = r.unwrap_or_else(|e| (Response::Error(Failure::new(format!("change failed: {e}"))), None));
                log_outcome(name, &what, (peer_uid, user.as_deref()), &resp);
                match (resp, wait) {
                    (Response::Ok(Reply::Change(mut rep)), Some(wait)) => {
                        let Ok(host) = crate::input::names::parse_absolute(&rep.master.master.host) else {
                            return Response::Ok(Reply::Change(rep));
                        };
                        let key = MasterKey { host, port: rep.master.master.port };
                        rep.wait = Some(self.wait_for(&key, wait).await);
                        rep.master = self.master_status(&key).unwrap_or(rep.master);
                        Response::Ok(Reply::Change(rep))
                    }
                    (resp, _) => resp,
                }
            }
        }
    }

    /// Runs one wait of a change.
    pub(crate) async fn wait_for(&self, key: &MasterKey, wait: Wait) -> WaitOutcome {
        match wait {
            Wait::Checked(t) => self.wait_checked(key, t).await,
            Wait::Idle(t) => self.wait_idle(key, t).await,
        }
    }

    /// Waits until a drained master is idle (see [`Control::idle_state`]);
    /// on timeout, the detail says what is still pending.
    async fn wait_idle(&self, key: &MasterKey, timeout: Duration) -> WaitOutcome {
        let deadline = Instant::now() + timeout;
        loop {
            let pending = match self.idle_state(key) {
                Ok(done) => return done,
                Err(p) => p,
            };
            if Instant::now() >= deadline {
                return WaitOutcome {
                    outcome: "timeout".into(),
                    detail: format!("not idle after {}: {pending}", crate::input::names::fmt_duration(timeout)),
                };
            }
            tokio::time::sleep_until(deadline.min(Instant::now() + IDLE_POLL)).await;
        }
    }

    /// Whether a drained master is idle: out of every answer for a full
    /// TTL, and JRuby figures fetched after that show none borrowed.
    /// `Err` says what is still pending.
    fn idle_state(&self, key: &MasterKey) -> Result<WaitOutcome, String> {
        let (drained, ttl, check) = {
            let core = self.publisher.lock();
            let Some(m) = core.inputs.registry.get(key) else {
                return Ok(WaitOutcome { outcome: "removed".into(), detail: format!("{key} was removed meanwhile") });
            };
            (m.drained, core.inputs.config.zone.ttl, m.check)
        };
        if !drained {
            return Ok(WaitOutcome { outcome: "undrained".into(), detail: format!("{key} was undrained meanwhile") });
        }
        let snap = self.publisher.snapshot();
        if snap.answers.iter().any(|a| a.records.iter().any(|r| *r.target == key.host && r.port == key.port)) {
            return Err("still in an answer".into());
        }
        let since = self.drains().get(key).copied().unwrap_or_else(SystemTime::now);
        let expire = since + Duration::from_secs(u64::from(ttl));
        let now = SystemTime::now();
        if now < expire {
            let left = expire.duration_since(now).unwrap_or_default();
            return Err(format!("cached answers may name it for {} more (zone ttl {ttl}s)", crate::input::names::fmt_duration(left)));
        }
        if check == crate::input::registry::CheckKind::Tcp {
            return Ok(WaitOutcome {
                outcome: "idle".into(),
                detail: format!("out of every answer for {ttl}s; a tcp-checked master has no JRuby figures, only the TTL was waited for"),
            });
        }
        let Some(j) = self.jrubies(key) else { return Err("no JRuby figures yet".into()) };
        if let Some(e) = &j.error {
            return Err(format!("cannot read its JRuby figures: {e}"));
        }
        let fetched = UNIX_EPOCH + Duration::from_millis(j.at_unix_ms);
        match j.last {
            Some(m) if fetched >= expire && m.borrowed == 0 => Ok(WaitOutcome {
                outcome: "idle".into(),
                detail: format!("out of every answer for {ttl}s and no JRuby borrowed ({} free of {})", m.free, m.total),
            }),
            Some(m) if fetched >= expire => Err(format!("{} of {} JRubies borrowed (agent runs in progress)", m.borrowed, m.total)),
            _ => Err("waiting for JRuby figures fetched after the answers expired".into()),
        }
    }

    /// Waits until every role of a master has left `Pending`.
    async fn wait_checked(&self, key: &MasterKey, timeout: Duration) -> WaitOutcome {
        let deadline = Instant::now() + timeout;
        // Subscribe before looking, so no update is missed in between.
        let mut generation = self.publisher.generation();
        loop {
            if let Some(outcome) = self.wait_state(key) {
                return outcome;
            }
            match tokio::time::timeout_at(deadline, generation.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return WaitOutcome { outcome: "timeout".into(), detail: "srvd is shutting down".into() },
                Err(_) => {
                    return WaitOutcome {
                        outcome: "timeout".into(),
                        detail: format!("no health check result within {}", crate::input::names::fmt_duration(timeout)),
                    };
                }
            }
        }
    }

    fn wait_state(&self, key: &MasterKey) -> Option<WaitOutcome> {
        let core = self.publisher.lock();
        let Some(m) = core.inputs.registry.get(key) else {
            return Some(WaitOutcome { outcome: "removed".into(), detail: format!("{key} was removed meanwhile") });
        };
        let states: Vec<(Role, Health)> = m.roles.iter().map(|&r| (r, health_of(&core.health, key, r))).collect();
        drop(core);
        if let Some((role, _)) = states.iter().find(|(_, h)| *h == Health::Down) {
            let detail = report::last_check_detail(self, key, *role).unwrap_or_else(|| "health check failed".into());
            return Some(WaitOutcome { outcome: "down".into(), detail: format!("role {role}: {detail}") });
        }
        if states.iter().all(|(_, h)| *h == Health::Up) {
            return Some(WaitOutcome { outcome: "published".into(), detail: "first health check passed".into() });
        }
        None
    }
}

fn change_target(req: &Request) -> String {
    match req {
        Request::AddMaster(a) => a.host.clone(),
        Request::RemoveMaster(t) | Request::Undrain(t) => t.host.clone(),
        Request::Drain(d) => d.host.clone(),
        Request::SetWeight(s) => format!("{} weight={}", s.host, s.weight),
        _ => "-".into(),
    }
}

/// The one log line of each srvctl change, with who made it (uid from SO_PEERCRED, and its user name).
fn log_outcome(command: &str, target: &str, (uid, user): (Option<u32>, Option<&str>), resp: &Response) {
    match resp {
        Response::Ok(_) => tracing::info!(command, target, uid, user, "srvctl change applied"),
        Response::Refused(f) => tracing::info!(command, target, uid, user, reason = %f.message, "srvctl change refused"),
        Response::Error(f) => tracing::error!(command, target, uid, user, error = %f.message, "srvctl change failed"),
    }
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
