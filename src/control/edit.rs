//! Changes (add-master, remove-master, drain, undrain, set-weight) and
//! reload: validate, write the registry atomically, then apply.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use super::Control;
use super::proto::{AddMaster, ChangeReport, Failure, ReloadReport, Reply, Request, Response};
use crate::health::{Health, HealthStates};
use crate::input::config::Config;
use crate::input::fsutil::write_atomic;
use crate::input::regedit::RegistryDoc;
use crate::input::registry::{Master, MasterKey, RawMaster, Registry, read_text, split_host_port, validate_master};
use crate::zone::publish::{Inputs, PublishError, check_registry_against_statics};

fn refused(msg: impl Into<String>) -> Failure {
    Failure::new(msg)
}

/// Finds the one master `spec` ("host" or "host:port") names; its index in file order.
pub(super) fn find_master<'r>(registry: &'r Registry, spec: &str) -> Result<(usize, &'r Master), Failure> {
    let (host, _) = split_host_port(spec);
    if let Err(r) = crate::input::names::parse_absolute(host) {
        return Err(refused(format!("{spec:?} is not a host name: {r}")));
    }
    let found = registry.find(spec);
    match found.as_slice() {
        [m] => {
            let i = registry.masters.iter().position(|x| x.key() == m.key()).expect("found in registry");
            Ok((i, m))
        }
        [] => {
            let same_host = registry.find(host);
            if same_host.is_empty() {
                Err(refused(format!("no master {spec} in the registry (see `srvctl list`)")))
            } else {
                let ports: Vec<String> = same_host.iter().map(|m| m.port.to_string()).collect();
                Err(refused(format!("no master {spec}: {host} is registered on port {} only", ports.join(", "))))
            }
        }
        many => {
            let ids: Vec<String> = many.iter().map(|m| m.key().to_string()).collect();
            Err(refused(format!("{spec} is ambiguous: it runs on several ports ({}); give HOST:PORT", ids.join(", "))))
        }
    }
}

impl Control {
    /// Applies one change request; blocking (file I/O), serialised.
    pub(super) fn change(self: &Arc<Self>, req: &Request) -> Response {
        let mut st = self.edit_state();
        let (config, statics, registry) = {
            let core = self.publisher.lock();
            (core.inputs.config.clone(), core.inputs.statics.clone(), core.inputs.registry.clone())
        };
        let path = config.server.registry.clone();
        let disk = match read_text(&path) {
            Ok(t) => t,
            Err(e) => return Response::Error(Failure::new(format!("cannot read the registry {}: {e}", path.display()))),
        };
        if disk != st.text {
            return Response::Refused(refused(format!(
                "the registry file {} was edited since srvd last read it; check it and run `srvctl reload` first",
                path.display()
            )));
        }
        let mut doc = match RegistryDoc::parse(disk.as_deref().unwrap_or("")) {
            Ok(d) if d.len() == registry.masters.len() => d,
            Ok(_) => {
                return Response::Refused(refused(format!(
                    "the registry file {} does not match what srvd loaded; run `srvctl reload`",
                    path.display()
                )));
            }
            Err(e) => return Response::Refused(refused(format!("{}: {e}", path.display()))),
        };

        let mut notes = Vec::new();
        let (key, changed) = match req {
            Request::AddMaster(a) => {
                let m = match new_master(a, &config, &registry) {
                    Ok(m) => m,
                    Err(f) => return Response::Refused(f),
                };
                doc.append(&m, a.check.is_some());
                notes.push("pending: published after its first successful health check".to_string());
                (m.key(), true)
            }
            Request::RemoveMaster(t) => {
                let (i, m) = match find_master(&registry, &t.host) {
                    Ok(x) => x,
                    Err(f) => return Response::Refused(f),
                };
                if let Err(e) = doc.remove(i) {
                    return Response::Error(Failure::new(e.to_string()));
                }
                if !m.drained {
                    notes.push(format!("it was not drained: cached answers may name it for up to {}s (zone ttl)", config.zone.ttl));
                }
                (m.key(), true)
            }
            Request::Drain(super::proto::DrainArgs { host, .. }) | Request::Undrain(super::proto::Target { host }) => {
                let t = super::proto::Target { host: host.clone() };
                let want = matches!(req, Request::Drain(_));
                let (i, m) = match find_master(&registry, &t.host) {
                    Ok(x) => x,
                    Err(f) => return Response::Refused(f),
                };
                if m.drained == want {
                    notes.push(format!("already {}", if want { "drained" } else { "not drained" }));
                    (m.key(), false)
                } else {
                    if let Err(e) = doc.set_drained(i, want) {
                        return Response::Error(Failure::new(e.to_string()));
                    }
                    if want {
                        notes.push(format!(
                            "still checked; safe to stop once cached answers expire ({}s, see `srvctl status`)",
                            config.zone.ttl
                        ));
                    }
                    (m.key(), true)
                }
            }
            Request::SetWeight(s) => {
                if !(0..=65535).contains(&s.weight) {
                    return Response::Refused(refused(format!("weight {} is not in 0..=65535", s.weight)));
                }
                let (i, m) = match find_master(&registry, &s.host) {
                    Ok(x) => x,
                    Err(f) => return Response::Refused(f),
                };
                if i64::from(m.weight) == s.weight {
                    notes.push(format!("weight already {}", s.weight));
                    (m.key(), false)
                } else {
                    if let Err(e) = doc.set_weight(i, s.weight as u16) {
                        return Response::Error(Failure::new(e.to_string()));
                    }
                    (m.key(), true)
                }
            }
            other => return Response::Error(Failure::new(format!("{} is not a change", other.name()))),
        };

        let before = if matches!(req, Request::RemoveMaster(_)) { self.master_status(&key) } else { None };
        let serial = if changed {
            let text = doc.render();
            let new_registry = match Registry::parse(&text, &path, &config) {
                Ok(r) => r,
                Err(e) => return Response::Refused(e.into()),
            };
            if let Err(e) = check_registry_against_statics(&config, &statics, &new_registry) {
                return Response::Refused(e.into());
            }
            let added = matches!(req, Request::AddMaster(_));
            // The serial first (when the answers change), then the registry
            // file, then the new state: a failure of either write applies nothing.
            let result = self.publisher.try_update(
                |core| {
                    if let Some(m) = new_registry.get(&key).filter(|_| added) {
                        for &r in &m.roles {
                            core.health.insert((key.clone(), r), Health::Pending);
                        }
                    }
                    let index = new_registry.index();
                    core.health.retain(|(k, r), _| index.get(k).is_some_and(|m| m.has_role(*r)));
                    core.inputs.registry = new_registry.clone();
                },
                || write_atomic(&path, text.as_bytes()),
            );
            let serial = match result {
                Ok(((), serial)) => serial,
                Err(PublishError::Serial(e)) => {
                    return Response::Error(Failure::new(format!(
                        "{e}; nothing changed (the registry {} was not written, the answers and serial are unchanged)",
                        path.display()
                    )));
                }
                Err(PublishError::Commit(e)) => {
                    return Response::Error(Failure::new(format!("cannot write the registry {}: {e} (nothing changed)", path.display())));
                }
            };
            st.text = Some(text);
            self.note_drains(SystemTime::now());
            serial
        } else {
            self.publisher.snapshot().serial
        };
        drop(st);
        let master = match before.or_else(|| self.master_status(&key)) {
            Some(m) => m,
            None => return Response::Error(Failure::new(format!("{key} vanished while being changed"))),
        };
        Response::Ok(Reply::Change(ChangeReport { action: req.name().into(), changed, master, serial, notes, wait: None }))
    }

    /// Brings the drain times in line with the registry: newly drained
    /// masters get `now`, masters no longer drained (or gone) lose theirs.
    fn note_drains(&self, now: SystemTime) {
        let drained: HashSet<MasterKey> =
            self.publisher.lock().inputs.registry.masters.iter().filter(|m| m.drained).map(|m| m.key()).collect();
        let mut d = self.drains();
        d.retain(|k, _| drained.contains(k));
        for k in drained {
            d.entry(k).or_insert(now);
        }
    }

    /// Re-reads config, zone file and registry (not forced: see
    /// [`Control::reload_with`]). This is what SIGHUP does.
    pub fn reload(&self) -> Response {
        self.reload_with(false)
    }

    /// Re-reads config, zone file and registry. On any error the old state
    /// keeps serving and the error names file, key and reason. Unless
    /// `force`, a reload that would remove every master, or more than half
    /// of them and more than one (`mass_removal`), is refused: an empty or
    /// missing registry is more often a half-written file than an intent.
    pub fn reload_with(&self, force: bool) -> Response {
        let mut st = self.edit_state();
        let old = self.publisher.lock().inputs.clone();
        let loaded = Config::load(&old.config.path).and_then(Inputs::load);
        let (inputs, text) = match loaded {
            Ok(i) => {
                for w in i.config.warnings() {
                    tracing::warn!("{w}");
                }
                let text = i.registry_text.clone();
                (i, text)
            }
            Err(e) => {
                tracing::warn!(error = %e, "reload refused; still serving the previous configuration");
                self.count_reload(false);
                let mut f = Failure::from(e.clone());
                f.message = format!("{e} (still serving the previous state)");
                return Response::Refused(f);
            }
        };
        let (added, removed, modified) = diff(&old.registry, &inputs.registry);
        let (before_n, after_n) = (old.registry.masters.len(), inputs.registry.masters.len());
        if mass_removal(before_n, removed.len()) {
            let path = inputs.config.server.registry.display().to_string();
            let what = if text.is_none() {
                "does not exist"
            } else if after_n == 0 {
                "has no masters"
            } else {
                "lists too few masters"
            };
            if force {
                tracing::warn!(file = %path, before = before_n, after = after_n, removed = removed.len(), "reload --force removes {} of {before_n} masters", removed.len());
            } else {
                tracing::warn!(
                    file = %path,
                    before = before_n,
                    after = after_n,
                    removed = removed.len(),
                    "reload refused: the registry {what} and would remove {} of {before_n} masters; still serving the previous state (srvctl reload --force applies it)",
                    removed.len()
                );
                self.count_reload(false);
                let mut f = Failure::new(format!(
                    "the registry {path} {what}: reloading would remove {} of {before_n} masters ({after_n} left); \
                     still serving the previous state. If this is intended, run `srvctl reload --force`",
                    removed.len()
                ));
                f.file = Some(path);
                f.reason = Some(format!("would remove {} of {before_n} masters", removed.len()));
                return Response::Refused(f);
            }
        }
        let mut restart_needed = Vec::new();
        let (o, n) = (&old.config.server, &inputs.config.server);
        if o.listen != n.listen {
            restart_needed.push("server.listen".to_string());
        }
        if o.control_socket != n.control_socket {
            restart_needed.push("server.control_socket".to_string());
        }
        if o.state_dir != n.state_dir {
            restart_needed.push("server.state_dir".to_string());
        }
        if o.metrics != n.metrics {
            restart_needed.push("server.metrics".to_string());
        }
        let before = self.publisher.snapshot().serial;
        let new_registry = inputs.registry.clone();
        let result = self.publisher.try_update(
            |core| {
                let (old_index, new_index) = (old.registry.index(), new_registry.index());
                let fresh: HealthStates = new_registry
                    .masters
                    .iter()
                    .flat_map(|m| m.roles.iter().map(move |&r| (m.key(), r)))
                    .filter(|(k, r)| old_index.get(k).is_none_or(|om| !om.has_role(*r)))
                    .map(|kr| (kr, Health::Pending))
                    .collect();
                core.health.retain(|(k, r), _| new_index.get(k).is_some_and(|m| m.has_role(*r)));
                core.health.extend(fresh);
                core.inputs = inputs.clone();
            },
            || Ok::<(), std::convert::Infallible>(()),
        );
        let serial = match result {
            Ok(((), serial)) => serial,
            Err(e) => {
                tracing::error!(error = %e, "reload not applied; still serving the previous state");
                self.count_reload(false);
                return Response::Error(Failure::new(format!("{e}; reload not applied, still serving the previous state")));
            }
        };
        st.text = text;
        drop(st);
        self.note_drains(SystemTime::now());
        self.count_reload(true);
        tracing::info!(serial, added = added.len(), removed = removed.len(), modified = modified.len(), "reloaded");
        Response::Ok(Reply::Reload(ReloadReport { serial, changed: serial != before, added, removed, modified, restart_needed }))
    }
}

/// Whether removing `removed` of `before` masters needs `reload --force`:
/// all of them (at least one), or more than half and more than one. One
/// master removed by hand from a larger estate reloads as usual.
pub(super) fn mass_removal(before: usize, removed: usize) -> bool {
    before > 0 && (removed >= before || (removed > 1 && removed.saturating_mul(2) > before))
}

/// Validates an add-master request into a master that is not registered yet.
fn new_master(a: &AddMaster, config: &Config, registry: &Registry) -> Result<Master, Failure> {
    let (host, port_in_host) = split_host_port(&a.host);
    let port = match (port_in_host, a.port) {
        (Some(p), Some(q)) if i64::from(p) != q => {
            return Err(refused(format!("{} and --port {q} disagree", a.host)));
        }
        (Some(p), _) => Some(i64::from(p)),
        (None, q) => q,
    };
    let raw = RawMaster {
        host: host.to_string(),
        site: a.site.clone(),
        port,
        roles: a.roles.clone(),
        weight: a.weight,
        addresses: if a.addresses.is_empty() { None } else { Some(a.addresses.clone()) },
        drained: None,
        check: a.check.clone(),
    };
    let m = validate_master(raw, config).map_err(|e| refused(e.to_string()))?;
    if let Some(old) = registry.get(&m.key()) {
        return Err(refused(format!(
            "master {} already exists (site {}); use set-weight, drain or remove-master to change it",
            m.key(),
            old.site
        )));
    }
    Ok(m)
}

/// Masters added, removed and modified between two registries ("host:port").
fn diff(old: &Registry, new: &Registry) -> (Vec<String>, Vec<String>, Vec<String>) {
    let added = new.masters.iter().filter(|m| old.get(&m.key()).is_none()).map(|m| m.key().to_string()).collect();
    let removed = old.masters.iter().filter(|m| new.get(&m.key()).is_none()).map(|m| m.key().to_string()).collect();
    let modified = new.masters.iter().filter(|m| old.get(&m.key()).is_some_and(|o| o != *m)).map(|m| m.key().to_string()).collect();
    (added, removed, modified)
}
