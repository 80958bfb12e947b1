//! The publisher: holds the current inputs (config, static records, registry,
//! health states), recomputes the zone when one changes, raises the serial
//! when the published data changed, and swaps in a new snapshot.
//!
//! The inputs sit behind a plain mutex that is never held across an await
//! or any I/O; the DNS side only ever loads the snapshot `Arc`. Publishing
//! (snapshot building, the serial's fsync) is blocking work, done on
//! blocking threads by the health checker and the control socket.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::health::{Health, HealthStates, Verdict, health_of};
use crate::input::config::Config;
use crate::input::error::InputError;
use crate::input::registry::Registry;
use crate::input::registry::{MasterKey, Role};
use crate::input::zonefile::{self, StaticRecord};
use crate::zone::policy;
use crate::zone::serial::{StateDir, StoreError, next_serial};
use crate::zone::{self, Snapshot};

/// Everything loaded from files, validated together.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The validated config (shared with every snapshot built from it).
    pub config: Arc<Config>,
    /// Records from `zone.file`, already checked against the names srvd computes.
    pub statics: Vec<StaticRecord>,
    /// The masters registry, checked against the config and the zone file.
    pub registry: Registry,
    /// The registry file's text `registry` was parsed from (`None`: no file,
    /// or parts assembled in memory).
    pub registry_text: Option<String>,
}

impl Inputs {
    /// Loads config, zone file and registry, checking them against each other.
    pub fn load(config: Config) -> Result<Inputs, InputError> {
        let statics = match &config.zone.file {
            Some(p) => zonefile::load(p, &config.zone.origin, config.zone.ttl)?,
            None => vec![],
        };
        let (registry, text) = Registry::load(&config.server.registry, &config)?;
        let mut inputs = Inputs::assemble(config, statics, registry)?;
        inputs.registry_text = text;
        Ok(inputs)
    }

    /// Cross-checks already parsed parts.
    pub fn assemble(config: Config, statics: Vec<StaticRecord>, registry: Registry) -> Result<Inputs, InputError> {
        if let Some(p) = &config.zone.file {
            zonefile::check_conflicts(&statics, p, &config.zone.origin, &zone::published_names(&config))?;
        }
        check_registry_against_statics(&config, &statics, &registry)?;
        for ns in lame_nameservers(&config, &statics, &registry) {
            tracing::warn!(
                nameserver = %ns,
                "zone.nameservers: {ns} is inside the zone but has no A/AAAA record (add glue to zone.file); resolvers cannot reach it"
            );
        }
        Ok(Inputs { config: Arc::new(config), statics, registry, registry_text: None })
    }
}

/// In-zone name servers without an address in the zone (lame delegation).
pub fn lame_nameservers(config: &Config, statics: &[StaticRecord], registry: &Registry) -> Vec<hickory_proto::rr::Name> {
    use hickory_proto::rr::RecordType;
    config
        .zone
        .nameservers
        .iter()
        .filter(|ns| config.zone.origin.zone_of(ns))
        .filter(|ns| {
            let in_statics =
                statics.iter().any(|s| &s.record.name == *ns && matches!(s.record.record_type(), RecordType::A | RecordType::AAAA));
            let in_registry = registry.masters.iter().any(|m| &m.host == *ns && !m.addresses.is_empty());
            !in_statics && !in_registry
        })
        .cloned()
        .collect()
}

/// An in-zone master must not also be defined in the zone file.
pub fn check_registry_against_statics(config: &Config, statics: &[StaticRecord], registry: &Registry) -> Result<(), InputError> {
    for (i, m) in registry.masters.iter().enumerate() {
        if let Some(s) = statics.iter().find(|s| s.record.name == m.host && config.zone.origin.zone_of(&m.host)) {
            return Err(InputError::new(
                &config.server.registry,
                format!("master[{i}].host"),
                format!(
                    "{} is also defined in the zone file (line {}); srvd publishes its addresses from the registry",
                    m.host_str(),
                    s.line
                ),
            ));
        }
    }
    Ok(())
}

/// The inputs the published zone is computed from. Read them with
/// [`Publisher::lock`]; change them only through [`Publisher::update`] or
/// [`Publisher::try_update`] (which work on a copy and swap it in).
#[derive(Clone)]
pub struct Core {
    /// Config, zone file records and registry as last loaded or edited.
    pub inputs: Inputs,
    /// The published health of every (master, role) known so far.
    pub health: HealthStates,
    /// Smoothed JRuby capacity per master (capacity weights, see `zone::weights`).
    pub capacity: crate::health::Capacities,
}

/// The inputs with the policy output computed from them (swapped together).
struct State {
    core: Core,
    /// The policy output of `core`, kept to recompute only what a health change touches.
    computed: policy::Computed,
}

/// Read-only access to the inputs ([`Publisher::lock`]): changing them
/// goes through [`Publisher::update`] and friends, which republish.
pub struct CoreRef<'a>(MutexGuard<'a, State>);

impl std::ops::Deref for CoreRef<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.0.core
    }
}

/// How storing the SOA serial goes, for `srvctl status` (and metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SerialStore {
    /// Failed attempts to store a serial since srvd started.
    pub failures: u64,
    /// The last failure, while storing fails (cleared once a serial is stored).
    pub error: Option<String>,
    /// Published data changed after the served serial was stored (a health
    /// transition while the serial could not be stored, or a start that
    /// could not store a new serial): a higher serial is still owed. Retried
    /// on every publication and by `Publisher::retry_store`.
    pub behind: bool,
}

/// Why [`Publisher::try_update`] applied nothing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError<E> {
    /// The change alters the published data and its new serial could not be stored.
    #[error("{0}")]
    Serial(StoreError),
    /// The caller's commit step (e.g. writing the registry file) failed.
    #[error("{0}")]
    Commit(E),
}

/// A change worked out on a copy of the inputs, not yet published.
struct Plan {
    core: Core,
    computed: policy::Computed,
    cfg: Arc<Config>,
    answers: Arc<policy::Answers>,
    nodes: Arc<zone::Nodes>,
    /// The snapshot served when the plan was made.
    serial: u32,
    /// The records (or the SOA fields) differ: a new serial is due.
    data_changed: bool,
    /// Only the explanation (policy output) or transfer settings differ.
    meta_changed: bool,
}

/// Shared between the DNS side, the health checker and the control socket.
///
/// Locks, always taken in this order: `storing` (serialises the serial's
/// fsync and srvctl's durable changes), `publishing` (serialises working
/// out a change and swapping it in: CPU only, never I/O), `core` (held only
/// for a copy or a swap, so async tasks may take it). The first two are
/// only taken on blocking threads: [`Publisher::update`] and friends are
/// blocking calls (use `spawn_blocking` from async code).
pub struct Publisher {
    core: Mutex<State>,
    /// Owns the state directory.
    storing: Mutex<Option<StateDir>>,
    publishing: Mutex<()>,
    store: Mutex<SerialStore>,
    snapshot: ArcSwap<Snapshot>,
    serial_tx: watch::Sender<u32>,
    /// Bumped after every [`Publisher::update`] (registry, config, health):
    /// lets the health checker pick up new masters and `srvctl add-master
    /// --wait` see a first check result even when no record changed.
    generation_tx: watch::Sender<u64>,
    /// Who gets every new snapshot (see [`Publisher::attach`]).
    sinks: Mutex<Vec<Sink>>,
}

/// Receives every published snapshot (see [`Publisher::attach`]).
pub type Sink = Box<dyn Fn(&Arc<Snapshot>) + Send + Sync>;

impl Publisher {
    /// Builds the first snapshot. The serial is max(stored + 1, now) and is
    /// stored before it is served. When it cannot be stored, srvd still
    /// starts (an error is logged and [`Publisher::serial_store`] reports
    /// it), serving the last stored serial if one is readable, and stores a
    /// higher one as soon as it can. Never fails (the `Result` is kept for
    /// callers).
    pub fn new(inputs: Inputs, health: HealthStates, state: Option<StateDir>) -> std::io::Result<Arc<Publisher>> {
        let mut status = SerialStore::default();
        let serial = match &state {
            None => next_serial(None, SystemTime::now()),
            Some(s) => {
                let loaded = s.load_serial();
                let next = next_serial(loaded.last, SystemTime::now());
                match s.store_serial(next) {
                    Ok(()) => next,
                    Err(e) => {
                        status = SerialStore { failures: 1, error: Some(e.to_string()), behind: true };
                        match loaded.last {
                            Some(last) => {
                                tracing::error!(error = %e, serial = last, "cannot store a new SOA serial; serving the last stored one until a higher one can be stored");
                                last
                            }
                            None => {
                                tracing::error!(error = %e, serial = next, "cannot store a new SOA serial and no stored one is readable; serving an unstored serial from the clock");
                                next
                            }
                        }
                    }
                }
            }
        };
        let computed = policy::Computed::new(&inputs.config, &inputs.registry, &health);
        // No capacity figures yet at start: registry weights.
        let nodes = zone::build_nodes(&inputs.config, &inputs.statics, &inputs.registry, computed.answers());
        let snap = Snapshot::new(&inputs.config, Arc::new(nodes), computed.answers().clone(), serial);
        let (serial_tx, _) = watch::channel(serial);
        Ok(Arc::new(Publisher {
            core: Mutex::new(State { core: Core { inputs, health, capacity: Default::default() }, computed }),
            storing: Mutex::new(state),
            publishing: Mutex::new(()),
            store: Mutex::new(status),
            snapshot: ArcSwap::from_pointee(snap),
            serial_tx,
            generation_tx: watch::channel(0).0,
            sinks: Mutex::new(Vec::new()),
        }))
    }

    /// The current snapshot; cheap, lock-free.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The current snapshot for one query: lock-free and without touching
    /// the `Arc`'s shared reference count (no cache-line traffic between the
    /// UDP workers). Not to be held for long.
    pub fn current(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// Watch the serial (changes on every publication of new data).
    pub fn subscribe(&self) -> watch::Receiver<u32> {
        self.serial_tx.subscribe()
    }

    /// Watch every change of the inputs (a counter).
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation_tx.subscribe()
    }

    /// Locks the inputs for reading (held only briefly by writers, never
    /// across I/O). Never hold the guard across an await, and do not change
    /// the inputs through it: use [`Publisher::update`].
    pub fn lock(&self) -> CoreRef<'_> {
        CoreRef(self.core())
    }

    fn core(&self) -> MutexGuard<'_, State> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How storing the serial goes (failures, last error, serial owed).
    pub fn serial_store(&self) -> SerialStore {
        self.store_status().clone()
    }

    fn store_status(&self) -> MutexGuard<'_, SerialStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn storing(&self) -> MutexGuard<'_, Option<StateDir>> {
        self.storing.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publishing(&self) -> MutexGuard<'_, ()> {
        self.publishing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a change to the inputs and republishes, storing a new serial
    /// if the data changed; blocking. Returns the serial now served:
    /// `Publisher::update_answers` then `Publisher::retry_store`.
    pub fn update<R>(&self, f: impl FnOnce(&mut Core) -> R) -> (R, u32) {
        let (r, _) = self.update_answers(|core, _| f(core));
        (r, self.retry_store())
    }

    /// Applies a change that must be served whatever the disk does (health
    /// transitions: failing over matters more than secondaries): the new
    /// answers are swapped in at once under the serial served now (no I/O
    /// here, only CPU). If the records changed, a new serial is owed
    /// ([`SerialStore::behind`]; returned as `true`), to be stored and
    /// served by [`Publisher::retry_store`]. While the serial cannot be
    /// stored, the answers stay under the last stored serial (no NOTIFY);
    /// the failure is logged and counted.
    fn update_answers<R>(&self, f: impl FnOnce(&mut Core, &policy::Computed) -> R) -> (R, bool) {
        let guard = self.publishing();
        let (r, plan) = self.plan(f);
        let serial = plan.serial;
        let changed = plan.data_changed;
        let snap = (plan.data_changed || plan.meta_changed).then(|| Snapshot::new(&plan.cfg, plan.nodes, plan.answers, serial));
        let owed = {
            let mut st = self.store_status();
            st.behind |= changed;
            st.behind
        };
        self.install(plan.core, plan.computed, snap);
        drop(guard);
        self.generation_tx.send_modify(|g| *g += 1);
        (r, owed)
    }

    /// Applies a change only if it can be made durable; blocking. When the
    /// change alters the published data, the new serial is stored first;
    /// then `commit` runs (e.g. writing the registry file); only when both
    /// succeeded is the change applied (`f` is then run again on the inputs
    /// of that moment, which health transitions may have changed meanwhile)
    /// and served. On an error nothing is applied and the old state keeps
    /// serving. Health transitions are not held up by these writes. Returns
    /// the serial now served.
    pub fn try_update<R, E>(
        &self,
        f: impl Fn(&mut Core) -> R,
        commit: impl FnOnce() -> Result<(), E>,
    ) -> Result<(R, u32), PublishError<E>> {
        let state = self.storing();
        let (_, first) = self.plan(|core, _| f(core));
        let behind = self.store_status().behind;
        let mut new_serial = None;
        if first.data_changed || behind {
            let serial = next_serial(Some(first.serial), SystemTime::now());
            match self.try_store(&state, serial) {
                Ok(()) => new_serial = Some(serial),
                Err(e) if first.data_changed => {
                    tracing::error!(error = %e, "cannot store the new SOA serial; change not applied");
                    return Err(PublishError::Serial(e));
                }
                // This change leaves the records alone; the owed serial stays owed.
                Err(e) => {
                    tracing::error!(error = %e, serial = first.serial, "cannot store a new SOA serial; still serving the last stored one")
                }
            }
        }
        drop(first);
        commit().map_err(PublishError::Commit)?;
        let guard = self.publishing();
        let (r, plan) = self.plan(|core, _| f(core));
        // Only stores change the serial, and we hold `storing`: plan.serial is first.serial.
        let serial = new_serial.unwrap_or(plan.serial);
        let rebuild = new_serial.is_some() || plan.data_changed || plan.meta_changed;
        let snap = rebuild.then(|| Snapshot::new(&plan.cfg, plan.nodes, plan.answers, serial));
        let owed = {
            let mut st = self.store_status();
            match new_serial {
                Some(_) => st.behind = false,
                // Records changed only now (with health changes since): owed.
                None => st.behind |= plan.data_changed,
            }
            st.behind
        };
        self.install(plan.core, plan.computed, snap);
        drop(guard);
        if new_serial.is_some() {
            self.serial_tx.send_replace(serial);
            tracing::info!(serial, "published new zone data");
        }
        let serial = if owed { self.bump(&state) } else { serial };
        drop(state);
        self.generation_tx.send_modify(|g| *g += 1);
        Ok((r, serial))
    }

    /// When a serial is owed ([`SerialStore::behind`]), tries to store it
    /// and serve the current data under it; blocking (the fsync). Returns
    /// the serial now served.
    fn retry_store(&self) -> u32 {
        let state = self.storing();
        self.bump(&state)
    }

    /// Works out a change on a copy of the inputs; the core lock is held
    /// only for the copy (and to compare with it). `f` also gets the policy
    /// output of the inputs before it (a master index, see [`policy::Computed::knows`]).
    fn plan<R>(&self, f: impl FnOnce(&mut Core, &policy::Computed) -> R) -> (R, Plan) {
        let (mut core, cur, prev) = {
            let c = self.core();
            (c.core.clone(), self.snapshot.load_full(), c.computed.clone())
        };
        let r = f(&mut core, &prev);
        let cfg = core.inputs.config.clone();
        // The served snapshot and `prev` were computed from the inputs as
        // they were before `f` (they are swapped in together). When only
        // health changed, only the answers of the roles whose health
        // changed are computed again (the rest is shared with `prev`; the
        // whole computation took ~6.8 ms for 100 sites x 1,000 masters);
        // the masters are listed in the same order in both policy outputs
        // and the records follow from the verdicts: comparing the verdicts
        // of the answers made again is exact, and the node map is rebuilt
        // (and compared) only when a record the zone holds changed.
        // Comparing every master key and record (400,000 names) took ~35 ms.
        // Compared with the inputs in place (copying the registry to
        // compare with it later took ~0.3 ms per change); `prev`'s layout
        // still there means those are the inputs `prev` came from. New
        // capacity figures change weights, not verdicts: they take the
        // whole computation and comparison.
        let same_inputs = Arc::ptr_eq(&cur.config, &cfg) && {
            let c = self.core();
            c.computed.same_layout(&prev)
                && c.core.inputs.registry == core.inputs.registry
                && c.core.inputs.statics == core.inputs.statics
                && c.core.capacity == core.capacity
        };
        let mut computed = if same_inputs {
            prev.after_health_change(&cfg, &core.inputs.registry, &core.health)
        } else {
            policy::Computed::new(&cfg, &core.inputs.registry, &core.health)
        };
        // Capacity weights on the answers made now; those shared with
        // `prev` already carry them.
        computed.for_each_new_answer(|a| zone::weights::apply(&cfg, a, &core.capacity));
        let answers = computed.answers().clone();
        // Only the SRV names whose records changed get new nodes; the
        // others are shared with the served snapshot (rebuilding and
        // comparing the whole map took ~4 ms).
        let (answers_same, changed) = if same_inputs { same_verdicts(&cfg, &cur.answers, &answers) } else { (false, None) };
        let incremental = match &changed {
            Some(c) if c.is_empty() => Some((cur.nodes.clone(), false)),
            Some(c) => zone::rebuild_answers(&cfg, &cur.nodes, &answers, c).map(|(n, differ)| (Arc::new(n), differ)),
            None => None,
        };
        let nodes = match incremental {
            Some((_, false)) => cur.nodes.clone(),
            Some((nodes, true)) => nodes,
            None => {
                let nodes = zone::build_nodes(&cfg, &core.inputs.statics, &core.inputs.registry, &answers);
                if *cur.nodes == nodes { cur.nodes.clone() } else { Arc::new(nodes) }
            }
        };
        let data_changed = !Arc::ptr_eq(&cur.nodes, &nodes) || cur.soa != zone::soa_record(&cfg, cur.serial);
        // A reload gives a new config (transfer settings, timing...): the
        // DNS layer gets a new snapshot even when the records stay the same.
        let answers_same = answers_same || (!same_inputs && *cur.answers == *answers);
        let meta_changed = !answers_same || !Arc::ptr_eq(&cur.config, &cfg);
        // Answers equal to the served ones: keep those, so that the next
        // change shares them.
        let (computed, answers) =
            if answers_same { (computed.with_answers(cur.answers.clone()), cur.answers.clone()) } else { (computed, answers) };
        (r, Plan { core, computed, cfg, answers, nodes, serial: cur.serial, data_changed, meta_changed })
    }

    /// Swaps in new inputs (and snapshot) together. The caller holds
    /// `publishing`; the sinks (the DNS layer) get the snapshot first,
    /// outside the `core` lock (they pre-encode answers from it).
    fn install(&self, core: Core, computed: policy::Computed, snap: Option<Snapshot>) {
        let snap = snap.map(Arc::new);
        if let Some(s) = &snap {
            self.announce(s);
        }
        let mut c = self.core();
        let replaced = std::mem::replace(&mut *c, State { core, computed });
        let old = snap.map(|s| self.snapshot.swap(s));
        drop(c);
        // The replaced inputs and snapshot (its policy output and node
        // map) are freed off this thread.
        zone::retire::later((replaced, old));
    }

    /// Hands a new snapshot to every attached sink. The caller holds `publishing`.
    fn announce(&self, snap: &Arc<Snapshot>) {
        for sink in self.sinks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            sink(snap);
        }
    }

    /// Attaches a sink that gets every snapshot published from now on, in
    /// order, before it is served by [`Publisher::snapshot`]; returns the
    /// snapshot current at attaching (none is missed in between). Sinks run
    /// on the publishing thread: they should be quick and never block on I/O.
    pub fn attach(&self, sink: Sink) -> Arc<Snapshot> {
        let _guard = self.publishing();
        self.sinks.lock().unwrap_or_else(|e| e.into_inner()).push(sink);
        self.snapshot.load_full()
    }

    /// If a serial is owed, stores the serial after the one served and, if
    /// that worked, serves the data of that moment under it. The caller
    /// holds `storing`. Returns the serial now served.
    fn bump(&self, state: &Option<StateDir>) -> u32 {
        let base = self.snapshot.load().serial;
        if !self.store_status().behind {
            return base;
        }
        let serial = next_serial(Some(base), SystemTime::now());
        if let Err(e) = self.try_store(state, serial) {
            tracing::error!(
                error = %e,
                serial = base,
                "cannot store the new SOA serial; the new answers are served under the last stored serial (secondaries are not notified) until it can be stored"
            );
            return base;
        }
        let guard = self.publishing();
        // Answers swapped in while storing are included: serve them under the new serial.
        let cur = self.snapshot.load_full();
        let cfg = self.lock().inputs.config.clone();
        let snap = Arc::new(Snapshot::new(&cfg, cur.nodes.clone(), cur.answers.clone(), serial));
        self.store_status().behind = false;
        self.announce(&snap);
        let old = {
            let _core = self.core();
            self.snapshot.swap(snap)
        };
        zone::retire::later(old);
        drop(guard);
        self.serial_tx.send_replace(serial);
        tracing::info!(serial, "published new zone data");
        serial
    }

    /// Stores `serial` (when there is a state directory), keeping count of failures.
    fn try_store(&self, state: &Option<StateDir>, serial: u32) -> Result<(), StoreError> {
        let Some(dir) = state else { return Ok(()) };
        let r = dir.store_serial(serial);
        let mut st = self.store_status();
        match &r {
            Ok(()) => st.error = None,
            Err(e) => {
                st.failures = st.failures.saturating_add(1);
                st.error = Some(e.to_string());
            }
        }
        r
    }
}

/// Compares two policy outputs computed from the same config, zone file
/// and registry (so listing the same masters in the same order): whether
/// they are equal, and which answers' nodes may differ: those whose kept
/// records ([`zone::kept_records`]) differ (`None`: the answers are not
/// listed alike). Answers shared by both (unchanged roles) are not looked at.
fn same_verdicts(config: &Config, a: &[Arc<policy::RoleAnswer>], b: &[Arc<policy::RoleAnswer>]) -> (bool, Option<Vec<usize>>) {
    let shape = a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| Arc::ptr_eq(x, y) || (x.site == y.site && x.role == y.role && x.verdicts.len() == y.verdicts.len()));
    if !shape {
        return (false, None);
    }
    let mut same = true;
    let mut changed = Vec::new();
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if Arc::ptr_eq(x, y) {
            continue;
        }
        same &= x.mode == y.mode && x.verdicts.verdicts().eq(y.verdicts.verdicts());
        // Records hold shared host names: an unchanged one compares by pointer.
        if zone::kept_records(config, x) != zone::kept_records(config, y) {
            changed.push(i);
        }
    }
    (same, Some(changed))
}

/// The health checker's view of the publisher (see [`crate::health::Target`]).
impl crate::health::Target for Publisher {
    fn changes(&self) -> watch::Receiver<u64> {
        self.generation()
    }

    fn checked(&self) -> (crate::input::registry::Registry, crate::input::config::HealthConfig, HealthStates) {
        let core = self.lock();
        (core.inputs.registry.clone(), core.inputs.config.health.clone(), core.health.clone())
    }

    fn published(&self, key: &MasterKey, roles: &[Role]) -> Vec<Health> {
        let core = self.lock();
        roles.iter().map(|r| health_of(&core.health, key, *r)).collect()
    }

    fn apply(&self, batch: Vec<Verdict>) -> (bool, bool) {
        self.update_answers(|core, prev| {
            let mut changed = false;
            // The registry's masters and roles are looked up in the policy
            // output's index (of this registry), not in a set made per
            // batch (~3,000 keys for 1,000 masters) or by a registry scan
            // per verdict (a start with 10,000 masters sends 30,000).
            for v in batch {
                match v {
                    Verdict::Health { key, role, health } => {
                        // The master may have been removed since the check.
                        if !prev.knows(&key, role) {
                            continue;
                        }
                        changed |= core.health.insert((key, role), health) != Some(health);
                    }
                    // Not a health state: health.json is not rewritten for it.
                    Verdict::Capacity(caps) => core.capacity = caps,
                    Verdict::Prune => {
                        let n = core.health.len();
                        core.health.retain(|(k, r), _| prev.knows(k, *r));
                        changed |= core.health.len() != n;
                    }
                }
            }
            changed
        })
    }

    fn serial_owed(&self) -> bool {
        self.serial_store().behind
    }

    fn store_serial(&self) {
        self.retry_store();
    }

    fn states(&self) -> HealthStates {
        self.lock().health.clone()
    }
}
