//! The CA identity guard (docs/health.md, "CA identity guard"): a master
//! with role `ca` is published only while the CA certificate it serves on
//! `/puppet-ca/v1/certificate/ca` is one of `health.ca_file`'s. Mock
//! masters serve the trusted CA, another CA, and hostile answers; the
//! daemon is asked over DNS and through the control API (`srvctl status`).

use crate::common;

use std::time::{Duration, Instant};

use common::mock_master::{CA_PATH, MockMaster, TestCa};
use common::{BASE_CONFIG, TestDaemon, srv};
use hickory_proto::rr::RecordType;

const CA1: &str = "ca1.dc1.puppet.example.test";
const CA2: &str = "ca2.dc2.puppet.example.test";
const PM1: &str = "pm1.dc1.puppet.example.test";
const CA_DC1: &str = "_x-puppet-ca._tcp.dc1.puppet.example.test.";
const PUPPET_DC1: &str = "_x-puppet._tcp.dc1.puppet.example.test.";
const LIMIT: Duration = Duration::from_secs(20);

fn config() -> String {
    format!(
        "{}\n[health]\ninterval = \"300ms\"\nfast_interval = \"100ms\"\ntimeout = \"500ms\"\nrise = 2\nfall = 2\nca_file = \"{{dir}}/ca.pem\"\n\n[policy]\nca_order = [\"{CA1}\", \"{CA2}\"]\n",
        BASE_CONFIG.replace("registry = \"{dir}/masters.toml\"", "registry = \"{dir}/masters.toml\"\nmetrics = \"127.0.0.1:0\"")
    )
}

async fn start(ca: &TestCa, registry: &str) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
    TestDaemon::start_in(dir, &config(), registry).await.expect("daemon starts")
}

async fn targets(d: &TestDaemon, name: &str) -> Vec<String> {
    srv(&d.udp(name, RecordType::SRV).await).into_iter().map(|r| r.3).collect()
}

async fn wait_targets(d: &TestDaemon, name: &str, want: &[&str]) {
    let t0 = Instant::now();
    loop {
        let got = targets(d, name).await;
        if got == want {
            return;
        }
        assert!(t0.elapsed() < LIMIT, "{name}: still {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// The status row of (host, role) once `ok` holds for it.
async fn role_until(
    d: &TestDaemon,
    host: &str,
    role: &str,
    ok: impl Fn(&srvd::control::proto::RoleHealth) -> bool,
) -> srvd::control::proto::RoleHealth {
    let control = d.running.as_ref().unwrap().control.clone();
    let t0 = Instant::now();
    loop {
        let st = control.status();
        let row = st.masters.iter().find(|m| m.master.host == host).and_then(|m| m.health.iter().find(|h| h.role == role)).cloned();
        if let Some(r) = row.filter(|r| ok(r)) {
            return r;
        }
        assert!(t0.elapsed() < LIMIT, "{host} {role}: condition not met: {st:#?}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_serving_another_ca_certificate_is_never_published() {
    let trusted = TestCa::new();
    let other = TestCa::new();
    let ca1 = MockMaster::start(&trusted, CA1).await;
    let ca2 = MockMaster::start(&trusted, CA2).await;
    // The primary was restored with a fresh CA: its CA service hands out
    // another certificate than the one agents trust.
    ca1.serve(CA_PATH, 200, &other.cert_pem);
    let reg = format!("{}{}", ca1.registry_entry("dc1", &["ca"]), ca2.registry_entry("dc2", &["ca"]));
    let d = start(&trusted, &reg).await;

    let want_reason = format!("serves a different CA certificate (fingerprint {})", other.fingerprint());
    let r = role_until(&d, CA1, "ca", |r| r.state == "down").await;
    assert_eq!(r.reason.as_deref(), Some(want_reason.as_str()));
    assert_eq!(r.ca_fingerprint.as_deref(), Some(other.fingerprint().as_str()), "status shows what it serves");
    assert!(!r.published);
    // The standby that serves the trusted CA takes over; the primary is never in the answer.
    wait_targets(&d, CA_DC1, &[CA2]).await;
    let r2 = role_until(&d, CA2, "ca", |r| r.state == "up").await;
    assert_eq!(r2.ca_fingerprint.as_deref(), Some(trusted.fingerprint().as_str()));
    assert!(other.fingerprint() != trusted.fingerprint() && trusted.fingerprint().starts_with("SHA256:"));

    // The explain reason names the fingerprint too.
    let e = d.running.as_ref().unwrap().control.explain(Some("dc1")).unwrap();
    let ca_name = e.names.iter().find(|n| n.role == "ca").unwrap();
    let v = ca_name.masters.iter().find(|m| m.master.starts_with(CA1)).unwrap();
    assert!(v.reason.contains("serves a different CA certificate"), "{v:?}");

    // The status API (behind the status page) carries what each CA serves.
    let (code, _, body) = common::http(d.metrics_addr(), "GET /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(code, 200);
    assert!(body.contains(&format!("\"ca_fingerprint\":\"{}\"", other.fingerprint())), "{body}");

    // Fixed (the right CA restored): the primary comes back and is active again.
    ca1.serve(CA_PATH, 200, &trusted.cert_pem);
    role_until(&d, CA1, "ca", |r| r.state == "up").await;
    wait_targets(&d, CA_DC1, &[CA1]).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ca_answers_take_the_ca_down_with_a_reason() {
    let trusted = TestCa::new();
    let ca1 = MockMaster::start(&trusted, CA1).await;
    let reg = ca1.registry_entry("dc1", &["ca"]);
    let d = start(&trusted, &reg).await;
    role_until(&d, CA1, "ca", |r| r.state == "up").await;

    let half = &trusted.cert_pem[..trusted.cert_pem.len() / 2];
    let bad_base64 = "-----BEGIN CERTIFICATE-----\n!!!! not base64 ****\n-----END CERTIFICATE-----\n";
    let cases: &[(u16, String, &str)] = &[
        (404, "no CA here".into(), "CA certificate: HTTP 404 from /puppet-ca/v1/certificate/ca"),
        (200, String::new(), "CA certificate: the answer holds no PEM certificate"),
        (200, "<html>hello</html>".into(), "CA certificate: the answer holds no PEM certificate"),
        (200, half.to_string(), "CA certificate: the answer"),
        (200, bad_base64.into(), "CA certificate: the answer"),
        (200, "x".repeat(100 * 1024), "CA certificate: answer larger than 64 KiB"),
    ];
    for (status, body, reason) in cases {
        // A CA's certificate changes with a restart (new connections): the
        // served one is compared on every new connection.
        ca1.serve(CA_PATH, *status, body);
        ca1.drop_connections();
        let r = role_until(&d, CA1, "ca", |r| r.state == "down").await;
        assert!(r.reason.as_deref().is_some_and(|x| x.starts_with(reason)), "{status} {:?}: {:?}", body.get(..20), r.reason);
        // While no CA is up, the first CA stays published (DESIGN §3): the
        // guard never empties the answer.
        assert_eq!(targets(&d, CA_DC1).await, vec![CA1.to_string()]);
        ca1.serve(CA_PATH, 200, &trusted.cert_pem);
        role_until(&d, CA1, "ca", |r| r.state == "up").await;
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_certificate_is_fetched_per_connection_not_per_check_and_compilers_are_not_asked() {
    let trusted = TestCa::new();
    let other = TestCa::new();
    let ca1 = MockMaster::start(&trusted, CA1).await;
    let pm1 = MockMaster::start(&trusted, PM1).await;
    // A compiler whose CA path answers garbage (it is no CA): irrelevant to its roles.
    pm1.serve(CA_PATH, 200, &other.cert_pem);
    let reg = format!("{}{}", ca1.registry_entry("dc1", &["ca", "puppet"]), pm1.registry_entry("dc1", &["puppet"]));
    let d = start(&trusted, &reg).await;
    role_until(&d, CA1, "ca", |r| r.state == "up").await;
    wait_targets(&d, PUPPET_DC1, &[CA1, PM1]).await;
    let t0 = Instant::now();
    while ca1.requests_for("/status/v1/simple/ca") < 10 {
        assert!(t0.elapsed() < LIMIT, "ca checks do not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (checks, fetched, conns) = (ca1.requests_for("/status/v1/simple/ca"), ca1.requests_for(CA_PATH), ca1.connections());
    eprintln!("{checks} ca checks, {fetched} CA certificate fetches, {conns} connections");
    assert!(fetched >= 1 && fetched <= conns, "{fetched} CA fetches for {checks} checks on {conns} connections");
    assert!(fetched * 3 < checks, "{fetched} CA fetches for {checks} checks");
    assert_eq!(pm1.requests_for(CA_PATH), 0, "a non-CA master is never asked for the CA certificate");
    assert!(ca1.requests_for("/status/v1/simple") >= 1, "the puppet role of the CA is checked as before");
    let puppet = role_until(&d, CA1, "puppet", |r| r.state == "up").await;
    assert_eq!(puppet.ca_fingerprint, None);
    assert_eq!(targets(&d, PUPPET_DC1).await, vec![CA1.to_string(), PM1.to_string()]);
    d.stop().await;
}
