//! Prometheus metrics (`server.metrics = "addr:port"`): `GET /metrics` in
//! the text exposition format over plain HTTP, see docs/metrics.md. The
//! same listener serves the status page (`GET /`, [`status`]'s JSON at
//! `/api/v1/status`) and `GET /healthz`.
//!
//! ```text
//!  UDP workers / TCP handler ── counters::DnsStats (sharded relaxed atomics)
//!  health probes ────────────── HealthBoard (states, check/transition counts)
//!  control (reload, SIGHUP) ─── Control::reload_counts
//!  publisher ────────────────── serial, registry, published health
//!                  └──────────> render() on each scrape ──> http
//! ```
//!
//! Nothing is computed until a scrape asks: the gauges are read from the
//! live structures, so the hot DNS path only ever increments counters.

pub mod http;
pub mod status;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::control::Control;
use crate::dns::notify::NotifyStatus;
use crate::dns::stats::{CloseReason, DnsStats, Outcome, Path, TRANSPORTS, transport_str};
use crate::health::HealthBoard;
use crate::health::{Health, health_of};
use crate::input::registry::Role;
use crate::zone::publish::Publisher;
use std::sync::atomic::Ordering::Relaxed;
use tokio_util::sync::CancellationToken;

/// Everything a scrape reads.
pub struct Sources {
    /// The served serial, the registry and published health (per-master gauges).
    pub publisher: Arc<Publisher>,
    /// DNS answer and transport counters.
    pub dns: Arc<DnsStats>,
    /// Health checks, transitions and the state of every (master, role).
    pub health: Arc<HealthBoard>,
    /// Reload and srvctl counters.
    pub control: Arc<Control>,
    /// What NOTIFY did for each secondary.
    pub notify: Arc<NotifyStatus>,
    /// srvd's shutdown token: once it fires, `/healthz` says 503.
    pub shutdown: CancellationToken,
}

/// The states `srvd_masters` reports, as in `srvctl status`.
const STATES: [&str; 4] = ["up", "down", "pending", "unchecked"];

/// Writes the text exposition format (version 0.0.4).
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"");
                escape_into(&mut self.0, v);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Renders every metric. Takes the publisher's lock briefly (no await).
pub fn render(s: &Sources) -> String {
    let mut o = Out(String::with_capacity(8 * 1024));

    o.family("srvd_build_info", "gauge", "Version of the running srvd; always 1.");
    o.sample("srvd_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
    let reloads = s.control.reload_counts();
    o.family("srvd_start_time_seconds", "gauge", "When srvd started, unix seconds.");
    o.sample("srvd_start_time_seconds", &[], reloads.started_unix);

    // DNS
    let d = &s.dns;
    o.family(
        "srvd_dns_responses_total",
        "counter",
        "DNS responses sent, by transport and response code (nodata: NOERROR with an empty answer section).",
    );
    for t in TRANSPORTS {
        for oc in Outcome::ALL {
            o.sample("srvd_dns_responses_total", &[("transport", transport_str(t)), ("rcode", oc.as_str())], d.answers(t, oc));
        }
    }
    o.family("srvd_dns_responses_by_path_total", "counter", "DNS responses by the code that built them: fast (pre-encoded) or general.");
    for t in TRANSPORTS {
        for p in Path::ALL {
            o.sample("srvd_dns_responses_by_path_total", &[("transport", transport_str(t)), ("path", p.as_str())], d.path(t, p));
        }
    }
    o.family("srvd_dns_truncated_total", "counter", "DNS responses sent with TC set (the answer did not fit).");
    for t in TRANSPORTS {
        o.sample("srvd_dns_truncated_total", &[("transport", transport_str(t))], d.truncated(t));
    }
    o.family("srvd_dns_dropped_total", "counter", "DNS packets that got no response (responses, or too short to parse).");
    for t in TRANSPORTS {
        o.sample("srvd_dns_dropped_total", &[("transport", transport_str(t))], d.dropped(t));
    }

    let tr = &d.transport;
    o.family(
        "srvd_dns_request_panics_total",
        "counter",
        "DNS requests whose answer code panicked (a bug): the request was dropped, the worker kept serving.",
    );
    for t in TRANSPORTS {
        o.sample("srvd_dns_request_panics_total", &[("transport", transport_str(t))], tr.panics(t));
    }
    o.family("srvd_dns_udp_workers", "gauge", "UDP worker threads running.");
    o.sample("srvd_dns_udp_workers", &[], tr.udp_workers.load(Relaxed));
    o.family("srvd_dns_udp_worker_restarts_total", "counter", "UDP worker threads that ended and were started again.");
    o.sample("srvd_dns_udp_worker_restarts_total", &[], tr.udp_worker_restarts.load(Relaxed));
    o.family("srvd_dns_tcp_connections", "gauge", "DNS over TCP connections open.");
    o.sample("srvd_dns_tcp_connections", &[], tr.tcp.open.load(Relaxed));
    o.family("srvd_dns_tcp_connections_peak", "gauge", "Most DNS over TCP connections open at once since start.");
    o.sample("srvd_dns_tcp_connections_peak", &[], tr.tcp.peak.load(Relaxed));
    o.family("srvd_dns_tcp_max_connections", "gauge", "The cap on DNS over TCP connections (server.tcp_max_connections or its default).");
    o.sample("srvd_dns_tcp_max_connections", &[], tr.tcp.cap.load(Relaxed));
    o.family("srvd_dns_tcp_connections_accepted_total", "counter", "DNS over TCP connections accepted.");
    o.sample("srvd_dns_tcp_connections_accepted_total", &[], tr.tcp_accepted.load(Relaxed));
    o.family("srvd_dns_tcp_accept_errors_total", "counter", "Failed accepts on DNS over TCP listeners (e.g. out of file descriptors).");
    o.sample("srvd_dns_tcp_accept_errors_total", &[], tr.tcp_accept_errors.load(Relaxed));
    o.family("srvd_dns_tcp_connections_closed_total", "counter", "DNS over TCP connections closed, by reason.");
    for r in CloseReason::ALL {
        o.sample("srvd_dns_tcp_connections_closed_total", &[("reason", r.as_str())], tr.tcp_closed_by(r));
    }

    // Zone and masters
    let serial = s.publisher.snapshot().serial;
    o.family("srvd_zone_serial", "gauge", "SOA serial of the zone being served.");
    o.sample("srvd_zone_serial", &[], serial);

    let board: BTreeMap<_, _> = s.health.snapshot().into_iter().map(|st| ((st.host.clone(), st.port, st.role), st.state)).collect();
    let mut per_site: BTreeMap<(String, Role, &str), u64> = BTreeMap::new();
    let mut rows = Vec::new(); // (master, site, role, up, drained)
    let sites: Vec<String> = {
        let core = s.publisher.lock();
        for m in &core.inputs.registry.masters {
            let key = m.key();
            let host = crate::input::names::host_string(&key.host);
            for &role in &m.roles {
                let health = health_of(&core.health, &key, role);
                let state = board
                    .get(&(host.clone(), key.port, role))
                    .copied()
                    .unwrap_or(core.health.get(&(key.clone(), role)).map_or("unchecked", |h| h.as_str()));
                *per_site.entry((m.site.clone(), role, state)).or_default() += 1;
                rows.push((key.to_string(), m.site.clone(), role, health == Health::Up, m.drained));
            }
        }
        core.inputs.config.sites.iter().map(|x| x.name.clone()).collect()
    };
    o.family("srvd_masters", "gauge", "Registered (master, role) pairs by site, role and health state (drained ones included).");
    for site in &sites {
        for role in Role::ALL {
            for state in STATES {
                let n = per_site.get(&(site.clone(), role, state)).copied().unwrap_or(0);
                o.sample("srvd_masters", &[("site", site), ("role", role.as_str()), ("state", state)], n);
            }
        }
    }
    o.family("srvd_master_up", "gauge", "1 if the master counts as healthy for the role (published unless drained), else 0.");
    for (master, site, role, up, _) in &rows {
        o.sample("srvd_master_up", &[("master", master), ("site", site), ("role", role.as_str())], u8::from(*up));
    }
    o.family("srvd_master_drained", "gauge", "1 if the master is drained (checked but not published), else 0.");
    let mut seen = std::collections::BTreeSet::new();
    for (master, site, _, _, drained) in &rows {
        if seen.insert(master) {
            o.sample("srvd_master_drained", &[("master", master), ("site", site)], u8::from(*drained));
        }
    }

    // NOTIFY (only with secondaries to notify: a family needs a sample)
    let notify = s.notify.snapshot();
    if !notify.is_empty() {
        o.family("srvd_notify_sent_serial", "gauge", "Serial of the last NOTIFY sent to the secondary (0: none sent yet).");
        for n in &notify {
            o.sample("srvd_notify_sent_serial", &[("secondary", &n.secondary)], n.sent_serial.unwrap_or(0));
        }
        o.family("srvd_notify_acked_serial", "gauge", "Highest serial the secondary acknowledged a NOTIFY for since start (0: none yet).");
        for n in &notify {
            o.sample("srvd_notify_acked_serial", &[("secondary", &n.secondary)], n.acked_serial.unwrap_or(0));
        }
        o.family(
            "srvd_notify_in_sync",
            "gauge",
            "1 if the secondary acknowledged the last serial sent to it (or none was sent yet), else 0.",
        );
        for n in &notify {
            o.sample("srvd_notify_in_sync", &[("secondary", &n.secondary)], u8::from(n.in_sync()));
        }
    }

    // Health checker
    let h = s.health.counts();
    o.family("srvd_health_checks_total", "counter", "Health checks run (one check may decide several roles of a master).");
    o.sample("srvd_health_checks_total", &[], h.checks);
    o.family("srvd_health_check_failures_total", "counter", "Health checks that failed.");
    o.sample("srvd_health_check_failures_total", &[], h.check_failures);
    o.family("srvd_health_transitions_total", "counter", "(master, role) health transitions that changed what is published, by new state.");
    o.sample("srvd_health_transitions_total", &[("to", "up")], h.to_up);
    o.sample("srvd_health_transitions_total", &[("to", "down")], h.to_down);

    // Reloads
    o.family("srvd_reloads_total", "counter", "Reloads applied (srvctl reload or SIGHUP).");
    o.sample("srvd_reloads_total", &[], reloads.ok);
    o.family("srvd_reload_failures_total", "counter", "Reloads refused because a file was invalid (the previous state kept serving).");
    o.sample("srvd_reload_failures_total", &[], reloads.failed);
    o.family("srvd_last_reload_timestamp_seconds", "gauge", "When the last reload was applied, unix seconds; 0 if none since start.");
    o.sample("srvd_last_reload_timestamp_seconds", &[], reloads.last_ok_unix);
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut o = Out(String::new());
        o.sample("m", &[("a", "x\"y\\z\nw"), ("b", "c")], 3);
        assert_eq!(o.0, "m{a=\"x\\\"y\\\\z\\nw\",b=\"c\"} 3\n");
    }
}
