//! The status page on the `server.metrics` listener (issue 11): the real
//! daemon with mock Puppet masters (HTTPS, real health checks, interval
//! 300 ms), its JSON at `/api/v1/status` compared with what DNS answers,
//! `/healthz` before and during a stop, the routing, and the page itself
//! (self-contained HTML). `browser` drives the page in headless Chromium
//! through chromedriver (Debian `chromium-driver`, installed by `make deps`).
//! Every wait is a condition with a deadline.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::mock_master::{Behaviour, MockMaster, TestCa};
use common::{BASE_CONFIG, TestDaemon, srv};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const PM1: &str = "pm1.dc1.puppet.example.test";
const PM2: &str = "pm2.dc1.puppet.example.test";
const PM3: &str = "pm3.dc2.puppet.example.test";
const LIMIT: Duration = Duration::from_secs(10);

fn config(extra: &str) -> String {
    let server = "registry = \"{dir}/masters.toml\"";
    format!(
        "{}\n[health]\ninterval = \"300ms\"\nfast_interval = \"100ms\"\ntimeout = \"300ms\"\nrise = 2\nfall = 2\nca_file = \"{{dir}}/ca.pem\"\n{extra}\n",
        BASE_CONFIG.replace(server, &format!("{server}\nmetrics = \"127.0.0.1:0\""))
    )
}

fn entry(m: &MockMaster, site: &str, roles: &[&str], weight: u16) -> String {
    m.registry_entry(site, roles).replacen("[[master]]\n", &format!("[[master]]\nweight = {weight}\n"), 1)
}

/// Three masters: pm1 (dc1, puppet + ca, weight 10), pm2 (dc1, puppet,
/// weight 20), pm3 (dc2, puppet + ca + report, weight 5).
struct Estate {
    _ca: TestCa,
    pm1: MockMaster,
    pm2: MockMaster,
    pm3: MockMaster,
    d: TestDaemon,
}

impl Estate {
    async fn start(extra: &str) -> Estate {
        let ca = TestCa::new();
        let pm1 = MockMaster::start(&ca, PM1).await;
        let pm2 = MockMaster::start(&ca, PM2).await;
        let pm3 = MockMaster::start(&ca, PM3).await;
        let reg = entry(&pm1, "dc1", &["puppet", "ca"], 10)
            + &entry(&pm2, "dc1", &["puppet"], 20)
            + &entry(&pm3, "dc2", &["puppet", "ca", "report"], 5);
        let cfg = config(extra);
        // Retried when the ephemeral DNS port is taken for TCP by a
        // connection of a parallel test (UDP and TCP must match).
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            ca.write(&dir.path().join("ca.pem"));
            match TestDaemon::start_in(dir, &cfg, &reg).await {
                Err(e) if e.to_string().contains("Address already in use") => continue,
                r => return Estate { _ca: ca, pm1, pm2, pm3, d: r.expect("daemon starts") },
            }
        }
        panic!("no free port pair for the daemon");
    }

    fn addr(&self) -> SocketAddr {
        self.d.metrics_addr()
    }
}

/// A raw HTTP exchange: (status code, head, body).
async fn http(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await.expect("HTTP reply in time").unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 reply");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: srvd\r\n\r\n")).await
}

async fn status_doc(addr: SocketAddr) -> Value {
    let (code, head, body) = get(addr, "/api/v1/status").await;
    assert_eq!(code, 200, "{head}\n{body}");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    serde_json::from_str(&body).expect("JSON")
}

/// Polls the status document until `ok` holds for it; returns it.
async fn doc_until(addr: SocketAddr, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let doc = status_doc(addr).await;
        if ok(&doc) {
            return doc;
        }
        assert!(t0.elapsed() < LIMIT, "{what}: not so after {LIMIT:?}:\n{doc:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The role entry of a master in the document.
fn role<'a>(doc: &'a Value, host: &str, role: &str) -> &'a Value {
    let m = doc["masters"].as_array().unwrap().iter().find(|m| m["host"] == host).unwrap_or_else(|| panic!("{host} listed"));
    m["health"].as_array().unwrap().iter().find(|h| h["role"] == role).unwrap_or_else(|| panic!("{host} has {role}"))
}

fn state(doc: &Value, host: &str, r: &str) -> String {
    role(doc, host, r)["state"].as_str().unwrap_or_default().to_string()
}

/// (priority, weight, port, target), as `common::srv` gives them.
type Srv = (u16, u16, u16, String);

/// Every published name of the document: (name, its records in order).
fn answers(doc: &Value) -> Vec<(String, Vec<Srv>)> {
    let mut out = Vec::new();
    for site in doc["sites"].as_array().unwrap() {
        for n in site["names"].as_array().unwrap() {
            let recs = n["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let num = |k: &str| r[k].as_u64().unwrap() as u16;
                    (num("priority"), num("weight"), num("port"), r["target"].as_str().unwrap().to_string())
                })
                .collect();
            out.push((n["name"].as_str().unwrap().to_string(), recs));
        }
    }
    out
}

/// Asserts that DNS answers every name exactly as the document says, in
/// order (retried: a health check may land between the two reads).
async fn answers_match_dns(e: &Estate) {
    let t0 = Instant::now();
    loop {
        let doc = status_doc(e.addr()).await;
        let names = answers(&doc);
        assert_eq!(names.len(), 4 * 4, "3 sites and the apex, 4 roles each");
        let mut diff = Vec::new();
        for (name, want) in &names {
            let got = srv(&e.d.udp(name, RecordType::SRV).await);
            if &got != want {
                diff.push(format!("{name}: page {want:?}, DNS {got:?}"));
            }
        }
        if diff.is_empty() {
            return;
        }
        assert!(t0.elapsed() < LIMIT, "the page's answers differ from DNS:\n{}", diff.join("\n"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all_up(doc: &Value) -> bool {
    [(PM1, "puppet"), (PM1, "ca"), (PM2, "puppet"), (PM3, "puppet"), (PM3, "ca"), (PM3, "report")]
        .iter()
        .all(|(h, r)| state(doc, h, r) == "up" && role(doc, h, r)["last_check"]["ok"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_shows_answers_masters_and_a_failed_master() {
    let e = Estate::start("").await;
    let a = e.addr();
    let doc = doc_until(a, "every master up", all_up).await;
    assert_eq!(doc["zone"], "puppet.example.test.");
    assert_eq!(doc["serial"].as_u64(), Some(u64::from(e.d.serial())));
    assert_eq!(doc["ttl"], 30);
    let (started, now) = (doc["started"].as_u64().unwrap(), doc["now"].as_u64().unwrap());
    assert!(started > 1_700_000_000 && now >= started, "{started} {now}");
    assert_eq!(doc["serving"]["ok"], true);
    assert!(doc["serving"]["udp_workers"].as_u64().unwrap() > 0);
    assert!(doc["serial_store"].is_null());
    assert_eq!(doc["notify"].as_array().unwrap().len(), 0, "no secondaries configured");
    // Sites in config order, then the apex pool.
    let sites: Vec<&Value> = doc["sites"].as_array().unwrap().iter().map(|s| &s["site"]).collect();
    assert_eq!(sites, [&Value::from("dc1"), &Value::from("dc2"), &Value::from("dc3"), &Value::Null]);
    // Per master and role: state, since, last check with latency, drained, weight.
    let r = role(&doc, PM2, "puppet");
    assert!(r["since"].as_u64().unwrap() <= now);
    assert!(r["last_check"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(r["last_check"]["detail"], "HTTP 200");
    let m2 = doc["masters"].as_array().unwrap().iter().find(|m| m["host"] == PM2).unwrap();
    assert_eq!((&m2["weight"], &m2["drained"], &m2["site"]), (&Value::from(20), &Value::from(false), &Value::from("dc1")));
    // dc1's puppet answer: its own masters first (tier 0), dc2's after, in DNS order.
    let dc1 = &doc["sites"][0]["names"][0];
    assert_eq!(dc1["name"], "_x-puppet._tcp.dc1.puppet.example.test.");
    let targets: Vec<&str> = dc1["records"].as_array().unwrap().iter().map(|r| r["target"].as_str().unwrap()).collect();
    assert_eq!(targets, [PM1, PM2, PM3]);
    assert!(dc1["masters"].as_array().unwrap().iter().all(|m| m["in"] == true && m["reason"].as_str().unwrap().starts_with("up")));
    // The active CA and its standby (ca_order: site order).
    assert_eq!(doc["ca"]["active"], format!("{PM1}:{}", e.pm1.port));
    assert_eq!(doc["ca"]["standby"], format!("{PM3}:{}", e.pm3.port));
    assert_eq!(doc["ca"]["mode"], "normal");
    answers_match_dns(&e).await;

    // pm2 crashes: the page shows it down with the reason, and out of dc1's answer.
    e.pm2.set(Behaviour::Refuse).await;
    let doc = doc_until(a, "pm2 down", |d| state(d, PM2, "puppet") == "down").await;
    let r = role(&doc, PM2, "puppet");
    assert_eq!(r["reason"], "connection refused", "{r:#}");
    assert_eq!(r["last_check"]["ok"], false);
    assert_eq!(r["published"], false);
    let v =
        doc["sites"][0]["names"][0]["masters"].as_array().unwrap().iter().find(|m| m["master"].as_str().unwrap().starts_with(PM2)).unwrap();
    assert_eq!((&v["in"], &v["verdict"]), (&Value::from(false), &Value::from("down")));
    assert_eq!(v["reason"], "down: connection refused");
    answers_match_dns(&e).await;

    // The active CA fails: the standby takes over, the page says so.
    e.pm1.set(Behaviour::Refuse).await;
    let doc = doc_until(a, "pm3 active CA", |d| d["ca"]["active"] == format!("{PM3}:{}", e.pm3.port)).await;
    assert!(doc["ca"]["standby"].is_null(), "{:#}", doc["ca"]);
    assert_eq!(doc["ca"]["order"][0]["verdict"], "down");
    answers_match_dns(&e).await;
    e.d.stop().await;
}

/// Answers every NOTIFY on `sock` with NOERROR (a secondary that acknowledges).
async fn ack_notifies(sock: UdpSocket) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else { return };
        let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
        let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Notify);
        r.metadata.response_code = ResponseCode::NoError;
        for query in q.queries {
            r.add_query(query);
        }
        let _ = sock.send_to(&r.to_vec().unwrap(), from).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_state_of_each_secondary_is_shown_and_scraped() {
    let acking = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (acking_addr, silent_addr) = (acking.local_addr().unwrap().to_string(), silent.local_addr().unwrap().to_string());
    tokio::spawn(ack_notifies(acking));
    let extra = format!("[[secondary]]\naddress = \"{acking_addr}\"\n\n[[secondary]]\naddress = \"{silent_addr}\"\nnotify = true\n");
    let e = Estate::start(&extra).await;
    let a = e.addr();
    let entry = |d: &Value, addr: &str| d["notify"].as_array().unwrap().iter().find(|n| n["secondary"] == addr).cloned();
    let doc = doc_until(a, "NOTIFY acknowledged by one, failed for the other", |d| {
        let serial = d["serial"].clone();
        entry(d, &acking_addr).is_some_and(|n| n["acked_serial"] == serial && n["sent_serial"] == serial)
            && entry(d, &silent_addr).is_some_and(|n| n["last_error"].is_string() && n["sent_serial"] == serial)
    })
    .await;
    let serial = doc["serial"].as_u64().unwrap();
    let ok = entry(&doc, &acking_addr).unwrap();
    assert!(ok["last_error"].is_null() && ok["acked_at"].as_u64().unwrap() >= doc["started"].as_u64().unwrap(), "{ok:#}");
    let bad = entry(&doc, &silent_addr).unwrap();
    assert!(bad["acked_serial"].is_null(), "{bad:#}");
    assert!(bad["last_error"].as_str().unwrap().starts_with("no answer within"), "{bad:#}");
    assert!(bad["attempts"].as_u64().unwrap() >= 1);

    let (_, _, metrics) = get(a, "/metrics").await;
    let line = |name: &str, addr: &str| format!("{name}{{secondary=\"{addr}\"}} ");
    assert!(metrics.contains(&format!("{}{serial}\n", line("srvd_notify_acked_serial", &acking_addr))), "{metrics}");
    assert!(metrics.contains(&format!("{}{serial}\n", line("srvd_notify_sent_serial", &silent_addr))), "{metrics}");
    assert!(metrics.contains(&format!("{}0\n", line("srvd_notify_acked_serial", &silent_addr))), "{metrics}");
    assert!(metrics.contains(&format!("{}1\n", line("srvd_notify_in_sync", &acking_addr))), "{metrics}");
    assert!(metrics.contains(&format!("{}0\n", line("srvd_notify_in_sync", &silent_addr))), "{metrics}");
    e.d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_200_while_serving_and_503_once_a_stop_began() {
    let cfg = BASE_CONFIG.replace("registry = \"{dir}/masters.toml\"", "registry = \"{dir}/masters.toml\"\nmetrics = \"127.0.0.1:0\"");
    let d = TestDaemon::start_all_up(&cfg, "").await;
    let a = d.metrics_addr();
    let (code, head, body) = get(a, "/healthz").await;
    assert_eq!((code, body.clone()), (200, format!("ok serial {}\n", d.serial())), "{head}");
    assert!(head.contains("Cache-Control: no-store"), "{head}");
    let (code, _, body) = http(a, "HEAD /healthz HTTP/1.1\r\n\r\n").await;
    assert_eq!((code, body.as_str()), (200, ""));

    // A stop begins: the DNS side stops, the listener still answers, 503.
    d.running.as_ref().unwrap().shutdown.cancel();
    let (code, _, body) = get(a, "/healthz").await;
    assert_eq!((code, body.as_str()), (503, "not serving: shutting down\n"));
    let doc = status_doc(a).await;
    assert_eq!((&doc["serving"]["ok"], &doc["serving"]["reason"]), (&Value::from(false), &Value::from("shutting down")));
    // Once the UDP workers are gone, the status document shows it too.
    let t0 = Instant::now();
    while status_doc(a).await["serving"]["udp_workers"] != 0 {
        assert!(t0.elapsed() < LIMIT, "UDP workers still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The stop completes: the listener is gone.
    d.stop().await;
    assert!(TcpStream::connect(a).await.is_err(), "the listener closed");
}

#[tokio::test]
async fn only_get_and_head_on_the_four_paths() {
    let cfg = BASE_CONFIG.replace("registry = \"{dir}/masters.toml\"", "registry = \"{dir}/masters.toml\"\nmetrics = \"127.0.0.1:0\"");
    let d = TestDaemon::start_all_up(&cfg, "").await;
    let a = d.metrics_addr();
    for (path, ctype) in [
        ("/", "text/html"),
        ("/?x=1", "text/html"),
        ("/api/v1/status", "application/json"),
        ("/healthz", "text/plain"),
        ("/metrics", "text/plain"),
    ] {
        let (code, head, body) = get(a, path).await;
        assert_eq!(code, 200, "{path}: {head}");
        assert!(head.contains(&format!("Content-Type: {ctype}")), "{path}: {head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{path}: {head}");
        let (code, head_only, body) = http(a, &format!("HEAD {path} HTTP/1.1\r\n\r\n")).await;
        assert_eq!((code, body.as_str()), (200, ""), "HEAD {path}");
        assert!(head_only.contains("Content-Length: "), "{head_only}");
    }
    for path in ["/index.html", "/api/v1/status/", "/api/v1", "/healthz/x", "/status", "/favicon.ico", "/metrics/"] {
        assert_eq!(get(a, path).await.0, 404, "{path}");
    }
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        for path in ["/", "/api/v1/status", "/healthz", "/metrics"] {
            let (code, head, _) = http(a, &format!("{method} {path} HTTP/1.1\r\nContent-Length: 0\r\n\r\n")).await;
            assert_eq!(code, 405, "{method} {path}");
            assert!(head.contains("Allow: GET, HEAD"), "{head}");
        }
    }
    assert_eq!(http(a, "POST /nothing HTTP/1.1\r\n\r\n").await.0, 404);
    assert_eq!(http(a, "hello\r\n\r\n").await.0, 400);

    d.stop().await;
}
