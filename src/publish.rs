//! The publisher: holds the current inputs (config, static records, registry,
//! health states), recomputes the zone when one changes, raises the serial
//! when the published data changed, and swaps in a new snapshot.
//!
//! The inputs sit behind a plain mutex that is never held across an await;
//! the DNS side only ever loads the snapshot `Arc`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::policy::{self, HealthStates};
use crate::registry::Registry;
use crate::state::{StateDir, next_serial};
use crate::zone::{self, Snapshot};
use crate::zonefile::{self, StaticRecord};

/// Everything loaded from files, validated together.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub config: Arc<Config>,
    pub statics: Vec<StaticRecord>,
    pub registry: Registry,
    /// The registry file's text `registry` was parsed from (`None`: no file,
    /// or parts assembled in memory).
    pub registry_text: Option<String>,
}

impl Inputs {
    /// Loads config, zone file and registry, checking them against each other.
    pub fn load(config: Config) -> Result<Inputs, ConfigError> {
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
    pub fn assemble(config: Config, statics: Vec<StaticRecord>, registry: Registry) -> Result<Inputs, ConfigError> {
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
pub fn check_registry_against_statics(config: &Config, statics: &[StaticRecord], registry: &Registry) -> Result<(), ConfigError> {
    for (i, m) in registry.masters.iter().enumerate() {
        if let Some(s) = statics.iter().find(|s| s.record.name == m.host && config.zone.origin.zone_of(&m.host)) {
            return Err(ConfigError::new(
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

/// The inputs. The serial and records served are those of the current
/// snapshot, which is only ever replaced while this is locked.
pub struct Core {
    pub inputs: Inputs,
    pub health: HealthStates,
    state: Option<StateDir>,
}

/// Shared between the DNS side, the health checker and the control socket.
pub struct Publisher {
    core: Mutex<Core>,
    snapshot: ArcSwap<Snapshot>,
    serial_tx: watch::Sender<u32>,
    /// Bumped after every [`Publisher::update`] (registry, config, health):
    /// lets the health checker pick up new masters and `srvctl add-master
    /// --wait` see a first check result even when no record changed.
    generation_tx: watch::Sender<u64>,
}

impl Publisher {
    /// Builds the first snapshot. The serial is max(stored + 1, now) and is
    /// stored before anything is served.
    pub fn new(inputs: Inputs, health: HealthStates, state: Option<StateDir>) -> std::io::Result<Arc<Publisher>> {
        let last = match &state {
            Some(s) => s.last_serial()?,
            None => None,
        };
        let serial = next_serial(last, SystemTime::now());
        if let Some(s) = &state {
            s.store_serial(serial)?;
        }
        let answers = policy::compute(&inputs.config, &inputs.registry, &health);
        let nodes = zone::build_nodes(&inputs.config, &inputs.statics, &inputs.registry, &answers);
        let snap = Snapshot::new(&inputs.config, nodes, answers, serial);
        let (serial_tx, _) = watch::channel(serial);
        Ok(Arc::new(Publisher {
            core: Mutex::new(Core { inputs, health, state }),
            snapshot: ArcSwap::from_pointee(snap),
            serial_tx,
            generation_tx: watch::channel(0).0,
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

    /// Locks the inputs. Never hold the guard across an await.
    pub fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a change to the inputs and republishes. Returns the serial now served.
    pub fn update<R>(&self, f: impl FnOnce(&mut Core) -> R) -> (R, u32) {
        let mut core = self.lock();
        let r = f(&mut core);
        let serial = self.republish(&mut core);
        drop(core);
        self.generation_tx.send_modify(|g| *g += 1);
        (r, serial)
    }

    /// Recomputes the zone from the locked inputs; swaps it in if it differs.
    pub fn republish(&self, core: &mut Core) -> u32 {
        let cfg = core.inputs.config.clone();
        let answers = policy::compute(&cfg, &core.inputs.registry, &core.health);
        let nodes = zone::build_nodes(&cfg, &core.inputs.statics, &core.inputs.registry, &answers);
        let cur = self.snapshot.load();
        let config_changed = cur.soa != zone::soa_record(&cfg, cur.serial);
        if nodes == cur.nodes && !config_changed {
            if cur.answers != answers || *cur.xfr != crate::xfr::Access::from_config(&cfg) {
                // Same records, different explanation (e.g. a pending master)
                // or other transfer settings: keep the serial.
                self.snapshot.store(Arc::new(Snapshot::new(&cfg, nodes, answers, cur.serial)));
            }
            return cur.serial;
        }
        let serial = next_serial(Some(cur.serial), SystemTime::now());
        if let Some(s) = &core.state
            && let Err(e) = s.store_serial(serial)
        {
            tracing::error!(error = %e, dir = %s.path().display(), "cannot store the SOA serial; serving it anyway");
        }
        self.snapshot.store(Arc::new(Snapshot::new(&cfg, nodes, answers, serial)));
        self.serial_tx.send_replace(serial);
        tracing::info!(serial, "published new zone data");
        serial
    }
}
