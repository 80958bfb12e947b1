//! Read-only reports: list, status, explain. Built from the registry, the
//! health states and the policy's answers in the current snapshot.

use std::time::SystemTime;

use super::proto::{
    CheckResult, ClientExplain, ExplainReport, Failure, JrubyReport, MasterInfo, MasterStatus, MasterVerdict, MastersReport, NameExplain,
    RoleHealth, SrvRecord, StatusReport,
};
use super::{Control, unix};
use crate::health::{Health, health_of};
use crate::input::config::Config;
use crate::input::names::host_string;
use crate::input::registry::{Master, MasterKey, Role};
use crate::zone::Snapshot;
use crate::zone::policy::{Mode, RoleAnswer, Verdict};
use crate::zone::weights::WeightWhy;

pub(super) fn info(m: &Master) -> MasterInfo {
    MasterInfo {
        host: m.host_str(),
        port: m.port,
        site: m.site.clone(),
        roles: m.roles.iter().map(|r| r.to_string()).collect(),
        weight: m.weight,
        addresses: m.addresses.iter().map(|a| a.to_string()).collect(),
        drained: m.drained,
        check: m.check.to_string(),
    }
}

/// The reason of the last failed check of (master, role), when the health
/// side knows one.
pub(super) fn last_check_detail(c: &Control, key: &MasterKey, role: Role) -> Option<String> {
    let (_, _, reason, last) = c.health_detail(key, role)?;
    match last {
        Some(l) if !l.ok => Some(l.detail),
        _ if !reason.is_empty() => Some(reason),
        _ => None,
    }
}

fn published(snap: &Snapshot, key: &MasterKey, role: Role) -> bool {
    snap.answers.iter().filter(|a| a.role == role).any(|a| a.records.iter().any(|r| *r.target == key.host && r.port == key.port))
}

impl Control {
    /// What the health checker knows of one role of a master: (state, since,
    /// reason of the state, last check). None without a checker.
    pub(super) fn health_detail(&self, key: &MasterKey, role: Role) -> Option<(String, u64, String, Option<CheckResult>)> {
        let st = self.health.get()?.get(key, role)?;
        let last = st.last.map(|l| CheckResult { at: l.at_unix_ms / 1000, ok: l.ok, detail: l.reason, latency_ms: Some(l.latency_ms) });
        Some((st.state.to_string(), st.since_unix, st.state_reason, last))
    }

    /// The CA fingerprint last seen on (master, ca).
    fn ca_fingerprint(&self, key: &MasterKey, role: Role) -> Option<String> {
        if role != Role::Ca {
            return None;
        }
        self.health.get()?.get(key, role)?.ca_fingerprint
    }

    /// The master's JRuby figures, when the checker fetches them.
    pub(super) fn jrubies(&self, key: &MasterKey) -> Option<crate::health::JrubyStatus> {
        self.health.get()?.jrubies(key)
    }

    /// Whether a drained master whose answers expired at `expire` is idle:
    /// `Some(true)` when figures fetched at or after `expire` show no
    /// borrowed JRuby; `None` without figures.
    pub(super) fn idle(j: Option<&crate::health::JrubyStatus>, expire: Option<SystemTime>) -> Option<bool> {
        let (j, expire) = (j?, expire?);
        let m = j.last?;
        let fetched = std::time::UNIX_EPOCH + std::time::Duration::from_millis(j.at_unix_ms);
        Some(expire <= SystemTime::now() && fetched >= expire && j.error.is_none() && m.borrowed == 0)
    }

    pub(super) fn list(&self) -> MastersReport {
        let core = self.publisher.lock();
        MastersReport {
            serial: self.publisher.snapshot().serial,
            registry: core.inputs.config.server.registry.display().to_string(),
            masters: core.inputs.registry.masters.iter().map(info).collect(),
        }
    }

    /// Every master and role with its health, the serial and the serial store (`srvctl status`).
    /// One lock of the publisher and one pass over the published records
    /// for the whole report: per master, a registry scan and a scan of every
    /// answer made it quadratic (10,000 masters: minutes).
    pub fn status(&self) -> StatusReport {
        let snap = self.publisher.snapshot();
        let (ttl, masters) = {
            let core = self.publisher.lock();
            let masters: Vec<(Master, Vec<(Role, Health)>)> = core
                .inputs
                .registry
                .masters
                .iter()
                .map(|m| {
                    let key = m.key();
                    (m.clone(), m.roles.iter().map(|&r| (r, health_of(&core.health, &key, r))).collect())
                })
                .collect();
            (core.inputs.config.zone.ttl, masters)
        };
        let in_answers: std::collections::HashSet<(&hickory_proto::rr::Name, u16, Role)> =
            snap.answers.iter().flat_map(|a| a.records.iter().map(move |r| (&*r.target, r.port, a.role))).collect();
        StatusReport {
            serial: snap.serial,
            ttl,
            started: unix(self.started),
            now: unix(SystemTime::now()),
            masters: masters
                .into_iter()
                .map(|(m, states)| {
                    let key = m.key();
                    self.master_status_of(&m, &key, ttl, states, |role| in_answers.contains(&(&key.host, key.port, role)))
                })
                .collect(),
            serial_store: self.serial_store_report(),
        }
    }

    /// A master with its health; None when it is not registered.
    pub(super) fn master_status(&self, key: &MasterKey) -> Option<MasterStatus> {
        let snap = self.publisher.snapshot();
        let (m, ttl, states) = {
            let core = self.publisher.lock();
            let m = core.inputs.registry.get(key)?.clone();
            let states: Vec<(Role, Health)> = m.roles.iter().map(|&r| (r, health_of(&core.health, key, r))).collect();
            (m, core.inputs.config.zone.ttl, states)
        };
        Some(self.master_status_of(&m, key, ttl, states, |role| published(&snap, key, role)))
    }

    /// The status of master `m` (key `key`) whose roles have `states`;
    /// `published` tells whether a role of it is in the answers.
    fn master_status_of(
        &self,
        m: &Master,
        key: &MasterKey,
        ttl: u32,
        states: Vec<(Role, Health)>,
        published: impl Fn(Role) -> bool,
    ) -> MasterStatus {
        let drained_since = if m.drained { self.drains().get(key).copied() } else { None };
        let expire = drained_since.map(|t| t + std::time::Duration::from_secs(u64::from(ttl)));
        let health = states
            .into_iter()
            .map(|(role, h)| {
                let published = published(role);
                match self.health_detail(key, role) {
                    Some((state, since, reason, last_check)) => RoleHealth {
                        role: role.to_string(),
                        // The checker settles a state a moment before the
                        // applier publishes it: until then, report what DNS
                        // serves, so "up" always means "published".
                        state: if matches!(state.as_str(), "up" | "down") && state != h.as_str() { h.as_str().to_string() } else { state },
                        since: Some(since),
                        reason: Some(reason).filter(|r| !r.is_empty()),
                        last_check,
                        published,
                        ca_fingerprint: self.ca_fingerprint(key, role),
                    },
                    None => RoleHealth {
                        role: role.to_string(),
                        state: h.as_str().into(),
                        since: None,
                        reason: None,
                        last_check: None,
                        published,
                        ca_fingerprint: None,
                    },
                }
            })
            .collect();
        let j = self.jrubies(key);
        let idle = if m.drained { Self::idle(j.as_ref(), expire) } else { None };
        let jrubies = j.map(|j| {
            Box::new(JrubyReport {
                at: j.at_unix_ms / 1000,
                total: j.last.map(|l| l.total),
                free: j.last.map(|l| l.free),
                borrowed: j.last.map(|l| l.borrowed),
                queued: j.last.map(|l| l.queued),
                spare_avg: j.spare_avg.map(|a| (a * 100.0).round() / 100.0),
                error: j.error,
            })
        });
        MasterStatus {
            master: info(m),
            drained_since: drained_since.map(unix),
            answers_expire: expire.map(unix),
            safe_to_stop: expire.is_some_and(|e| e <= SystemTime::now()),
            health,
            jrubies,
            idle,
        }
    }

    /// Every published name (of `site`, or all) with its records and why each master is in or out (`srvctl explain`).
    pub fn explain(&self, site: Option<&str>) -> Result<ExplainReport, Failure> {
        self.explain_for(site, None)
    }

    /// Like [`Control::explain`]; with `client`, the site-less names as a
    /// client at that address gets them (the chosen site's answers under
    /// the site-less names) and why it gets that site.
    pub fn explain_for(&self, site: Option<&str>, client: Option<std::net::IpAddr>) -> Result<ExplainReport, Failure> {
        let snap = self.publisher.snapshot();
        let core = self.publisher.lock();
        let config = core.inputs.config.clone();
        let registry = core.inputs.registry.clone();
        let capacity = core.capacity.clone();
        drop(core);
        // None: everything; Some(None): the apex pool; Some(Some(s)): one site.
        // Each verdict's master is looked up (a scan of the registry per
        // verdict made a whole explain of 100 sites x 1,000 masters quadratic).
        let index = registry.index();
        let choice = client.map(|ip| client_explain(&config, ip));
        let scope: Option<Option<String>> = match site {
            None if choice.is_some() => Some(choice.as_ref().and_then(|c| c.site.clone())),
            None => None,
            Some("@") => Some(None),
            Some(s) => {
                let s = s.to_ascii_lowercase();
                if config.site(&s).is_none() {
                    let known: Vec<&str> = config.site_names().collect();
                    return Err(Failure::new(format!("unknown site {s:?} (known: {}; \"@\" for the site-less names)", known.join(", "))));
                }
                Some(Some(s))
            }
        };
        let names = snap
            .answers
            .iter()
            .filter(|a| scope.as_ref().is_none_or(|s| *s == a.site))
            .map(|a| {
                let weights: std::collections::HashMap<(&hickory_proto::rr::Name, u16), (u16, WeightWhy)> = a
                    .records
                    .iter()
                    .zip(crate::zone::weights::explain(&config, a, &capacity))
                    .map(|(r, w)| ((&*r.target, r.port), w))
                    .collect();
                let masters = a
                    .verdicts
                    .iter()
                    .map(|(k, v)| {
                        let msite = index.get(k).map(|m| m.site.clone()).unwrap_or_default();
                        let mut mv = self.verdict(a, k, &msite, v);
                        if let Some((w, why)) = weights.get(&(&k.host, k.port)) {
                            mv.weight = Some(*w);
                            // Only capacity weights have inputs worth showing.
                            if config.policy.weights == crate::input::config::Weights::Capacity {
                                mv.weight_inputs = Some(weight_inputs(*w, why));
                            }
                        }
                        mv
                    })
                    .collect();
                // With --client: the name the client asks (site-less), answered with its site's records.
                let name =
                    if choice.is_some() { format!("{}._tcp.{}", a.role.service(), config.zone.origin) } else { srv_name(&config, a) };
                NameExplain {
                    name,
                    site: a.site.clone(),
                    role: a.role.to_string(),
                    mode: mode_str(a.mode).into(),
                    records: a
                        .records
                        .iter()
                        .map(|r| SrvRecord { priority: r.priority, weight: r.weight, port: r.port, target: host_string(&r.target) })
                        .collect(),
                    masters,
                }
            })
            .collect();
        Ok(ExplainReport { serial: snap.serial, ttl: config.zone.ttl, names, client: choice })
    }

    fn verdict(&self, a: &RoleAnswer, key: &MasterKey, msite: &str, v: &Verdict) -> MasterVerdict {
        let role = a.role;
        let where_ = |tier: usize| match &a.site {
            None => "site-less pool: every site at one priority".to_string(),
            Some(_) if role == Role::Ca => "the active CA (first in ca_order that is up)".to_string(),
            Some(_) if tier == 0 => format!("local site {msite} (tier 0)"),
            Some(_) => format!("site {msite} is failover tier {tier}"),
        };
        let (included, name, tier, priority, reason) = match v {
            Verdict::In { tier, priority } => {
                (true, "in", Some(*tier), Some(*priority), format!("up; {}, priority {priority}", where_(*tier)))
            }
            Verdict::InAllDown { tier, priority } => {
                let why = if role == Role::Ca {
                    "no CA is up: the first CA of ca_order that is not drained stays published".to_string()
                } else {
                    format!("no {role} master is up and policy.all_down = \"serve-all\"")
                };
                (true, "in-all-down", Some(*tier), Some(*priority), format!("{why}; {}, priority {priority}", where_(*tier)))
            }
            Verdict::Down => {
                let d = last_check_detail(self, key, role).map(|d| format!(": {d}")).unwrap_or_default();
                (false, "down", None, None, format!("down{d}"))
            }
            Verdict::Pending => (false, "pending", None, None, "waiting for its first health check".into()),
            Verdict::Drained => (false, "drained", None, None, "drained by an operator (still checked)".into()),
            Verdict::StandbyCa => {
                let active = a.records.first().map(|r| host_string(&r.target)).unwrap_or_else(|| "another CA".into());
                (false, "standby-ca", None, None, format!("up, standby: only one CA is published ({active} is active)"))
            }
            Verdict::AllDownEmpty => (
                false,
                "all-down-empty",
                None,
                None,
                format!("no {role} master is up and policy.all_down = \"empty\": the name answers NODATA"),
            ),
        };
        MasterVerdict {
            master: key.to_string(),
            site: msite.to_string(),
            included,
            verdict: name.into(),
            tier,
            priority,
            reason,
            weight: None,
            weight_inputs: None,
        }
    }
}

/// How a published weight was chosen, as a sentence.
fn weight_inputs(w: u16, why: &WeightWhy) -> String {
    match why {
        WeightWhy::Static => format!("weight {w} (registry)"),
        WeightWhy::Capacity { capacity: c, group_max_milli, level } => format!(
            "weight {w}: {:.1} of {} JRubies spare (moving average), level {level}/{} of the tier's most spare ({:.1}); average wait {} ms",
            f64::from(c.spare_milli) / 1000.0,
            c.total,
            crate::zone::weights::LEVELS,
            f64::from(*group_max_milli) / 1000.0,
            c.average_wait_ms
        ),
        WeightWhy::Missing(keys) => {
            let list: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            format!("weight {w} (registry): no fresh JRuby figures for {} in this tier", list.join(", "))
        }
    }
}

/// Which site a client at `ip` gets on the site-less names, and why.
fn client_explain(config: &Config, ip: std::net::IpAddr) -> ClientExplain {
    use crate::zone::clients::{ClientSites, Reason};
    let clients = ClientSites::new(config);
    let c = clients.choose(ip);
    let site = c.site.and_then(|i| config.sites.get(i)).map(|s| s.name.clone());
    let (reason, network, why) = match c.reason {
        _ if !clients.enabled() => ("no-networks", None, "no [[site]] lists networks: every client gets the site-less pool".to_string()),
        Reason::Network(n) => (
            "network",
            Some(n.to_string()),
            format!("{ip} is in {n} of site {} (the longest matching network)", site.as_deref().unwrap_or("?")),
        ),
        Reason::Default => {
            ("default", None, format!("{ip} is in no site's networks: policy.client_site_default = {:?}", site.as_deref().unwrap_or("?")))
        }
        Reason::Pool => {
            ("pool", None, format!("{ip} is in no site's networks and there is no policy.client_site_default: the site-less pool"))
        }
    };
    ClientExplain { address: ip, site, reason: reason.into(), network, scope: c.scope, why }
}

fn srv_name(config: &Config, a: &RoleAnswer) -> String {
    match &a.site {
        Some(s) => format!("{}._tcp.{s}.{}", a.role.service(), config.zone.origin),
        None => format!("{}._tcp.{}", a.role.service(), config.zone.origin),
    }
}

fn mode_str(m: Mode) -> &'static str {
    match m {
        Mode::Normal => "normal",
        Mode::AllDown => "all-down",
        Mode::Empty => "empty",
        Mode::NoMasters => "no-masters",
    }
}
