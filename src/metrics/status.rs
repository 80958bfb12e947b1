//! The status page's data: `GET /api/v1/status` (JSON, read-only) and the
//! `GET /healthz` verdict, both served by [`super::http`].
//!
//! Nothing is recomputed here: the answers and the reasons come from
//! [`Control::explain`](crate::control::Control::explain), the masters from
//! [`Control::status`](crate::control::Control::status) (what `srvctl
//! explain` and `srvctl status` print), the NOTIFY state from the DNS
//! layer's [`NotifyStatus`](crate::dns::notify::NotifyStatus) board.

use serde::Serialize;

use super::Sources;
use crate::control::proto::{MasterStatus, MasterVerdict, NameExplain, SerialStoreReport};
use crate::dns::notify::SecondaryNotify;
use std::sync::atomic::Ordering::Relaxed;

/// `GET /api/v1/status`. Times are unix seconds (UTC), latencies
/// milliseconds; fields are only ever added (documented in docs/metrics.md).
#[derive(Debug, Clone, Serialize)]
pub struct StatusDoc {
    /// srvd's version.
    pub version: &'static str,
    /// The zone origin, with the trailing dot.
    pub zone: String,
    /// The SOA serial of the answers below.
    pub serial: u32,
    /// TTL of the SRV records, seconds.
    pub ttl: u32,
    /// When this srvd started.
    pub started: u64,
    /// When this document was made.
    pub now: u64,
    /// What `/healthz` says.
    pub serving: Serving,
    /// Per site (config order), then the site-less names at the apex
    /// (`site: null`): the answer of every role, in answer order, with every
    /// master's verdict.
    pub sites: Vec<SiteAnswers>,
    /// Every registered master with each role's state, reason, since, last
    /// check and latency; drained and weight.
    pub masters: Vec<MasterStatus>,
    /// The single active CA and the one that takes over if it goes down.
    pub ca: CaStatus,
    /// Trouble storing the SOA serial in state_dir since start, if any.
    pub serial_store: Option<SerialStoreReport>,
    /// NOTIFY state of every `[[secondary]]` with `notify = true`.
    pub notify: Vec<SecondaryNotify>,
}

/// Whether srvd serves the zone now (the `/healthz` verdict).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Serving {
    /// True while the zone is served (`/healthz` answers 200).
    pub ok: bool,
    /// Why not, when `ok` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// UDP worker threads answering now.
    pub udp_workers: u64,
}

/// The answers agents of one site get, per role.
#[derive(Debug, Clone, Serialize)]
pub struct SiteAnswers {
    /// None for the site-less names at the zone apex.
    pub site: Option<String>,
    /// One per role, as `srvctl explain` shows it.
    pub names: Vec<NameExplain>,
}

/// The single active CA and the one that would take over.
#[derive(Debug, Clone, Serialize)]
pub struct CaStatus {
    /// "normal", "all-down" (no CA up: the first non-drained one is kept
    /// published), or "no-masters".
    pub mode: String,
    /// "host:port" of the CA in the answers.
    pub active: Option<String>,
    /// The first healthy CA after it in ca_order (takes over if it fails).
    pub standby: Option<String>,
    /// Every CA in ca_order order, with its verdict.
    pub order: Vec<MasterVerdict>,
}

/// Why srvd does not serve the zone now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotServing {
    /// The shutdown token has fired.
    #[error("shutting down")]
    ShuttingDown,
    /// No UDP worker thread is running.
    #[error("no UDP worker is answering DNS queries")]
    NoUdpWorkers,
}

/// The `/healthz` verdict: Ok(serial) while DNS queries are answered from
/// the zone (the UDP workers run and no stop has begun).
pub fn healthz(s: &Sources) -> Result<u32, NotServing> {
    if s.shutdown.is_cancelled() {
        return Err(NotServing::ShuttingDown);
    }
    if s.dns.transport.udp_workers.load(Relaxed) == 0 {
        return Err(NotServing::NoUdpWorkers);
    }
    Ok(s.publisher.snapshot().serial)
}

/// Builds the status document from the live structures.
pub fn document(s: &Sources) -> StatusDoc {
    // explain(None) cannot fail (it only refuses unknown site names).
    let explain =
        s.control.explain(None).unwrap_or_else(|_| crate::control::proto::ExplainReport { serial: 0, ttl: 0, names: vec![], client: None });
    let status = s.control.status();
    let zone = s.publisher.snapshot().origin.to_string();
    let mut sites: Vec<SiteAnswers> = Vec::new();
    for n in &explain.names {
        match sites.last_mut() {
            Some(last) if last.site == n.site => last.names.push(n.clone()),
            _ => sites.push(SiteAnswers { site: n.site.clone(), names: vec![n.clone()] }),
        }
    }
    // The CA answer is the same on every name (single active CA): take the
    // site-less one, else any.
    let ca_name = explain.names.iter().filter(|n| n.role == "ca").min_by_key(|n| n.site.is_some());
    let ca = match ca_name {
        Some(n) => CaStatus {
            mode: n.mode.clone(),
            active: n.masters.iter().find(|m| m.included).map(|m| m.master.clone()),
            standby: n.masters.iter().find(|m| m.verdict == "standby-ca").map(|m| m.master.clone()),
            order: n.masters.clone(),
        },
        None => CaStatus { mode: "no-masters".into(), active: None, standby: None, order: vec![] },
    };
    let serving = match healthz(s) {
        Ok(_) => Serving { ok: true, reason: None, udp_workers: s.dns.transport.udp_workers.load(Relaxed) },
        Err(e) => Serving { ok: false, reason: Some(e.to_string()), udp_workers: s.dns.transport.udp_workers.load(Relaxed) },
    };
    StatusDoc {
        version: env!("CARGO_PKG_VERSION"),
        zone,
        serial: explain.serial,
        ttl: explain.ttl,
        started: status.started,
        now: status.now,
        serving,
        sites,
        masters: status.masters,
        ca,
        serial_store: status.serial_store,
        notify: s.notify.snapshot(),
    }
}

/// The document as JSON (compact: the page fetches it every 2 s, and its
/// size grows with sites x masters).
pub fn render_json(s: &Sources) -> String {
    // Serialising plain structs of strings and numbers does not fail.
    serde_json::to_string(&document(s)).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}
