//! `server.metrics`: the real daemon on ephemeral ports, queried over DNS
//! (UDP and TCP), then scraped over HTTP. Counter values are asserted
//! exactly; waits are conditions with a deadline.

use crate::common;
use crate::common::http;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::TcpStream;

const O: &str = "puppet.example.test.";

fn config(extra: &str) -> String {
    let server = "registry = \"{dir}/masters.toml\"";
    format!("{}\n{extra}\n", BASE_CONFIG.replace(server, &format!("{server}\nmetrics = \"127.0.0.1:0\"")))
}

/// 20 masters with long names: the dc1 SRV answer does not fit in 512 bytes.
fn big_registry() -> String {
    (0..20)
        .map(|i| format!("[[master]]\nhost = \"compiler-{i:02}.dc1.puppet.example.test\"\nsite = \"dc1\"\naddresses = [\"127.0.2.{i}\"]\n"))
        .collect()
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: srvd\r\nAccept: text/plain\r\n\r\n")).await
}

/// Samples of a scrape: "name{labels}" -> value.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series and value");
            (series.to_string(), value.parse().expect("numeric value"))
        })
        .collect()
}

async fn scrape(d: &TestDaemon) -> BTreeMap<String, f64> {
    let (status, _, body) = get(d.metrics_addr(), "/metrics").await;
    assert_eq!(status, 200);
    samples(&body)
}

/// Scrapes until `want` holds for every listed series, or fails after 10 s.
async fn scrape_until(d: &TestDaemon, want: &[(&str, f64)]) -> BTreeMap<String, f64> {
    let t0 = Instant::now();
    loop {
        let got = scrape(d).await;
        if want.iter().all(|(k, v)| got.get(*k) == Some(v)) {
            return got;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let diff: Vec<_> = want.iter().map(|(k, v)| format!("{k}: want {v}, got {:?}", got.get(*k))).collect();
            panic!("metrics not as expected after 10 s:\n{}", diff.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn edns_v1_query(name: &str) -> Vec<u8> {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::SOA));
    let mut e = Edns::new();
    e.set_version(1);
    m.set_edns(e);
    m.to_vec().unwrap()
}

#[tokio::test]
async fn dns_counters_are_exact() {
    let d = TestDaemon::start_all_up(&config(""), &big_registry()).await;
    let before = scrape(&d).await;
    assert_eq!(before["srvd_dns_responses_total{transport=\"udp\",rcode=\"noerror\"}"], 0.0);
    assert_eq!(before["srvd_zone_serial"], f64::from(d.serial()));

    // UDP: three answers from templates, one NODATA from a template, an
    // NXDOMAIN from the fast path's NXDOMAIN template ...
    for _ in 0..3 {
        assert_eq!(d.udp(O, RecordType::SOA).await.metadata.response_code, ResponseCode::NoError);
    }
    let m = d.udp(O, RecordType::TXT).await;
    assert!(m.answers.is_empty() && m.metadata.response_code == ResponseCode::NoError);
    // ... and through the general path: a truncated SRV answer, REFUSED, BADVERS.
    assert!(d.udp(&format!("_x-puppet._tcp.dc1.{O}"), RecordType::SRV).await.metadata.truncation);
    assert_eq!(d.udp(&format!("nothing.{O}"), RecordType::A).await.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(d.udp("www.example.com.", RecordType::A).await.metadata.response_code, ResponseCode::Refused);
    let bv = query_udp(d.addr, &edns_v1_query(O)).await;
    assert_eq!(u16::from(bv.metadata.response_code), 16, "BADVERS");
    // A response sent to srvd gets nothing back.
    let mut resp = build_query(O, RecordType::SOA, None);
    resp[2] |= 0x80;
    assert!(raw_udp_within(d.addr, &resp, Duration::from_millis(200)).await.is_none());
    // TCP (general path only): the full SRV answer and an NXDOMAIN on one connection.
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    let m = tcp_exchange(&mut s, &build_query(&format!("_x-puppet._tcp.dc1.{O}"), RecordType::SRV, None)).await;
    assert_eq!(srv(&m).len(), 20);
    let m = tcp_exchange(&mut s, &build_query(&format!("nothing.{O}"), RecordType::A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

    let got = scrape_until(&d, &[("srvd_dns_dropped_total{transport=\"udp\"}", 1.0)]).await;
    let want: &[(&str, f64)] = &[
        ("srvd_dns_responses_total{transport=\"udp\",rcode=\"noerror\"}", 4.0),
        ("srvd_dns_responses_total{transport=\"udp\",rcode=\"nodata\"}", 1.0),
        ("srvd_dns_responses_total{transport=\"udp\",rcode=\"nxdomain\"}", 1.0),
        ("srvd_dns_responses_total{transport=\"udp\",rcode=\"refused\"}", 1.0),
        ("srvd_dns_responses_total{transport=\"udp\",rcode=\"badvers\"}", 1.0),
        ("srvd_dns_responses_total{transport=\"udp\",rcode=\"formerr\"}", 0.0),
        ("srvd_dns_responses_total{transport=\"udp\",rcode=\"servfail\"}", 0.0),
        ("srvd_dns_responses_total{transport=\"tcp\",rcode=\"noerror\"}", 1.0),
        ("srvd_dns_responses_total{transport=\"tcp\",rcode=\"nxdomain\"}", 1.0),
        ("srvd_dns_responses_total{transport=\"tcp\",rcode=\"refused\"}", 0.0),
        ("srvd_dns_responses_by_path_total{transport=\"udp\",path=\"fast\"}", 5.0),
        ("srvd_dns_responses_by_path_total{transport=\"udp\",path=\"general\"}", 3.0),
        ("srvd_dns_responses_by_path_total{transport=\"tcp\",path=\"fast\"}", 0.0),
        ("srvd_dns_responses_by_path_total{transport=\"tcp\",path=\"general\"}", 2.0),
        ("srvd_dns_truncated_total{transport=\"udp\"}", 1.0),
        ("srvd_dns_truncated_total{transport=\"tcp\"}", 0.0),
        ("srvd_dns_dropped_total{transport=\"udp\"}", 1.0),
        ("srvd_dns_dropped_total{transport=\"tcp\"}", 0.0),
    ];
    for (k, v) in want {
        assert_eq!(got.get(*k), Some(v), "{k}");
    }
    let total: f64 = got.iter().filter(|(k, _)| k.starts_with("srvd_dns_responses_total{")).map(|(_, v)| v).sum();
    assert_eq!(total, 10.0, "no other response counted");
    assert_eq!(got["srvd_zone_serial"], f64::from(d.serial()));
    assert_eq!(got["srvd_build_info{version=\"0.1.0\"}"], 1.0);
    assert_eq!(
        got["srvd_masters{site=\"dc1\",role=\"puppet\",state=\"up\"}"]
            + got["srvd_masters{site=\"dc1\",role=\"puppet\",state=\"unchecked\"}"],
        20.0
    );
    assert_eq!(got["srvd_master_up{master=\"compiler-07.dc1.puppet.example.test:8140\",site=\"dc1\",role=\"puppet\"}"], 1.0);
    assert_eq!(got["srvd_master_drained{master=\"compiler-07.dc1.puppet.example.test:8140\",site=\"dc1\"}"], 0.0);
}

/// Checks scripted per host: a host in `failing` fails its checks.
#[derive(Clone, Default)]
struct Switch {
    failing: Arc<std::sync::Mutex<HashSet<String>>>,
}

struct SwitchCheck {
    host: String,
    switch: Switch,
}

#[async_trait::async_trait]
impl srvd::health::Check for SwitchCheck {
    async fn check(&mut self) -> srvd::health::CheckOutcome {
        if self.switch.failing.lock().unwrap().contains(&self.host) {
            srvd::health::CheckOutcome::fail("test: switched off")
        } else {
            srvd::health::CheckOutcome::ok("test: up")
        }
    }
}

impl srvd::health::CheckFactory for Switch {
    fn make(&self, m: &srvd::input::registry::Master, _p: srvd::health::Probe) -> Box<dyn srvd::health::Check> {
        Box::new(SwitchCheck { host: m.host_str(), switch: self.clone() })
    }
}

const TWO_MASTERS: &str = r#"
[[master]]
host = "pm1.example.com"
site = "dc1"
[[master]]
host = "pm2.example.com"
site = "dc1"
[[master]]
host = "pm3.example.com"
site = "dc1"
drained = true
"#;

const FAST_HEALTH: &str = "[health]\ninterval = \"100ms\"\nfast_interval = \"50ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n";

#[tokio::test]
async fn health_transitions_serial_and_reloads_are_reflected() {
    let switch = Switch::default();
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start_in_with(dir, &config(FAST_HEALTH), TWO_MASTERS, Some(Arc::new(switch.clone()))).await.unwrap();
    let pm1_up = "srvd_master_up{master=\"pm1.example.com:8140\",site=\"dc1\",role=\"puppet\"}";
    let dc1_up = "srvd_masters{site=\"dc1\",role=\"puppet\",state=\"up\"}";
    let dc1_down = "srvd_masters{site=\"dc1\",role=\"puppet\",state=\"down\"}";
    let got = scrape_until(&d, &[(dc1_up, 3.0), (pm1_up, 1.0)]).await;
    assert_eq!(got["srvd_master_drained{master=\"pm3.example.com:8140\",site=\"dc1\"}"], 1.0);
    assert_eq!(got["srvd_master_drained{master=\"pm1.example.com:8140\",site=\"dc1\"}"], 0.0);
    assert_eq!(got["srvd_health_transitions_total{to=\"down\"}"], 0.0);
    assert_eq!(got["srvd_health_check_failures_total"], 0.0);
    assert!(got["srvd_health_checks_total"] >= 2.0);
    let serial_before = d.serial();

    switch.failing.lock().unwrap().insert("pm1.example.com".into());
    let got = scrape_until(&d, &[(pm1_up, 0.0), (dc1_down, 1.0), (dc1_up, 2.0), ("srvd_health_transitions_total{to=\"down\"}", 1.0)]).await;
    assert!(got["srvd_health_check_failures_total"] >= 1.0);
    // The answers change first; the new serial follows once stored (fsync).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while d.serial() <= serial_before {
        assert!(std::time::Instant::now() < deadline, "the withdrawal did not raise the serial");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = scrape_until(&d, &[("srvd_zone_serial", f64::from(d.serial()))]).await;
    assert_eq!(got["srvd_health_transitions_total{to=\"up\"}"], 0.0);

    switch.failing.lock().unwrap().clear();
    scrape_until(&d, &[(pm1_up, 1.0), (dc1_up, 3.0), (dc1_down, 0.0), ("srvd_health_transitions_total{to=\"up\"}", 1.0)]).await;

    // Reloads: one applied, then one refused (junk key), counted apart.
    let control = d.running.as_ref().unwrap().control.clone();
    let got = scrape(&d).await;
    assert_eq!((got["srvd_reloads_total"], got["srvd_reload_failures_total"], got["srvd_last_reload_timestamp_seconds"]), (0.0, 0.0, 0.0));
    assert!(matches!(control.reload(), srvd::control::proto::Response::Ok(_)));
    let cfg = d.path("srvd.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}\njunk = 1\n")).unwrap();
    assert!(matches!(control.reload(), srvd::control::proto::Response::Refused(_)));
    let got = scrape(&d).await;
    assert_eq!((got["srvd_reloads_total"], got["srvd_reload_failures_total"]), (1.0, 1.0));
    assert!(got["srvd_last_reload_timestamp_seconds"] >= got["srvd_start_time_seconds"]);
    assert!(got["srvd_start_time_seconds"] > 1.7e9);
}

#[tokio::test]
async fn only_get_and_head_are_served() {
    let d = TestDaemon::start_all_up(&config(""), "").await;
    let a = d.metrics_addr();
    assert!(a.ip().is_loopback() && a.port() != 0);

    let (status, head, body) = get(a, "/metrics").await;
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
    assert_eq!(get(a, "/metrics?name[]=srvd_zone_serial").await.0, 200, "query strings are ignored");

    for path in ["/metrics/", "/metricsx", "/favicon.ico"] {
        assert_eq!(get(a, path).await.0, 404, "{path}");
    }
    // Only GET and HEAD (the status page's routes: tests/status_page.rs).
    assert_eq!(http(a, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await.0, 405);
    let (status, _, body) = http(a, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(http(a, "hello\r\n\r\n").await.0, 400);
}

/// The output follows the text exposition format: every family has HELP and
/// TYPE before its samples, names and labels are well-formed, counters end
/// in `_total`, no series repeats, values are numbers.
#[tokio::test]
async fn output_is_prometheus_text_format() {
    let d = TestDaemon::start_all_up(&config(""), &big_registry()).await;
    d.udp(O, RecordType::SOA).await;
    let (_, _, body) = get(d.metrics_addr(), "/metrics").await;
    assert!(body.ends_with('\n'));
    let name_ok = |n: &str| n.starts_with("srvd_") && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps = HashSet::new();
    let mut series = HashSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(name_ok(name) && !help.is_empty(), "{line}");
            assert!(helps.insert(name.to_string()), "HELP twice: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(helps.contains(name), "TYPE before HELP: {line}");
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "TYPE twice: {line}");
        } else {
            let (s, value) = line.rsplit_once(' ').expect("series value");
            value.parse::<f64>().unwrap_or_else(|_| panic!("bad value: {line}"));
            let name = s.split('{').next().unwrap();
            assert!(name_ok(name), "{line}");
            let kind = types.get(name).unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            if let Some(labels) = s.strip_prefix(name).filter(|l| !l.is_empty()) {
                let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).expect("braced labels");
                for pair in inner.split("\",") {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("label: {line}"));
                    assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
                    assert!(!v.trim_end_matches('"').contains('"'), "{line}");
                }
            }
            assert!(series.insert(s.to_string()), "series twice: {line}");
        }
    }
    assert!(types.len() >= 15, "{} families", types.len());
    for name in types.keys() {
        assert!(series.iter().any(|s| s.split('{').next() == Some(name)), "{name} has no sample");
    }
}

#[tokio::test]
async fn a_taken_metrics_port_is_a_startup_error_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = config("").replace("metrics = \"127.0.0.1:0\"", &format!("metrics = \"127.0.0.1:{port}\""));
    let err = match TestDaemon::try_start(&cfg, "").await {
        Ok(_) => panic!("started although the metrics port is taken"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("server.metrics") && err.contains(&port.to_string()), "{err}");
}

#[tokio::test]
async fn no_metrics_without_the_key() {
    let d = TestDaemon::start_all_up(BASE_CONFIG, "").await;
    assert!(d.running.as_ref().unwrap().metrics_addr.is_none());
}
