//! Health checks against the running daemon: mock Puppet masters (HTTPS with
//! a test CA made at test time) switched at runtime between healthy, 503,
//! 404, refusing, hanging and a wrong-name certificate, with the daemon
//! queried over DNS before and after each switch. Timing is shortened
//! (interval 300 ms) and every wait is a condition with a deadline.

use crate::common;

use std::time::{Duration, Instant};

use common::mock_master::{Behaviour, MockMaster, TestCa};
use common::{BASE_CONFIG, TestDaemon, srv};
use hickory_proto::rr::RecordType;
use srvd::input::registry::{MasterKey, Role};

const PM1: &str = "pm1.dc1.puppet.example.test";
const PM2: &str = "pm2.dc1.puppet.example.test";
const PUPPET_DC1: &str = "_x-puppet._tcp.dc1.puppet.example.test.";
const CA_DC1: &str = "_x-puppet-ca._tcp.dc1.puppet.example.test.";

fn config(extra_health: &str) -> String {
    format!(
        "{BASE_CONFIG}\n[health]\ninterval = \"300ms\"\nfast_interval = \"100ms\"\ntimeout = \"300ms\"\nrise = 2\nfall = 2\nca_file = \"{{dir}}/ca.pem\"\n{extra_health}\n"
    )
}

async fn start(ca: &TestCa, config: &str, registry: &str) -> TestDaemon {
    start_with_files(&[("ca.pem", ca.cert_pem.as_str())], config, registry).await.expect("daemon starts")
}

/// Starts a daemon in a fresh dir holding `files`. Retries when the
/// ephemeral DNS port (UDP and TCP must match) is taken for TCP by a
/// connection of a parallel test.
async fn start_with_files(files: &[(&str, &str)], config: &str, registry: &str) -> Result<TestDaemon, srvd::daemon::DaemonError> {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        for (f, text) in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        match TestDaemon::start_in(dir, config, registry).await {
            Err(e) if e.to_string().contains("Address already in use") => continue,
            r => return r,
        }
    }
    panic!("no free port pair for the daemon");
}

/// SRV targets of `name`, in answer order.
async fn targets(d: &TestDaemon, name: &str) -> Vec<String> {
    srv(&d.udp(name, RecordType::SRV).await).into_iter().map(|r| r.3).collect()
}

/// Polls DNS until the targets of `name` are `want`; returns how long it took.
async fn wait_for(d: &TestDaemon, name: &str, want: &[&str], limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let got = targets(d, name).await;
        if got == want {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "{name}: still {got:?} after {limit:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn key(host: &str, port: u16) -> MasterKey {
    MasterKey { host: srvd::input::names::parse_absolute(host).unwrap(), port }
}

fn status(d: &TestDaemon, m: &MockMaster, role: Role) -> srvd::health::RoleStatus {
    d.running.as_ref().unwrap().health.get(&key(&m.host, m.port), role).expect("a board entry")
}

/// Waits until (master, role) has been checked at least once since start.
async fn first_check(d: &TestDaemon, m: &MockMaster, role: Role) -> srvd::health::RoleStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = d.running.as_ref().unwrap().health.get(&key(&m.host, m.port), role).filter(|s| s.last.is_some()) {
            return s;
        }
        assert!(t0.elapsed() < LIMIT, "{} not checked", m.host);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const LIMIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_a_master_moves_it_out_of_and_back_into_the_answers() {
    let ca = TestCa::new();
    let pm1 = MockMaster::start(&ca, PM1).await;
    let pm2 = MockMaster::start(&ca, PM2).await;
    let reg = pm1.registry_entry("dc1", &["puppet"]) + &pm2.registry_entry("dc1", &["puppet"]);
    let d = start(&ca, &config(""), &reg).await;
    wait_for(&d, PUPPET_DC1, &[PM1, PM2], LIMIT).await;
    // Both masters pass their checks (first checks run at once).
    let st = first_check(&d, &pm1, Role::Puppet).await;
    assert_eq!(st.state, "up", "{st:?}");
    assert_eq!(st.last.as_ref().unwrap().reason, "HTTP 200");

    for (b, reason) in [
        (Behaviour::Status(503), "HTTP 503"),
        (Behaviour::Refuse, "connection refused"),
        (Behaviour::Hang, "timeout after 300ms"),
        (Behaviour::WrongName, "certificate not valid for host"),
        (Behaviour::Status(404), "HTTP 404"),
    ] {
        let serial = d.serial();
        pm1.set(b).await;
        let took = wait_for(&d, PUPPET_DC1, &[PM2], LIMIT).await;
        let st = status(&d, &pm1, Role::Puppet);
        assert_eq!((st.state, st.state_reason.as_str()), ("down", reason), "{b:?}: {st:?}");
        // The answers change first; the new serial follows once stored (fsync).
        let deadline = std::time::Instant::now() + LIMIT;
        while d.serial() <= serial {
            assert!(std::time::Instant::now() < deadline, "{b:?}: serial not bumped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!("{b:?}: gone after {took:?}");
        pm1.set(Behaviour::Healthy).await;
        let took = wait_for(&d, PUPPET_DC1, &[PM1, PM2], LIMIT).await;
        eprintln!("{b:?}: back after {took:?}");
        assert_eq!(status(&d, &pm1, Role::Puppet).state, "up");
    }
    // The healthy master kept one connection alive through all of this
    // (failover is fast now: give it time for 10 checks).
    let deadline = std::time::Instant::now() + LIMIT;
    while pm2.requests() < 10 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pm2.requests() >= 10, "pm2 checked {} times", pm2.requests());
    assert!(pm2.connections() <= 2, "{} connections for {} requests: no reuse", pm2.connections(), pm2.requests());
    assert_eq!(pm2.requests_for("/status/v1/simple/ca"), 0, "puppet-only master gets no CA check");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiler_listed_as_ca_is_up_for_puppet_and_down_for_ca() {
    let ca = TestCa::new();
    let pm1 = MockMaster::start(&ca, PM1).await;
    let ca2 = MockMaster::start(&ca, "ca2.dc2.puppet.example.test").await;
    pm1.set(Behaviour::NotCa).await;
    let reg = pm1.registry_entry("dc1", &["puppet", "ca"]) + &ca2.registry_entry("dc2", &["ca"]);
    let d = start(&ca, &config(""), &reg).await;
    // pm1 comes first in ca_order (site order) but answers 404 on the CA check.
    wait_for(&d, CA_DC1, &["ca2.dc2.puppet.example.test"], LIMIT).await;
    assert_eq!(targets(&d, PUPPET_DC1).await, [PM1]);
    let st = status(&d, &pm1, Role::Ca);
    assert_eq!((st.state, st.state_reason.as_str()), ("down", "not a CA (404)"));
    assert_eq!(first_check(&d, &pm1, Role::Puppet).await.state, "up");
    assert!(pm1.requests_for("/status/v1/simple") > 0 && pm1.requests_for("/status/v1/simple/ca") > 0);
    // The standby CA dies: the first CA of the order is published again
    // (never an empty CA answer), and when it turns into a CA it stays.
    ca2.set(Behaviour::Refuse).await;
    wait_for(&d, CA_DC1, &[PM1], LIMIT).await;
    pm1.set(Behaviour::Healthy).await;
    ca2.set(Behaviour::Healthy).await;
    wait_for(&d, CA_DC1, &[PM1], LIMIT).await;
    let t0 = Instant::now();
    while status(&d, &pm1, Role::Ca).state != "up" {
        assert!(t0.elapsed() < LIMIT);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_survive_a_restart() {
    let ca = TestCa::new();
    let pm1 = MockMaster::start(&ca, PM1).await;
    let pm2 = MockMaster::start(&ca, PM2).await;
    let reg = pm1.registry_entry("dc1", &["puppet"]) + &pm2.registry_entry("dc1", &["puppet"]);
    let cfg = config("");
    let d = start(&ca, &cfg, &reg).await;
    pm1.set(Behaviour::Status(503)).await;
    wait_for(&d, PUPPET_DC1, &[PM2], LIMIT).await;
    let dir = d.stop().await;
    let stored = std::fs::read_to_string(dir.path().join("state/health.json")).unwrap();
    assert!(stored.contains("\"down\""), "{stored}");
    // Restarted while pm1 is still broken: it is never published.
    let files = [("ca.pem", ca.cert_pem.as_str()), ("state/health.json", stored.as_str())];
    let d = start_with_files(&files, &cfg, &reg).await.unwrap();
    assert_eq!(targets(&d, PUPPET_DC1).await, [PM2], "the very first answer after a restart");
    pm1.set(Behaviour::Healthy).await;
    wait_for(&d, PUPPET_DC1, &[PM1, PM2], LIMIT).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_host_is_down_with_that_reason() {
    let ca = TestCa::new();
    let pm1 = MockMaster::start(&ca, PM1).await;
    let reg = pm1.registry_entry("dc1", &["puppet"])
        + "[[master]]\nhost = \"nowhere.invalid\"\nsite = \"dc1\"\n\n"
        + "[[master]]\nhost = \"nowhere.invalid\"\nport = 8141\nsite = \"dc1\"\ncheck = \"tcp\"\n";
    let d = start(&ca, &config(""), &reg).await;
    wait_for(&d, PUPPET_DC1, &[PM1], LIMIT).await;
    let board = d.running.as_ref().unwrap().health.snapshot();
    let nowhere: Vec<_> = board.iter().filter(|s| s.host == "nowhere.invalid").collect();
    assert_eq!(nowhere.len(), 2, "{board:?}");
    for s in nowhere {
        assert_eq!(s.state, "down");
        assert!(s.state_reason.starts_with("cannot resolve nowhere.invalid"), "{s:?}");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_is_presented_when_configured() {
    let ca = TestCa::new();
    let wrong = ca.server_tls(&["wrong-name.example.test"], false);
    let pm1 = MockMaster::start_with(PM1, ca.server_tls(&[PM1], true), wrong.clone(), Behaviour::Healthy).await;
    let pm2 = MockMaster::start(&ca, PM2).await;
    let reg = pm1.registry_entry("dc1", &["puppet"]) + &pm2.registry_entry("dc1", &["puppet"]);

    // Without a client certificate the master refuses the handshake.
    let d = start(&ca, &config(""), &reg).await;
    wait_for(&d, PUPPET_DC1, &[PM2], LIMIT).await;
    let st = status(&d, &pm1, Role::Puppet);
    assert!(st.state_reason.contains("TLS"), "{st:?}");
    eprintln!("without a client certificate: {}", st.state_reason);
    d.stop().await;

    // With one, it is up.
    let id = ca.issue(&["srvd.example.test"]);
    let files = [("ca.pem", ca.cert_pem.as_str()), ("client.pem", id.cert_pem.as_str()), ("client.key", id.key_pem.as_str())];
    let tls = "cert_file = \"{dir}/client.pem\"\nkey_file = \"{dir}/client.key\"\n";
    let d = start_with_files(&files, &config(tls), &reg).await.unwrap();
    assert_eq!(first_check(&d, &pm1, Role::Puppet).await.state, "up");
    assert_eq!(targets(&d, PUPPET_DC1).await, [PM1, PM2]);
    d.stop().await;
}

#[tokio::test]
async fn bad_tls_files_are_config_errors_naming_the_file() {
    let ca = TestCa::new();
    let a = ca.issue(&["a.example.test"]);
    let b = ca.issue(&["b.example.test"]);
    // (extra [health] keys, files to write, the file the error must name)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case> = vec![
        ("", vec![("ca.pem", "not a certificate\n".into())], "ca.pem"),
        (
            "cert_file = \"{dir}/client.pem\"\nkey_file = \"{dir}/client.key\"\n",
            vec![("ca.pem", ca.cert_pem.clone()), ("client.pem", a.cert_pem.clone()), ("client.key", b.key_pem.clone())],
            "client.key",
        ),
        (
            "cert_file = \"{dir}/client.pem\"\nkey_file = \"{dir}/missing.key\"\n",
            vec![("ca.pem", ca.cert_pem.clone()), ("client.pem", a.cert_pem.clone())],
            "missing.key",
        ),
    ];
    for (extra, files, named) in cases {
        let files: Vec<(&str, &str)> = files.iter().map(|(f, t)| (*f, t.as_str())).collect();
        let err = match start_with_files(&files, &config(extra), "").await {
            Ok(_) => panic!("{named}: daemon started"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(named) && err.contains("health."), "{named}: {err}");
    }
}
