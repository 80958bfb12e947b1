//! The publishing policy of DESIGN.md §3 as a pure function:
//! (config, registry, health states) -> the SRV answers of every published
//! name, with the reason each master is in or out. No I/O, no clock.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use hickory_proto::rr::Name;
use serde::Serialize;

use crate::health::{Health, HealthStates};
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
/// Linear in sites x masters (see [`Computed`], which the publisher keeps
/// to recompute only what a health change touches).
pub fn compute(config: &Config, registry: &Registry, health: &HealthStates) -> Vec<RoleAnswer> {
    let c = Computed::new(config, registry, health);
    c.answers.iter().map(|a| RoleAnswer::clone(a)).collect()
}

/// Every answer of one computation, each shared (`Arc`) so that a
/// recomputation after a health change shares the answers it left alone.
pub type Answers = Vec<Arc<RoleAnswer>>;

/// A policy output with what it was computed from, so that after a health
/// change only the answers of the roles whose health changed are made
/// again ([`Computed::after_health_change`]); the rest is shared.
///
/// Everything that does not depend on health (each master's key and host
/// name, the masters of each site in host order, the failover tiers of
/// every site, the CA order) is worked out once per config and registry
/// (a `Layout`). 100 sites x 1,000 masters: the whole computation took
/// ~6.8 ms, repeated on every health change.
#[derive(Debug, Clone)]
pub struct Computed {
    layout: Arc<Layout>,
    /// Per role (`Role::ALL` order): each master's health (by registry index).
    health: Vec<Vec<Health>>,
    answers: Arc<Answers>,
}

impl Computed {
    /// Computes every answer (in [`compute`]'s order).
    pub fn new(config: &Config, registry: &Registry, health: &HealthStates) -> Computed {
        let layout = Arc::new(Layout::new(config, registry));
        let health = layout.health(health);
        let mut answers: Answers = Vec::with_capacity(layout.scopes.len().saturating_mul(Role::ALL.len()));
        for scope in 0..layout.scopes.len() {
            for role in Role::ALL {
                answers.push(Arc::new(layout.answer(config, registry, &health, scope, role)));
            }
        }
        Computed { layout, health, answers: Arc::new(answers) }
    }

    /// The answers after a change of `health` alone: `config` and
    /// `registry` must be those `self` was computed from (the caller
    /// checks). The answers of a role none of whose masters changed health
    /// are shared with `self`; those of the other roles are made again.
    /// Equal to [`Computed::new`] (checked by tests/it/scale.rs).
    pub fn after_health_change(&self, config: &Config, registry: &Registry, health: &HealthStates) -> Computed {
        if self.layout.keys.len() != registry.masters.len() || self.layout.scopes.len() != config.sites.len().saturating_add(1) {
            return Computed::new(config, registry, health);
        }
        let new_health = self.layout.health(health);
        let changed: Vec<bool> = new_health.iter().zip(&self.health).map(|(a, b)| a != b).collect();
        if !changed.contains(&true) {
            return Computed { layout: self.layout.clone(), health: new_health, answers: self.answers.clone() };
        }
        let roles = Role::ALL.len();
        let mut answers: Answers = Vec::with_capacity(self.answers.len());
        for (i, old) in self.answers.iter().enumerate() {
            let r = i % roles;
            let (scope, role) = (i / roles, Role::ALL.get(r).copied().unwrap_or(Role::Puppet));
            if changed.get(r).copied().unwrap_or(true) {
                answers.push(Arc::new(self.layout.answer(config, registry, &new_health, scope, role)));
            } else {
                answers.push(old.clone());
            }
        }
        Computed { layout: self.layout.clone(), health: new_health, answers: Arc::new(answers) }
    }

    /// Whether the registry this was computed from has a master `key` with `role`.
    pub fn knows(&self, key: &MasterKey, role: Role) -> bool {
        self.layout.index.get(key).and_then(|&i| self.layout.roles.get(i as usize)).is_some_and(|b| b & role_bit(role) != 0)
    }

    /// Whether both were computed from the same config and registry (one
    /// follows from the other by [`Computed::after_health_change`]).
    pub fn same_layout(&self, other: &Computed) -> bool {
        Arc::ptr_eq(&self.layout, &other.layout)
    }

    /// Every answer: for each site in config order the four roles
    /// (`Role::ALL` order), then the four of the site-less pool.
    pub fn answers(&self) -> &Arc<Answers> {
        &self.answers
    }

    /// Calls `f` on every answer made by this computation (not shared with
    /// the one it followed): after [`Computed::new`] all of them, after
    /// [`Computed::after_health_change`] those of the roles made again.
    pub fn for_each_new_answer(&mut self, mut f: impl FnMut(&mut RoleAnswer)) {
        let Some(answers) = Arc::get_mut(&mut self.answers) else { return };
        for a in answers.iter_mut() {
            if let Some(a) = Arc::get_mut(a) {
                f(a);
            }
        }
    }

    /// The same computation serving `answers` (equal to its own, e.g. those
    /// already served), so that the next one shares them.
    pub fn with_answers(mut self, answers: Arc<Answers>) -> Computed {
        self.answers = answers;
        self
    }
}

/// A cheap hasher (FxHash) for the master index: `Name` hashes byte by
/// byte, which SipHash makes slow, and the keys come from the registry.
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl std::hash::Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u8(*b);
        }
    }
    fn write_u8(&mut self, b: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

/// What the answers need of config and registry, independent of health.
#[derive(Debug)]
struct Layout {
    /// Each master's key, shared by every answer's [`Verdicts`].
    keys: Arc<[MasterKey]>,
    /// Each master's host name, shared by every record of the master (and
    /// between computations: unchanged records compare by pointer).
    hosts: Vec<Arc<Name>>,
    /// Registry index of each master key.
    index: FxMap<MasterKey, u32>,
    /// Per role (`Role::ALL` order), a bit per master: has the role.
    roles: Vec<u8>,
    /// Per role: the masters with the role by (host name, port): the
    /// site-less pool's order.
    by_host: Vec<Vec<u32>>,
    /// Per site of `config.sites`, then one for masters of unknown sites:
    /// the site's masters (any role) by (host name, port).
    by_site: Vec<Vec<u32>>,
    /// Per answer scope (each site, then the site-less pool).
    scopes: Vec<Scope>,
    /// CA masters in preference order ([`ca_order`]).
    ca_order: Vec<u32>,
}

/// The failover tiers as seen from one site: (group in `Layout::by_site`,
/// tier, priority), best first; empty for the site-less pool.
#[derive(Debug)]
struct Scope {
    site: Option<String>,
    tiers: Vec<(usize, usize, u16)>,
}

fn role_bit(role: Role) -> u8 {
    match role {
        Role::Puppet => 1,
        Role::Ca => 2,
        Role::Report => 4,
        Role::Fileserver => 8,
    }
}

impl Layout {
    fn new(config: &Config, registry: &Registry) -> Layout {
        let masters = registry.masters.as_slice();
        let keys: Arc<[MasterKey]> = masters.iter().map(Master::key).collect();
        let index = keys.iter().enumerate().filter_map(|(i, k)| Some((k.clone(), u32::try_from(i).ok()?))).collect();
        let roles = masters.iter().map(|m| Role::ALL.iter().filter(|r| m.has_role(**r)).fold(0, |b, r| b | role_bit(*r))).collect();
        let mut order: Vec<u32> = (0..masters.len()).filter_map(|i| u32::try_from(i).ok()).collect();
        order.sort_by_cached_key(|&i| masters.get(i as usize).map(|m| (m.host.to_ascii(), m.port)));
        let by_host = Role::ALL
            .iter()
            .map(|&role| order.iter().copied().filter(|&i| masters.get(i as usize).is_some_and(|m| m.has_role(role))).collect())
            .collect();
        let site_index: HashMap<&str, usize> = config.sites.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        let unknown = config.sites.len();
        let mut by_site: Vec<Vec<u32>> = vec![Vec::new(); unknown.saturating_add(1)];
        for &i in &order {
            let g = masters.get(i as usize).and_then(|m| site_index.get(m.site.as_str()).copied()).unwrap_or(unknown);
            if let Some(v) = by_site.get_mut(g) {
                v.push(i);
            }
        }
        let p = &config.policy;
        let at = |t: usize| p.local_priority.saturating_add((t as u16).saturating_mul(p.priority_step));
        let mut scopes: Vec<Scope> = config
            .site_names()
            .map(|s| {
                let mut tiers: Vec<(usize, usize, u16)> = config
                    .tiers(s)
                    .into_iter()
                    .filter_map(|name| site_index.get(name).copied())
                    .enumerate()
                    .map(|(t, g)| (g, t, at(t)))
                    .collect();
                let t = tiers.len();
                tiers.push((unknown, t, at(t)));
                Scope { site: Some(s.to_string()), tiers }
            })
            .collect();
        scopes.push(Scope { site: None, tiers: Vec::new() });
        let ca_order = ca_order_indices(config, registry).into_iter().filter_map(|i| u32::try_from(i).ok()).collect();
        let hosts = masters.iter().map(|m| Arc::new(m.host.clone())).collect();
        Layout { keys, hosts, index, roles, by_host, by_site, scopes, ca_order }
    }

    /// Per role, each master's health in `states` (Up when unknown, as [`health_of`]).
    fn health(&self, states: &HealthStates) -> Vec<Vec<Health>> {
        let mut h = vec![vec![Health::Up; self.keys.len()]; Role::ALL.len()];
        for ((key, role), health) in states {
            let r = Role::ALL.iter().position(|x| x == role);
            if let (Some(&i), Some(r)) = (self.index.get(key), r)
                && let Some(slot) = h.get_mut(r).and_then(|v| v.get_mut(i as usize))
            {
                *slot = *health;
            }
        }
        h
    }

    fn answer(&self, config: &Config, registry: &Registry, health: &[Vec<Health>], scope: usize, role: Role) -> RoleAnswer {
        let site = self.scopes.get(scope).and_then(|s| s.site.clone());
        if role == Role::Ca {
            ca_answer(config, self, registry, health, site)
        } else {
            role_answer(config, self, registry, health, scope, site, role)
        }
    }
}

fn target(layout: &Layout, i: u32, m: &Master, priority: u16) -> SrvTarget {
    let target = layout.hosts.get(i as usize).cloned().unwrap_or_else(|| Arc::new(m.host.clone()));
    SrvTarget { priority, weight: m.weight, port: m.port, target }
}

fn role_answer(
    config: &Config,
    layout: &Layout,
    registry: &Registry,
    health: &[Vec<Health>],
    scope: usize,
    site: Option<String>,
    role: Role,
) -> RoleAnswer {
    let r = Role::ALL.iter().position(|x| *x == role).unwrap_or(0);
    let health = health.get(r).map_or(&[][..], Vec::as_slice);
    let bit = role_bit(role);
    let with_role = layout.by_host.get(r).map_or(&[][..], Vec::as_slice);
    let master = |i: u32| registry.masters.get(i as usize).map(|m| (m, health.get(i as usize).copied().unwrap_or(Health::Up)));
    // Every answer lists every master with the role: the mode is the same for all.
    let any_up = with_role.iter().filter_map(|&i| master(i)).any(|(m, h)| !m.drained && h == Health::Up);
    let any_candidate = with_role.iter().filter_map(|&i| master(i)).any(|(m, _)| !m.drained);
    let mode = if any_up {
        Mode::Normal
    } else if !any_candidate {
        Mode::NoMasters
    } else if config.policy.all_down == AllDown::ServeAll {
        Mode::AllDown
    } else {
        Mode::Empty
    };

    let mut records = Vec::with_capacity(with_role.len());
    let mut verdicts = Vec::with_capacity(with_role.len());
    let mut list = |i: u32, tier: usize, prio: u16| {
        let Some((m, h)) = master(i) else { return };
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
            records.push(target(layout, i, m, prio));
        }
        verdicts.push((i, v));
    };
    // Masters with the role, in answer order: by (tier, host, port). Each
    // site's masters are in (host, port) order already; the site-less pool
    // has one tier.
    match layout.scopes.get(scope) {
        Some(s) if s.site.is_some() => {
            for &(g, tier, prio) in &s.tiers {
                for &i in layout.by_site.get(g).map_or(&[][..], Vec::as_slice) {
                    if layout.roles.get(i as usize).is_some_and(|b| b & bit != 0) {
                        list(i, tier, prio);
                    }
                }
            }
        }
        _ => {
            for &i in with_role {
                list(i, 0, config.policy.local_priority);
            }
        }
    }
    let verdicts = Verdicts { keys: layout.keys.clone(), list: verdicts };
    RoleAnswer { site, role, mode, records, verdicts }
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

fn ca_answer(config: &Config, layout: &Layout, registry: &Registry, health: &[Vec<Health>], site: Option<String>) -> RoleAnswer {
    let prio = config.policy.local_priority;
    let r = Role::ALL.iter().position(|x| *x == Role::Ca).unwrap_or(0);
    let health = health.get(r).map_or(&[][..], Vec::as_slice);
    let order: Vec<(u32, &Master, Health)> = layout
        .ca_order
        .iter()
        .filter_map(|&i| Some((i, registry.masters.get(i as usize)?, health.get(i as usize).copied().unwrap_or(Health::Up))))
        .collect();
    let active_up = order.iter().position(|(_, m, h)| !m.drained && *h == Health::Up);
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
    for (i, (idx, m, h)) in order.iter().enumerate() {
        let v = if Some(i) == active {
            records.push(target(layout, *idx, m, prio));
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
    let verdicts = Verdicts { keys: layout.keys.clone(), list: verdicts };
    RoleAnswer { site, role: Role::Ca, mode, records, verdicts }
}
