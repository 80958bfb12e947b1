//! The publishing policy (DESIGN.md §3) as tables: inputs -> expected records.

use std::path::Path;

use srvd::health::{Health, HealthStates};
use srvd::input::config::Config;
use srvd::input::registry::{MasterKey, Registry, Role};
use srvd::zone::policy::{self, Mode, RoleAnswer, Verdict};

const CONFIG: &str = r#"
[zone]
origin = "puppet.example.com."
[policy]
{policy}
[[site]]
name = "dc1"
failover = ["dc3"]
[[site]]
name = "dc2"
[[site]]
name = "dc3"
failover = ["dc2"]
"#;

const REGISTRY: &str = r#"
[[master]]
host = "a1.example.com"
site = "dc1"
[[master]]
host = "a2.example.com"
site = "dc1"
weight = 5
[[master]]
host = "b1.example.com"
site = "dc2"
roles = ["puppet", "report"]
[[master]]
host = "c1.example.com"
site = "dc3"
port = 8141
[[master]]
host = "ca1.example.com"
site = "dc1"
roles = ["ca"]
[[master]]
host = "ca2.example.com"
site = "dc2"
roles = ["ca"]
[[master]]
host = "ca3.example.com"
site = "dc3"
roles = ["ca", "puppet"]
"#;

fn setup(policy: &str) -> (Config, Registry) {
    let cfg = Config::parse(&CONFIG.replace("{policy}", policy), Path::new("t.toml"), Path::new("/")).unwrap();
    let reg = Registry::parse(REGISTRY, Path::new("m.toml"), &cfg).unwrap();
    (cfg, reg)
}

fn key(host: &str) -> MasterKey {
    let reg_port = if host == "c1" { 8141 } else { 8140 };
    MasterKey { host: srvd::input::names::parse_absolute(&format!("{host}.example.com")).unwrap(), port: reg_port }
}

fn states(list: &[(&str, Role, Health)]) -> HealthStates {
    list.iter().map(|(h, r, s)| ((key(h), *r), *s)).collect()
}

/// (priority, weight, port, short host) of an answer.
fn recs(a: &RoleAnswer) -> Vec<(u16, u16, u16, String)> {
    a.records.iter().map(|t| (t.priority, t.weight, t.port, t.target.to_string().split('.').next().unwrap().to_string())).collect()
}

fn find<'a>(answers: &'a [RoleAnswer], site: Option<&str>, role: Role) -> &'a RoleAnswer {
    answers.iter().find(|a| a.site.as_deref() == site && a.role == role).unwrap()
}

fn r(p: u16, w: u16, port: u16, h: &str) -> (u16, u16, u16, String) {
    (p, w, port, h.to_string())
}

#[test]
fn tiers_per_site_follow_failover_then_config_order() {
    let (cfg, reg) = setup("");
    let all = policy::compute(&cfg, &reg, &HealthStates::new());
    // dc1: [dc1] + failover [dc3] + rest [dc2]
    assert_eq!(
        recs(find(&all, Some("dc1"), Role::Puppet)),
        vec![r(10, 10, 8140, "a1"), r(10, 5, 8140, "a2"), r(20, 10, 8141, "c1"), r(20, 10, 8140, "ca3"), r(30, 10, 8140, "b1")]
    );
    // dc2: no failover list: config order dc1, dc3
    assert_eq!(
        recs(find(&all, Some("dc2"), Role::Puppet)),
        vec![r(10, 10, 8140, "b1"), r(20, 10, 8140, "a1"), r(20, 5, 8140, "a2"), r(30, 10, 8141, "c1"), r(30, 10, 8140, "ca3")]
    );
    // dc3: [dc3, dc2, dc1]
    assert_eq!(
        recs(find(&all, Some("dc3"), Role::Puppet)),
        vec![r(10, 10, 8141, "c1"), r(10, 10, 8140, "ca3"), r(20, 10, 8140, "b1"), r(30, 10, 8140, "a1"), r(30, 5, 8140, "a2")]
    );
    // Site-less pool: everyone at the local priority.
    let pool = recs(find(&all, None, Role::Puppet));
    assert_eq!(pool.len(), 5);
    assert!(pool.iter().all(|x| x.0 == 10));
}

#[test]
fn custom_priorities() {
    let (cfg, reg) = setup("local_priority = 1\npriority_step = 100");
    let all = policy::compute(&cfg, &reg, &HealthStates::new());
    let prios: Vec<u16> = recs(find(&all, Some("dc2"), Role::Puppet)).iter().map(|x| x.0).collect();
    assert_eq!(prios, vec![1, 101, 101, 201, 201]);
}

#[test]
fn down_pending_and_drained_are_left_out() {
    let (cfg, mut reg) = setup("");
    reg.masters.iter_mut().find(|m| m.host_str() == "a2.example.com").unwrap().drained = true;
    let st = states(&[("a1", Role::Puppet, Health::Down), ("c1", Role::Puppet, Health::Pending)]);
    let all = policy::compute(&cfg, &reg, &st);
    let a = find(&all, Some("dc1"), Role::Puppet);
    assert_eq!(recs(a), vec![r(20, 10, 8140, "ca3"), r(30, 10, 8140, "b1")]);
    assert_eq!(a.mode, Mode::Normal);
    let v = |h: &str| a.verdicts.iter().find(|(k, _)| **k == key(h)).unwrap().1.clone();
    assert_eq!(v("a1"), Verdict::Down);
    assert_eq!(v("a2"), Verdict::Drained);
    assert_eq!(v("c1"), Verdict::Pending);
    assert_eq!(v("b1"), Verdict::In { tier: 2, priority: 30 });
}

#[test]
fn all_down_serve_all_publishes_every_non_drained_master_in_order() {
    let (cfg, mut reg) = setup("all_down = \"serve-all\"");
    reg.masters.iter_mut().find(|m| m.host_str() == "b1.example.com").unwrap().drained = true;
    let st = states(&[
        ("a1", Role::Puppet, Health::Down),
        ("a2", Role::Puppet, Health::Down),
        ("c1", Role::Puppet, Health::Down),
        ("ca3", Role::Puppet, Health::Pending),
    ]);
    let all = policy::compute(&cfg, &reg, &st);
    let a = find(&all, Some("dc1"), Role::Puppet);
    assert_eq!(a.mode, Mode::AllDown);
    assert_eq!(recs(a), vec![r(10, 10, 8140, "a1"), r(10, 5, 8140, "a2"), r(20, 10, 8141, "c1"), r(20, 10, 8140, "ca3")]);
}

#[test]
fn all_down_empty_answers_nodata() {
    let (cfg, reg) = setup("all_down = \"empty\"");
    let st = states(&[
        ("a1", Role::Puppet, Health::Down),
        ("a2", Role::Puppet, Health::Down),
        ("b1", Role::Puppet, Health::Down),
        ("c1", Role::Puppet, Health::Down),
        ("ca3", Role::Puppet, Health::Down),
    ]);
    let all = policy::compute(&cfg, &reg, &st);
    let a = find(&all, Some("dc1"), Role::Puppet);
    assert_eq!(a.mode, Mode::Empty);
    assert!(a.records.is_empty());
    // Other roles are unaffected.
    assert_eq!(recs(find(&all, Some("dc1"), Role::Report)), vec![r(30, 10, 8140, "b1")]);
}

#[test]
fn roles_without_masters_are_empty() {
    let (cfg, reg) = setup("");
    let all = policy::compute(&cfg, &reg, &HealthStates::new());
    let f = find(&all, Some("dc1"), Role::Fileserver);
    assert_eq!(f.mode, Mode::NoMasters);
    assert!(f.records.is_empty());
    assert_eq!(recs(find(&all, Some("dc2"), Role::Report)), vec![r(10, 10, 8140, "b1")]);
}

#[test]
fn ca_is_single_active_in_site_order_by_default() {
    let (cfg, reg) = setup("");
    type Case<'a> = (Vec<(&'a str, Role, Health)>, &'a str, Mode);
    let cases: Vec<Case> = vec![
        (vec![], "ca1", Mode::Normal),
        (vec![("ca1", Role::Ca, Health::Down)], "ca2", Mode::Normal),
        (vec![("ca1", Role::Ca, Health::Down), ("ca2", Role::Ca, Health::Down)], "ca3", Mode::Normal),
        // ca3 is down for CA but up as a compiler: not the CA.
        (vec![("ca1", Role::Ca, Health::Pending), ("ca2", Role::Ca, Health::Down), ("ca3", Role::Ca, Health::Down)], "ca1", Mode::AllDown),
    ];
    for (st, want, mode) in cases {
        let all = policy::compute(&cfg, &reg, &states(&st));
        for site in [Some("dc1"), Some("dc2"), Some("dc3"), None] {
            let a = find(&all, site, Role::Ca);
            assert_eq!(recs(a), vec![r(10, 10, 8140, want)], "states {st:?} site {site:?}");
            assert_eq!(a.mode, mode);
        }
    }
}

#[test]
fn ca_order_overrides_site_order_and_standby_is_not_published() {
    let (cfg, reg) = setup("ca_order = [\"ca3.example.com\", \"ca2.example.com\"]");
    let all = policy::compute(&cfg, &reg, &HealthStates::new());
    let a = find(&all, Some("dc1"), Role::Ca);
    assert_eq!(recs(a), vec![r(10, 10, 8140, "ca3")]);
    let v = |h: &str| a.verdicts.iter().find(|(k, _)| **k == key(h)).unwrap().1.clone();
    assert_eq!(v("ca2"), Verdict::StandbyCa);
    assert_eq!(v("ca1"), Verdict::StandbyCa);
    let st = states(&[("ca3", Role::Ca, Health::Down)]);
    let all = policy::compute(&cfg, &reg, &st);
    assert_eq!(recs(find(&all, Some("dc3"), Role::Ca)), vec![r(10, 10, 8140, "ca2")]);
}

#[test]
fn ca_stays_published_when_all_down_is_empty() {
    let (cfg, mut reg) = setup("all_down = \"empty\"");
    reg.masters.iter_mut().find(|m| m.host_str() == "ca1.example.com").unwrap().drained = true;
    let st = states(&[("ca2", Role::Ca, Health::Down), ("ca3", Role::Ca, Health::Down)]);
    let all = policy::compute(&cfg, &reg, &st);
    // First non-drained CA of the order (ca1 is drained).
    assert_eq!(recs(find(&all, Some("dc1"), Role::Ca)), vec![r(10, 10, 8140, "ca2")]);
}

#[test]
fn all_cas_drained_means_nodata() {
    let (cfg, mut reg) = setup("");
    for m in reg.masters.iter_mut().filter(|m| m.has_role(Role::Ca)) {
        m.drained = true;
    }
    let all = policy::compute(&cfg, &reg, &HealthStates::new());
    let a = find(&all, Some("dc1"), Role::Ca);
    assert!(a.records.is_empty());
    assert_eq!(a.mode, Mode::NoMasters);
}

#[test]
fn every_site_and_the_pool_get_all_four_roles() {
    let (cfg, reg) = setup("");
    let all = policy::compute(&cfg, &reg, &HealthStates::new());
    assert_eq!(all.len(), 4 * 4);
    for site in [Some("dc1"), Some("dc2"), Some("dc3"), None] {
        for role in Role::ALL {
            find(&all, site, role);
        }
    }
}
