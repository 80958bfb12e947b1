//! The publishing policy of DESIGN.md §3 as a pure function:
//! (config, registry, health states) -> the SRV answers of every published
//! name, with the reason each master is in or out. No I/O, no clock.

use std::sync::Arc;

use hickory_proto::rr::Name;
use serde::Serialize;

use crate::health::{Health, HealthStates, health_of};
use crate::input::config::{AllDown, Config};
use crate::input::registry::{Master, MasterKey, Registry, Role};

/// One SRV record to publish.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SrvTarget {
    /// SRV priority: `local_priority` for the site's own masters, plus
    /// `priority_step` per failover tier (`local_priority` for every master
    /// on the site-less apex names and for the active CA).
    pub priority: u16,
    /// SRV weight among records of the same priority: the master's registry `weight`.
    pub weight: u16,
    /// The port agents connect to (the master's Puppet Server port).
    pub port: u16,
    /// The master's host name (absolute); agents connect to it and expect it
    /// in the certificate. Shared by every record of the master in one
    /// computation (a copy per record, 400,000 of them for 100 sites x
    /// 1,000 masters, cost milliseconds per change).
    #[serde(serialize_with = "ser_name")]
    pub target: Arc<Name>,
}

fn ser_name<S: serde::Serializer>(n: &Name, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::input::names::host_string(n))
}

/// Why a master is, or is not, in an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Published in tier `tier` (0 = local site) with this priority.
    In {
        /// Failover tier of the master's site, 0 = the asked-for site.
        tier: usize,
        /// The SRV priority it is published with.
        priority: u16,
    },
    /// Published although down, because no master of the role is up and
    /// `policy.all_down = "serve-all"` (or it is the CA of last resort).
    InAllDown {
        /// Failover tier of the master's site, 0 = the asked-for site.
        tier: usize,
        /// The SRV priority it is published with.
        priority: u16,
    },
    /// Left out: its checks for this role fail (while another master is up).
    Down,
    /// Left out: added at runtime and no check has passed yet.
    Pending,
    /// Left out by the operator (`drained = true`), whatever its health.
    Drained,
    /// A CA that is healthy but not the active one (single-active CA).
    StandbyCa,
    /// Left out because no master is up and `policy.all_down = "empty"`.
    AllDownEmpty,
}

/// How an answer was formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Only healthy masters.
    Normal,
    /// No master up: every non-drained master published (serve-all, or the CA rule).
    AllDown,
    /// No master up and all_down = "empty": NODATA.
    Empty,
    /// No non-drained master with this role exists: NODATA.
    NoMasters,
}

/// The computed answer of one published name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleAnswer {
    /// `None` for the site-less names at the zone apex.
    pub site: Option<String>,
    /// Which role's SRV name this is.
    pub role: Role,
    /// How the answer was formed (normal, all down, empty).
    pub mode: Mode,
    /// In the order they are put in the answer: priority, then tier, then host name (alphabetical).
    pub records: Vec<SrvTarget>,
    /// Every master with this role and why it is in or out.
    pub verdicts: Verdicts,
}

/// Every master of one answer with its [`Verdict`], in answer order. The
/// master keys are shared by all the answers of one computation (an index
/// per verdict): copying a key into each of the 400,000 verdicts of 100
/// sites x 1,000 masters, and freeing them again, took ~10 ms per change.
#[derive(Debug, Clone)]
pub struct Verdicts {
    keys: Arc<[MasterKey]>,
    list: Vec<(u32, Verdict)>,
}

impl Verdicts {
    /// Every (master, verdict), in answer order.
    pub fn iter(&self) -> impl Iterator<Item = (&MasterKey, &Verdict)> + '_ {
        self.list.iter().filter_map(|(i, v)| Some((self.keys.get(*i as usize)?, v)))
    }

    /// The verdicts alone, in answer order.
    pub fn verdicts(&self) -> impl Iterator<Item = &Verdict> + '_ {
        self.list.iter().map(|(_, v)| v)
    }

    /// How many masters the answer lists.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether the answer lists no master.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl PartialEq for Verdicts {
    fn eq(&self, other: &Verdicts) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Verdicts {}

impl Serialize for Verdicts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// Computes every published SRV answer: for each site in config order the
/// four roles, then the four roles of the site-less pool (`site: None`).
///
/// Linear in sites x masters: what does not depend on the asked-for site
/// (each master's key and health, the order by host name) is worked out
/// once, and each site only sorts its masters by tier (a stable sort of the
/// host-ordered list; 100 sites x 1,000 masters once took ~70 ms).
pub fn compute(config: &Config, registry: &Registry, health: &HealthStates) -> Vec<RoleAnswer> {
    let masters = Prepared::new(config, registry, health);
    let ca_order = ca_order_indices(config, registry);
    let mut out = Vec::with_capacity((config.sites.len() + 1) * Role::ALL.len());
    let mut scopes: Vec<Option<&str>> = config.site_names().map(Some).collect();
    scopes.push(None);
    for scope in scopes {
        let tiers = Tiers::new(config, scope);
        for role in Role::ALL {
            let a = if role == Role::Ca {
                ca_answer(config, &masters, health, scope, &ca_order)
            } else {
                role_answer(config, &masters, &tiers, scope, role)
            };
            out.push(a);
        }
    }
    out
}

/// What every answer needs of the masters, worked out once per computation.
struct Prepared<'r> {
    masters: &'r [Master],
    /// Each master's key, shared by every answer's [`Verdicts`].
    keys: Arc<[MasterKey]>,
    /// Each master's host name, shared by every record of the master.
    hosts: Vec<Arc<Name>>,
    /// Per role (`Role::ALL` order): (master index, health) of the masters
    /// with the role, sorted by (host name, port).
    by_role: Vec<Vec<(usize, Health)>>,
    /// Each master's site as an index into `config.sites` (`None`: unknown).
    site: Vec<Option<usize>>,
}

impl<'r> Prepared<'r> {
    fn new(config: &Config, registry: &'r Registry, health: &HealthStates) -> Prepared<'r> {
        let masters = registry.masters.as_slice();
        let keys: Arc<[MasterKey]> = masters.iter().map(Master::key).collect();
        let mut order: Vec<usize> = (0..masters.len()).collect();
        order.sort_by_cached_key(|&i| masters.get(i).map(|m| (m.host.to_ascii(), m.port)));
        let by_role = Role::ALL
            .iter()
            .map(|&role| {
                order
                    .iter()
                    .filter_map(|&i| Some((i, masters.get(i)?, keys.get(i)?)))
                    .filter(|(_, m, _)| m.has_role(role))
                    .map(|(i, _, k)| (i, health_of(health, k, role)))
                    .collect()
            })
            .collect();
        let sites: std::collections::HashMap<&str, usize> = config.sites.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        let site = masters.iter().map(|m| sites.get(m.site.as_str()).copied()).collect();
        let hosts = masters.iter().map(|m| Arc::new(m.host.clone())).collect();
        Prepared { masters, keys, hosts, by_role, site }
    }
}

/// (tier, priority) of every site as seen from `scope`, worked out once per
/// scope (`Config::tiers` is quadratic in the sites: once per master made
/// 100 sites x 1,000 masters take seconds).
struct Tiers {
    /// Per site of `config.sites`: (tier, priority).
    of_site: Vec<(usize, u16)>,
    /// For a master whose site is not in the config.
    unknown: (usize, u16),
}

impl Tiers {
    fn new(config: &Config, scope: Option<&str>) -> Tiers {
        let p = &config.policy;
        let at = |i: usize| (i, p.local_priority.saturating_add((i as u16).saturating_mul(p.priority_step)));
        match scope {
            None => Tiers { of_site: vec![(0, p.local_priority); config.sites.len()], unknown: (0, p.local_priority) },
            Some(s) => {
                let index: std::collections::HashMap<&str, usize> = config.tiers(s).into_iter().enumerate().map(|(i, t)| (t, i)).collect();
                let of_site = config.sites.iter().map(|site| at(index.get(site.name.as_str()).copied().unwrap_or(index.len()))).collect();
                Tiers { of_site, unknown: at(index.len()) }
            }
        }
    }

    /// (tier, priority) of a master's site (an index into `config.sites`).
    fn of(&self, site: Option<usize>) -> (usize, u16) {
        site.and_then(|i| self.of_site.get(i).copied()).unwrap_or(self.unknown)
    }
}

fn target(prep: &Prepared, i: u32, m: &Master, priority: u16) -> SrvTarget {
    let target = prep.hosts.get(i as usize).cloned().unwrap_or_else(|| Arc::new(m.host.clone()));
    SrvTarget { priority, weight: m.weight, port: m.port, target }
}

fn role_answer(config: &Config, prep: &Prepared, tiers: &Tiers, scope: Option<&str>, role: Role) -> RoleAnswer {
    // Masters with the role, sorted by (tier, host, port): the list is in
    // (host, port) order already and the sort is stable.
    let listed = Role::ALL.iter().position(|r| *r == role).and_then(|i| prep.by_role.get(i)).map_or(&[][..], Vec::as_slice);
    let ms: Vec<(&Master, u32, Health, usize, u16)> = listed
        .iter()
        .filter_map(|&(i, h)| {
            let (t, p) = tiers.of(prep.site.get(i).copied().flatten());
            Some((prep.masters.get(i)?, u32::try_from(i).ok()?, h, t, p))
        })
        .collect();
    let ms = by_tier(ms);

    let any_up = ms.iter().any(|(m, _, h, _, _)| !m.drained && *h == Health::Up);
    let any_candidate = ms.iter().any(|(m, _, _, _, _)| !m.drained);
    let mode = if any_up {
        Mode::Normal
    } else if !any_candidate {
        Mode::NoMasters
    } else if config.policy.all_down == AllDown::ServeAll {
        Mode::AllDown
    } else {
        Mode::Empty
    };

    let mut records = Vec::new();
    let mut verdicts = Vec::with_capacity(ms.len());
    for (m, key, h, tier, prio) in ms {
        let v = if m.drained {
            Verdict::Drained
        } else {
            match (mode, h) {
                (Mode::Normal, Health::Up) => Verdict::In { tier, priority: prio },
                (Mode::Normal, Health::Down) => Verdict::Down,
                (Mode::Normal, Health::Pending) => Verdict::Pending,
                (Mode::AllDown, _) => Verdict::InAllDown { tier, priority: prio },
                (_, _) => Verdict::AllDownEmpty,
            }
        };
        if matches!(v, Verdict::In { .. } | Verdict::InAllDown { .. }) {
            records.push(target(prep, key, m, prio));
        }
        verdicts.push((key, v));
    }
    let verdicts = Verdicts { keys: prep.keys.clone(), list: verdicts };
    RoleAnswer { site: scope.map(str::to_string), role, mode, records, verdicts }
}

/// A master listed in an answer: (master, index, health, tier, priority).
type Listed<T> = (T, u32, Health, usize, u16);

/// A stable sort of `ms` by tier (a counting sort: tiers are small
/// numbers, at most one per site, and a comparison sort of 400,000 entries
/// per computation took milliseconds).
fn by_tier<T>(ms: Vec<Listed<T>>) -> Vec<Listed<T>> {
    let tiers = ms.iter().map(|e| e.3).max().map_or(0, |t| t.saturating_add(1));
    // starts[t]: where tier t begins in the output.
    let mut starts = vec![0usize; tiers];
    for e in &ms {
        if let Some(c) = starts.get_mut(e.3) {
            *c += 1;
        }
    }
    let mut at = 0usize;
    for c in starts.iter_mut() {
        let n = *c;
        *c = at;
        at += n;
    }
    let mut slots: Vec<Option<Listed<T>>> = (0..ms.len()).map(|_| None).collect();
    for e in ms {
        if let Some(start) = starts.get_mut(e.3) {
            if let Some(slot) = slots.get_mut(*start) {
                *slot = Some(e);
            }
            *start += 1;
        }
    }
    slots.into_iter().flatten().collect()
}

/// CA masters in preference order: `policy.ca_order` first, then the rest by
/// site order and host name.
pub fn ca_order<'r>(config: &Config, registry: &'r Registry) -> Vec<&'r Master> {
    ca_order_indices(config, registry).into_iter().filter_map(|i| registry.masters.get(i)).collect()
}

/// [`ca_order`] as indices into `registry.masters`.
fn ca_order_indices(config: &Config, registry: &Registry) -> Vec<usize> {
    let site_idx = |s: &str| config.sites.iter().position(|x| x.name == s).unwrap_or(usize::MAX);
    let mut cas: Vec<(usize, &Master)> = registry.masters.iter().enumerate().filter(|(_, m)| m.has_role(Role::Ca)).collect();
    cas.sort_by_cached_key(|(_, m)| {
        let listed = config.policy.ca_order.iter().position(|h| *h == m.host).unwrap_or(usize::MAX);
        (listed, site_idx(&m.site), m.host.to_ascii(), m.port)
    });
    cas.into_iter().map(|(i, _)| i).collect()
}

fn ca_answer(config: &Config, prep: &Prepared, health: &HealthStates, scope: Option<&str>, order_idx: &[usize]) -> RoleAnswer {
    let prio = config.policy.local_priority;
    let order: Vec<(u32, &Master, &MasterKey)> =
        order_idx.iter().filter_map(|&i| Some((u32::try_from(i).ok()?, prep.masters.get(i)?, prep.keys.get(i)?))).collect();
    let active_up = order.iter().position(|(_, m, k)| !m.drained && health_of(health, k, Role::Ca) == Health::Up);
    let (mode, active) = match active_up {
        Some(i) => (Mode::Normal, Some(i)),
        None => match order.iter().position(|(_, m, _)| !m.drained) {
            // No CA up: keep the first non-drained one published whatever
            // all_down says, so agents never send CSRs to compilers.
            Some(i) => (Mode::AllDown, Some(i)),
            None => (Mode::NoMasters, None),
        },
    };
    let mut records = Vec::new();
    let mut verdicts = Vec::new();
    for (i, (idx, m, k)) in order.iter().enumerate() {
        let h = health_of(health, k, Role::Ca);
        let v = if Some(i) == active {
            records.push(target(prep, *idx, m, prio));
            if mode == Mode::Normal { Verdict::In { tier: 0, priority: prio } } else { Verdict::InAllDown { tier: 0, priority: prio } }
        } else if m.drained {
            Verdict::Drained
        } else {
            match h {
                Health::Up => Verdict::StandbyCa,
                Health::Down => Verdict::Down,
                Health::Pending => Verdict::Pending,
            }
        };
        verdicts.push((*idx, v));
    }
    let verdicts = Verdicts { keys: prep.keys.clone(), list: verdicts };
    RoleAnswer { site: scope.map(str::to_string), role: Role::Ca, mode, records, verdicts }
}
