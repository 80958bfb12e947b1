//! The status page on the `server.metrics` listener (issue 11): the real
//! daemon with mock Puppet masters (HTTPS, real health checks, interval
//! 300 ms), its JSON at `/api/v1/status` compared with what DNS answers,
//! `/healthz` before and during a stop, the routing, and the page itself
//! (self-contained HTML). `browser` drives the page in headless Chromium
//! through chromedriver (Debian `chromium-driver`, installed by `make deps`).
//! Every wait is a condition with a deadline.

use crate::common;
use crate::common::http;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::mock_master::{Behaviour, MockMaster, TestCa};
use common::{BASE_CONFIG, TestDaemon, srv};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::Value;
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

/// Every master and role up, and srvd serving (its UDP workers run).
fn all_up(doc: &Value) -> bool {
    doc["serving"]["ok"] == true
        && [(PM1, "puppet"), (PM1, "ca"), (PM2, "puppet"), (PM3, "puppet"), (PM3, "ca"), (PM3, "report")]
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
    // Right after start the UDP worker threads may not run yet: 503 until they do.
    let t0 = Instant::now();
    let (code, head, body) = loop {
        let (code, head, body) = get(a, "/healthz").await;
        if code == 200 {
            break (code, head, body);
        }
        assert_eq!(body, "not serving: no UDP worker is answering DNS queries\n");
        assert!(t0.elapsed() < LIMIT, "still {code} {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
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
    doc_until(a, "serving", |d| d["serving"]["ok"] == true).await;
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

#[tokio::test]
async fn the_page_is_self_contained() {
    let cfg = BASE_CONFIG.replace("registry = \"{dir}/masters.toml\"", "registry = \"{dir}/masters.toml\"\nmetrics = \"127.0.0.1:0\"");
    let d = TestDaemon::start_all_up(&cfg, "").await;
    let a = d.metrics_addr();
    // The page: no external assets, a strict policy, text rendered as text.
    let (_, head, page) = get(a, "/").await;
    assert!(head.contains("Content-Security-Policy: default-src 'none'"), "{head}");
    let lower = page.to_ascii_lowercase();
    assert!(!lower.contains("http://") && !lower.contains("https://"), "the page names an external URL");
    for attr in ["src=", "href=", "url(", "@import", "<link", "<iframe", "<object", "<embed"] {
        assert!(!lower.contains(attr), "the page uses {attr}");
    }
    assert!(lower.contains("<meta name=\"viewport\""), "a viewport for phones");
    assert!(page.contains("api/v1/status"), "the page polls the JSON");
    assert!(!page.contains("innerHTML") && !page.contains("outerHTML") && !page.contains("insertAdjacentHTML"), "untrusted text as HTML");
    assert!(!page.contains("eval(") && !page.contains("document.write"), "no eval or document.write");
    d.stop().await;
}

// ---------------------------------------------------------------------------
// The page in headless Chromium, driven over chromedriver's W3C WebDriver
// HTTP API.

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: std::process::Child,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
    session: Option<String>,
}

impl Driver {
    async fn start() -> Driver {
        for path in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: run `make deps` (installs the Debian packages chromium and chromium-driver) to run the status page's browser test"
            );
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let log = std::fs::File::create(format!("{}/chromedriver.log", env!("CARGO_TARGET_TMPDIR"))).unwrap();
            let child = std::process::Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .expect("chromedriver starts");
            let mut d = Driver {
                child,
                base: format!("http://127.0.0.1:{port}"),
                http: http.clone(),
                _profile: tempfile::tempdir().unwrap(),
                session: None,
            };
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if let Ok(r) = d.http.get(format!("{}/status", d.base)).send().await
                    && r.status().is_success()
                {
                    d.new_session().await;
                    return d;
                }
                if d.child.try_wait().unwrap().is_some() {
                    break; // the port was taken meanwhile: try another
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("chromedriver did not start (see {}/chromedriver.log)", env!("CARGO_TARGET_TMPDIR"));
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        assert!(status.is_success(), "{method} {path}: {status}: {text}");
        v["value"].clone()
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session.as_deref().expect("a session"))
    }

    async fn new_session(&mut self) {
        let profile = self._profile.path().display().to_string();
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1800", format!("--user-data-dir={profile}")]
            }
        }}});
        let v = self.call(reqwest::Method::POST, "/session", Some(caps)).await;
        self.session = Some(v["sessionId"].as_str().expect("a session id").to_string());
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, &self.path("/url"), Some(serde_json::json!({ "url": url }))).await;
    }

    async fn js(&self, script: &str) -> Value {
        self.call(reqwest::Method::POST, &self.path("/execute/sync"), Some(serde_json::json!({ "script": script, "args": [] }))).await
    }

    async fn window(&self, width: u32, height: u32) {
        self.call(reqwest::Method::POST, &self.path("/window/rect"), Some(serde_json::json!({ "width": width, "height": height }))).await;
    }

    /// Saves a screenshot (PNG) under target/; returns its width in pixels.
    async fn screenshot(&self, name: &str) -> u32 {
        let b64 = self.call(reqwest::Method::GET, &self.path("/screenshot"), None).await;
        let png = data_encoding::BASE64.decode(b64.as_str().expect("base64").as_bytes()).expect("valid base64");
        assert_eq!(png.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]), "a PNG");
        let path = format!("{}/{name}", env!("CARGO_TARGET_TMPDIR"));
        std::fs::write(&path, &png).unwrap();
        eprintln!("screenshot: {path}");
        u32::from_be_bytes(png[16..20].try_into().unwrap())
    }

    /// Polls `script` (returning a string) until `ok` holds; returns the last value.
    async fn until(&self, what: &str, limit: Duration, script: &str, ok: impl Fn(&str) -> bool) -> (String, Duration) {
        let t0 = Instant::now();
        loop {
            let v = self.js(script).await;
            let s = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            if ok(&s) {
                return (s, t0.elapsed());
            }
            let text = self.js("return document.body.innerText").await;
            assert!(
                t0.elapsed() < limit,
                "{what}: not shown after {limit:?}; last {s:?}; page text:\n{}",
                text.as_str().unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(s) = &self.session {
            // Best effort: ends Chromium; chromedriver is killed anyway.
            let url = format!("{}/session/{s}", self.base);
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async { reqwest::Client::new().delete(url).timeout(Duration::from_secs(5)).send().await.ok() })
            })
            .join();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// State and reason shown in the masters table for (master, role).
fn row_script(master: &str, role: &str) -> String {
    format!(
        "var r = document.querySelector('tr[data-master=\"{master}\"][data-role=\"{role}\"]'); \
         return r ? r.getAttribute('data-state') + ' | ' + r.innerText.replace(/\\s+/g, ' ') : 'no row';"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_shows_a_master_going_down_without_a_reload() {
    let e = Estate::start("").await;
    doc_until(e.addr(), "every master up", all_up).await;
    let b = Driver::start().await;
    b.goto(&format!("http://{}/", e.addr())).await;
    let pm2 = format!("{PM2}:{}", e.pm2.port);
    let (row, took) = b.until("pm2 up", LIMIT, &row_script(&pm2, "puppet"), |s| s.starts_with("up |")).await;
    eprintln!("page rendered pm2 up after {took:?}: {row}");
    assert!(row.contains("HTTP 200") && row.contains("dc1"), "{row}");
    let text = b.js("return document.body.innerText").await;
    // innerText follows CSS (card labels are upper case): compare without case.
    let text = text.as_str().unwrap().to_lowercase();
    for want in [
        "Answers per site",
        "site dc1",
        "_x-puppet._tcp.dc1.puppet.example.test.",
        "Active CA",
        PM1,
        PM3,
        "Secondaries (NOTIFY)",
        "updated",
    ] {
        assert!(text.contains(&want.to_lowercase()), "page lacks {want:?}:\n{text}");
    }
    // dc1's puppet answer, in DNS order, on the page.
    let order = b
        .js("var d = document.querySelector('details[data-site=\"dc1\"] table'); \
             return Array.from(d.querySelectorAll('tbody tr')).map(function (r) { return r.lastChild.textContent; }).join(',');")
        .await;
    assert_eq!(order.as_str().unwrap(), format!("{PM1},{PM2},{PM3}"));
    let verdicts = b
        .js("var d = document.querySelector('details[data-site=\"dc1\"]'); \
             return Array.from(d.querySelectorAll('tr[data-master]')).slice(0, 3).map(function (r) { \
               return r.getAttribute('data-in') + ' ' + r.querySelector('.badge').textContent; }).join(',');")
        .await;
    assert_eq!(verdicts.as_str().unwrap(), "1 in,1 in,1 in", "dc1's puppet masters are all in");
    assert_eq!(b.js("return getComputedStyle(document.getElementById('error')).display").await, "none");
    let width = b.screenshot("status-page.png").await;
    assert!(width >= 1000, "desktop screenshot {width} px wide");

    // pm2 crashes; the same page (no reload: the marker survives) shows it down.
    b.js("window.srvdTestMarker = 42; return 1").await;
    e.pm2.set(Behaviour::Refuse).await;
    let (row, took) = b.until("pm2 down", LIMIT, &row_script(&pm2, "puppet"), |s| s.starts_with("down |")).await;
    eprintln!("page showed pm2 down {took:?} after its listener closed: {row}");
    assert!(row.contains("connection refused"), "{row}");
    assert_eq!(b.js("return window.srvdTestMarker").await, 42, "the page was not reloaded");
    let verdict = b.js(&format!("var r = document.querySelector('details[data-site=\"dc1\"] tr[data-master=\"{pm2}\"]'); return r.getAttribute('data-in') + ' ' + r.innerText;")).await;
    let verdict = verdict.as_str().unwrap();
    assert!(verdict.starts_with("0 ") && verdict.contains("down: connection refused"), "{verdict}");
    // The colour says it too.
    let colour = b
        .js(&format!(
            "return getComputedStyle(document.querySelector('tr[data-master=\"{pm2}\"][data-role=\"puppet\"] .badge')).backgroundColor"
        ))
        .await;
    let up_colour = b
        .js(&format!(
            "return getComputedStyle(document.querySelector('tr[data-master=\"{PM1}:{}\"][data-role=\"puppet\"] .badge')).backgroundColor",
            e.pm1.port
        ))
        .await;
    assert_ne!(colour, up_colour, "down and up look different");
    b.screenshot("status-page-down.png").await;

    // A phone: the tables turn into labelled cards, nothing wider than the screen.
    b.window(390, 844).await;
    let overflow = b.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
    assert!(overflow.as_i64().unwrap() <= 0, "the page scrolls sideways on a phone: {overflow}");
    let label = b.js("return getComputedStyle(document.querySelector('tbody td'), '::before').content").await;
    assert_ne!(label, "none", "cells are labelled on a phone");
    let width = b.screenshot("status-page-phone.png").await;
    assert!(width < 1000, "phone screenshot {width} px wide");
    b.js(&format!("document.querySelector('tr[data-master=\"{pm2}\"][data-role=\"puppet\"]').scrollIntoView(); return 1")).await;
    b.screenshot("status-page-phone-masters.png").await;

    // srvd goes away: the page says it cannot update.
    e.d.stop().await;
    let (err, _) =
        b.until("the polling error", LIMIT, "return document.getElementById('error').innerText", |s| s.contains("Cannot update")).await;
    assert!(err.contains("showing data from"), "{err}");
    b.screenshot("status-page-error.png").await;
}
