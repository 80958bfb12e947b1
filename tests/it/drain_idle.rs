//! `srvctl drain HOST --wait-idle`: returns once the master has been out
//! of every answer for a full TTL and its jruby-metrics report no borrowed
//! JRuby; on timeout, exits 1 saying what is still pending. The real
//! srvctl binary against the daemon, mock masters for the figures.

use crate::common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::mock_master::{METRICS_PATH, MockMaster, TestCa};
use common::{BASE_CONFIG, TestDaemon, srv, srvctl};
use hickory_proto::rr::RecordType;

const PM1: &str = "pm1.dc1.puppet.example.test";
const PM2: &str = "pm2.dc1.puppet.example.test";
const PUPPET_DC1: &str = "_x-puppet._tcp.dc1.puppet.example.test.";
const TTL: u64 = 2;

fn text(o: &Output) -> (i32, String, String) {
    (o.status.code().expect("exited"), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

async fn start() -> (TestCa, MockMaster, MockMaster, TestDaemon) {
    let ca = TestCa::new();
    let pm1 = MockMaster::start(&ca, PM1).await;
    let pm2 = MockMaster::start(&ca, PM2).await;
    // pm1 compiles two catalogs right now.
    pm1.set_jrubies(4, 2, 0);
    let reg = format!("{}{}", pm1.registry_entry("dc1", &["puppet"]), pm2.registry_entry("dc1", &["puppet"]));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
    let config = format!(
        "{}\n[health]\ninterval = \"300ms\"\nfast_interval = \"100ms\"\ntimeout = \"500ms\"\nca_file = \"{{dir}}/ca.pem\"\n",
        BASE_CONFIG.replace("ttl = 30", &format!("ttl = {TTL}"))
    );
    let d = TestDaemon::start_in(dir, &config, &reg).await.expect("daemon starts");
    (ca, pm1, pm2, d)
}

async fn targets(d: &TestDaemon) -> Vec<String> {
    srv(&d.udp(PUPPET_DC1, RecordType::SRV).await).into_iter().map(|r| r.3).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_idle_times_out_while_answers_are_cached_or_jrubies_are_borrowed_then_succeeds() {
    let (_ca, pm1, pm2, d) = start().await;
    let t0 = Instant::now();
    while targets(&d).await.len() != 2 {
        assert!(t0.elapsed() < Duration::from_secs(10), "both masters up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pm1.requests_for(METRICS_PATH), 0, "figures are fetched only for drained masters (static weights)");

    // Within the TTL: cached answers may still name it.
    let (code, out, err) = text(&srvctl(&d, &["drain", PM1, "--wait-idle", "--timeout", "1s"]).await);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("is drained but not idle: timeout") && err.contains("cached answers may name it"), "{err}");
    assert_eq!(targets(&d).await, vec![PM2.to_string()], "out of the answer at once");

    // After the TTL: two JRubies are still borrowed.
    let (code, _, err) = text(&srvctl(&d, &["drain", PM1, "--wait-idle", "--timeout", "4s"]).await);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("2 of 4 JRubies borrowed (agent runs in progress)"), "{err}");
    let st = d.running.as_ref().unwrap().control.status();
    let m = st.masters.iter().find(|m| m.master.host == PM1).unwrap();
    assert_eq!(m.idle, Some(false));
    assert_eq!(m.jrubies.as_ref().and_then(|j| j.borrowed), Some(2));
    let (_, out, _) = text(&srvctl(&d, &["status"]).await);
    assert!(out.contains("waiting for 2 borrowed JRuby(s) to be returned"), "{out}");

    // The runs finish a moment later: --wait-idle returns 0 once it sees it.
    let t1 = Instant::now();
    let finish = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        pm1.set_jrubies(4, 4, 0);
        pm1
    });
    let o = srvctl(&d, &["drain", PM1, "--wait-idle", "--timeout", "20s"]).await;
    let (code, out, err) = text(&o);
    assert_eq!(code, 0, "{out}{err}");
    assert!(t1.elapsed() >= Duration::from_millis(1500), "returned before the runs finished");
    assert!(out.contains("idle: out of every answer for 2s and no JRuby borrowed (4 free of 4)"), "{out}");
    let _pm1 = finish.await.unwrap();
    let (_, out, _) = text(&srvctl(&d, &["status"]).await);
    assert!(out.contains("idle (no JRuby borrowed): safe to stop now"), "{out}");
    let (code, json, _) = text(&srvctl(&d, &["--json", "status"]).await);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let m = v["ok"]["masters"].as_array().unwrap().iter().find(|m| m["host"] == PM1).unwrap().clone();
    assert_eq!(m["idle"], true, "{m:#}");
    assert_eq!(m["jrubies"]["borrowed"], 0, "{m:#}");

    // Undrained: figures are no longer fetched for it.
    let (code, _, _) = text(&srvctl(&d, &["undrain", PM1]).await);
    assert_eq!(code, 0);
    drop(pm2);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_idle_without_figures_says_why() {
    let (_ca, pm1, _pm2, d) = start().await;
    pm1.serve(METRICS_PATH, 403, "Forbidden");
    let (code, _, err) = text(&srvctl(&d, &["drain", PM1, "--wait-idle", "--timeout", "4s"]).await);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot read its JRuby figures: HTTP 403 from /status/v1/services/jruby-metrics?level=debug"), "{err}");
    // --timeout needs --wait-idle.
    let (code, _, err) = text(&srvctl(&d, &["drain", PM1, "--timeout", "4s"]).await);
    assert_eq!(code, 2, "{err}");
    d.stop().await;
}
