//! srvctl against a running daemon (in-process, control socket in its temp
//! dir), through the real `srvctl` binary: every command, exit codes,
//! refusals that leave the registry byte-identical, comments that survive,
//! concurrent changes, socket permissions. Changes acknowledged must
//! already be in the DNS answers.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use common::{BASE_CONFIG, SRVCTL, TestDaemon, srv, srvctl, srvctl_in};
use hickory_proto::rr::RecordType;
use serde_json::Value;
use tokio::net::TcpListener;

/// Fast health checks so that tests do not wait long for first results.
const HEALTH: &str = "\n[health]\ninterval = \"1s\"\nfast_interval = \"100ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\n";

fn config() -> String {
    format!("{BASE_CONFIG}{HEALTH}")
}

/// A TCP port where something accepts (a live "master" for tcp checks).
async fn live_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    port
}

/// A port where nothing listens.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn master(host: &str, site: &str, port: u16, extra: &str) -> String {
    format!("[[master]]\nhost = \"{host}\"\nsite = \"{site}\"\nport = {port}\naddresses = [\"127.0.0.1\"]\ncheck = \"tcp\"\n{extra}\n")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(code(o), 0, "stdout: {}\nstderr: {}", text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

async fn json(d: &TestDaemon, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let o = srvctl(d, &a).await;
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", text(&o.stdout), text(&o.stderr)))
}

async fn records(d: &TestDaemon, name: &str) -> Vec<(u16, u16, u16, String)> {
    srv(&d.udp(name, RecordType::SRV).await)
}

const DC1: &str = "_x-puppet._tcp.dc1.puppet.example.test.";

/// Three masters in dc1 (m1, m2 up; m3 up), registry with comments.
async fn estate() -> (TestDaemon, u16) {
    let p = live_port().await;
    let reg = format!(
        "# Estate registry. Keep this header.\n\n# m1: the big one\n{}# m2\n{}{}# trailing remark\n",
        master("m1.example.com", "dc1", p, "weight = 20 # heavy"),
        master("m2.example.com", "dc1", p, ""),
        master("m3.example.com", "dc1", p, ""),
    );
    let d = TestDaemon::start(&config(), &reg).await;
    (d, p)
}

#[tokio::test]
async fn changes_are_in_dns_when_acknowledged() {
    let (d, _) = estate().await;
    let hosts = |r: &[(u16, u16, u16, String)]| r.iter().map(|x| x.3.clone()).collect::<Vec<_>>();
    assert_eq!(hosts(&records(&d, DC1).await), ["m1.example.com", "m2.example.com", "m3.example.com"]);

    // drain: out of the answers right after the ack, still listed, status says when safe.
    let before = d.serial();
    let out = ok(&srvctl(&d, &["drain", "m1.example.com"]).await);
    assert!(out.contains("drained m1.example.com:"), "{out}");
    assert_eq!(hosts(&records(&d, DC1).await), ["m2.example.com", "m3.example.com"]);
    assert!(d.serial() > before);
    let st = json(&d, &["status"]).await;
    let m1 = &st["ok"]["masters"][0];
    assert_eq!(m1["host"], "m1.example.com");
    assert_eq!(m1["drained"], true);
    assert_eq!(m1["safe_to_stop"], false);
    assert_eq!(m1["answers_expire"].as_u64().unwrap(), m1["drained_since"].as_u64().unwrap() + 30);
    assert_eq!(m1["health"][0]["published"], false);
    assert_eq!(st["ok"]["serial"].as_u64().unwrap(), u64::from(d.serial()));
    let human = ok(&srvctl(&d, &["status"]).await);
    assert!(human.contains("cached answers naming it expire at"), "{human}");
    assert!(human.contains("safe to stop in"), "{human}");
    // Idempotent: already drained, exit 0, nothing written.
    let reg = std::fs::read(d.path("masters.toml")).unwrap();
    let again = json(&d, &["drain", "m1.example.com"]).await;
    assert_eq!(again["ok"]["changed"], false);
    assert_eq!(std::fs::read(d.path("masters.toml")).unwrap(), reg);

    // undrain: back.
    ok(&srvctl(&d, &["undrain", "m1.example.com"]).await);
    assert_eq!(hosts(&records(&d, DC1).await), ["m1.example.com", "m2.example.com", "m3.example.com"]);

    // set-weight: the record carries it.
    ok(&srvctl(&d, &["set-weight", "m2.example.com", "5"]).await);
    let r = records(&d, DC1).await;
    assert_eq!(r.iter().find(|x| x.3 == "m2.example.com").unwrap().1, 5);

    // remove-master: gone from answers and file.
    ok(&srvctl(&d, &["remove-master", "m3.example.com"]).await);
    assert_eq!(hosts(&records(&d, DC1).await), ["m1.example.com", "m2.example.com"]);
    let file = std::fs::read_to_string(d.path("masters.toml")).unwrap();
    assert!(!file.contains("m3.example.com"), "{file}");
    assert!(file.contains("weight = 20 # heavy"), "{file}");
    assert!(file.contains("weight = 5"), "{file}");
    d.stop().await;
}

#[tokio::test]
async fn add_master_pending_then_published() {
    let (d, live) = estate().await;
    // Without --wait: acknowledged as pending, on disk, not yet published.
    let o = json(
        &d,
        &["add-master", "new1.example.com", "--site", "dc2", "--port", &live.to_string(), "--address", "127.0.0.1", "--check", "tcp"],
    )
    .await;
    let ch = &o["ok"];
    assert_eq!(ch["action"], "add-master");
    assert_eq!(ch["changed"], true);
    // The first check runs at once and may already have passed by the time
    // the answer is written: then it must already be published.
    match ch["master"]["health"][0]["state"].as_str() {
        Some("pending") => {}
        Some("up") => {
            let r = records(&d, "_x-puppet._tcp.dc2.puppet.example.test.").await;
            assert!(r.iter().any(|x| x.3 == "new1.example.com"), "reported up, so published: {r:?}");
        }
        other => panic!("state {other:?}: {o}"),
    }
    assert!(std::fs::read_to_string(d.path("masters.toml")).unwrap().contains("host = \"new1.example.com\""));

    // --wait on a live master: exit 0 once published, and it is in DNS.
    let o = srvctl(
        &d,
        &[
            "add-master",
            "new2.example.com",
            "--site",
            "dc2",
            "--port",
            &live.to_string(),
            "--address",
            "127.0.0.1",
            "--check",
            "tcp",
            "--wait",
            "--timeout",
            "10s",
        ],
    )
    .await;
    let out = ok(&o);
    assert!(out.contains("published"), "{out}");
    let r = records(&d, "_x-puppet._tcp.dc2.puppet.example.test.").await;
    assert!(r.iter().any(|x| x.3 == "new2.example.com"), "{r:?}");

    // --wait on a dead master: exit 1 with the check's reason; it stays registered.
    let dead = dead_port().to_string();
    let o = srvctl(
        &d,
        &[
            "add-master",
            "dead.example.com",
            "--site",
            "dc2",
            "--port",
            &dead,
            "--address",
            "127.0.0.1",
            "--check",
            "tcp",
            "--wait",
            "--timeout",
            "10s",
        ],
    )
    .await;
    assert_eq!(code(&o), 1, "{}{}", text(&o.stdout), text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("not published") && err.contains("down"), "{err}");
    let list = json(&d, &["list"]).await;
    assert!(list["ok"]["masters"].as_array().unwrap().iter().any(|m| m["host"] == "dead.example.com"));

    // status shows check results from the health checker.
    let st = json(&d, &["status"]).await;
    let dead_m = st["ok"]["masters"].as_array().unwrap().iter().find(|m| m["host"] == "dead.example.com").unwrap().clone();
    assert_eq!(dead_m["health"][0]["state"], "down", "{dead_m}");
    assert_eq!(dead_m["health"][0]["last_check"]["ok"], false, "{dead_m}");
    d.stop().await;
}

#[tokio::test]
async fn list_explain_reload_and_exit_codes() {
    let (d, live) = estate().await;
    // list, human: aligned table with a header.
    let out = ok(&srvctl(&d, &["list"]).await);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("HOST  ") && lines[0].contains("WEIGHT"), "{out}");
    let col = lines[0].find("SITE").unwrap();
    assert!(lines[1..4].iter().all(|l| &l[col..col + 3] == "dc1"), "{out}");
    // list --json, also accepted after the command.
    let list = json(&d, &["list"]).await;
    assert_eq!(list["ok"]["kind"], "masters");
    assert_eq!(list["ok"]["masters"].as_array().unwrap().len(), 3);
    assert_eq!(list["ok"]["masters"][0]["weight"], 20);

    // explain --site dc1: four names, in/out with reasons.
    ok(&srvctl(&d, &["drain", "m2.example.com"]).await);
    let ex = json(&d, &["explain", "--site", "dc1"]).await;
    let names = ex["ok"]["names"].as_array().unwrap();
    assert_eq!(names.len(), 4);
    assert_eq!(names[0]["name"], DC1);
    assert_eq!(names[0]["records"][0]["target"], "m1.example.com");
    let m2 = names[0]["masters"].as_array().unwrap().iter().find(|m| m["master"].as_str().unwrap().starts_with("m2.")).unwrap();
    assert_eq!(m2["in"], false);
    assert_eq!(m2["verdict"], "drained");
    let human = ok(&srvctl(&d, &["explain", "--site", "dc1"]).await);
    assert!(human.contains("drained by an operator"), "{human}");
    assert!(human.contains("local site dc1 (tier 0), priority 10"), "{human}");
    assert!(human.contains("_x-puppet-report._tcp.dc1.puppet.example.test.") && human.contains("NODATA"), "{human}");
    let all = json(&d, &["explain"]).await;
    assert_eq!(all["ok"]["names"].as_array().unwrap().len(), 16);
    let apex = json(&d, &["explain", "--site", "@"]).await;
    assert_eq!(apex["ok"]["names"][0]["name"], "_x-puppet._tcp.puppet.example.test.");
    let bad = srvctl(&d, &["explain", "--site", "dc9"]).await;
    assert_eq!(code(&bad), 1);
    assert!(text(&bad.stderr).contains("unknown site \"dc9\""), "{}", text(&bad.stderr));

    // reload after a hand edit: picked up; new masters pending.
    let path = d.path("masters.toml");
    let mut file = std::fs::read_to_string(&path).unwrap();
    file.push_str(&format!("\n{}", master("hand.example.com", "dc3", live, "")));
    std::fs::write(&path, &file).unwrap();
    // A change before the reload is refused: the file was edited by hand.
    let o = srvctl(&d, &["set-weight", "m1.example.com", "3"]).await;
    assert_eq!(code(&o), 1);
    assert!(text(&o.stderr).contains("run `srvctl reload` first"), "{}", text(&o.stderr));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), file);
    let r = json(&d, &["reload"]).await;
    assert_eq!(r["ok"]["added"][0], format!("hand.example.com:{live}"));
    ok(&srvctl(&d, &["set-weight", "m1.example.com", "3"]).await);

    // reload of a broken file: refused with file, key, reason; old state serves.
    // First let the hand-added master's first check publish it (and its serial follow).
    let publisher = d.running.as_ref().unwrap().publisher.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while publisher.lock().health.values().any(|h| *h == srvd::health::Health::Pending) || publisher.serial_store().behind {
        assert!(std::time::Instant::now() < deadline, "the hand-added master was never checked");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let serial = d.serial();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{good}\n[[master]]\nhost = \"x.example.com\"\nsite = \"nowhere\"\n")).unwrap();
    let o = srvctl(&d, &["--json", "reload"]).await;
    assert_eq!(code(&o), 1);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["refused"]["file"], path.display().to_string());
    assert_eq!(v["refused"]["key"], "master[4].site");
    assert!(v["refused"]["reason"].as_str().unwrap().contains("unknown site"), "{v}");
    assert_eq!(d.serial(), serial);
    assert!(!records(&d, DC1).await.is_empty());
    std::fs::write(&path, &good).unwrap();
    ok(&srvctl(&d, &["reload"]).await);

    // Usage errors: 2. Unreachable: 3.
    assert_eq!(code(&srvctl(&d, &["set-weight", "m1.example.com"]).await), 2);
    assert_eq!(code(&srvctl(&d, &["set-weight", "m1.example.com", "heavy"]).await), 2);
    assert_eq!(code(&srvctl(&d, &["frobnicate"]).await), 2);
    assert_eq!(code(&srvctl(&d, &["add-master", "x.example.com"]).await), 2);
    let o = srvctl_in(&d.path("nope.sock"), &["list"]).await;
    assert_eq!(code(&o), 3);
    assert!(text(&o.stderr).contains("cannot connect to srvd"), "{}", text(&o.stderr));
    let o = srvctl_in(&d.path("nope.sock"), &["--json", "status"]).await;
    assert_eq!(code(&o), 3);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["unreachable"]["message"].is_string());
    // SRVD_SOCKET is honoured.
    let o = tokio::process::Command::new(SRVCTL).arg("list").env("SRVD_SOCKET", d.path("control.sock")).output().await.unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    d.stop().await;
}

#[tokio::test]
async fn refused_changes_change_nothing() {
    let (d, live) = estate().await;
    // A second server on m1: m1 alone is ambiguous.
    ok(&srvctl(&d, &["add-master", "m1.example.com:8141", "--site", "dc1", "--address", "127.0.0.1", "--check", "tcp"]).await);
    let path = d.path("masters.toml");
    let live_s = live.to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["add-master", "x.example.com", "--site", "dc9"], "unknown site \"dc9\""),
        (vec!["add-master", "bad_host.example.com", "--site", "dc1"], "host"),
        (vec!["add-master", "x.example.com", "--site", "dc1", "--port", "0"], "port: 0 is not in 1..=65535"),
        (vec!["add-master", "x.example.com", "--site", "dc1", "--port", "70000"], "port: 70000"),
        (vec!["add-master", "x.example.com", "--site", "dc1", "--roles", "puppet,chef"], "unknown role \"chef\""),
        (vec!["add-master", "x.example.com", "--site", "dc1", "--weight", "65536"], "weight: 65536"),
        (vec!["add-master", "x.example.com", "--site", "dc1", "--weight", "-1"], "weight: -1"),
        (vec!["add-master", "x.example.com", "--site", "dc1", "--address", "not-an-ip"], "not an IP address"),
        (vec!["add-master", "x.example.com", "--site", "dc1", "--check", "icmp"], "unknown check"),
        (vec!["add-master", "pm.dc1.puppet.example.test", "--site", "dc1"], "give addresses"),
        (vec!["add-master", "x.example.com:8140", "--site", "dc1", "--port", "8141"], "disagree"),
        (vec!["add-master", "m2.example.com", "--site", "dc1", "--port", &live_s], "already exists"),
        (vec!["remove-master", "ghost.example.com"], "no master ghost.example.com"),
        (vec!["remove-master", "m2.example.com:9999"], "registered on port"),
        (vec!["drain", "m1.example.com"], "ambiguous"),
        (vec!["undrain", "not a host"], "not a host name"),
        (vec!["set-weight", "m2.example.com", "65536"], "weight 65536 is not in 0..=65535"),
        (vec!["set-weight", "m2.example.com", "-3"], "weight -3"),
        (vec!["set-weight", "m1.example.com", "5"], "ambiguous"),
    ];
    for (args, why) in cases {
        let before = std::fs::read(&path).unwrap();
        let serial = d.serial();
        let list = json(&d, &["list"]).await;
        let o = srvctl(&d, &args).await;
        assert_eq!(code(&o), 1, "{args:?}: {}{}", text(&o.stdout), text(&o.stderr));
        assert!(text(&o.stderr).contains(why), "{args:?}: {:?} should say {why:?}", text(&o.stderr));
        assert_eq!(std::fs::read(&path).unwrap(), before, "{args:?} changed the registry file");
        assert_eq!(d.serial(), serial, "{args:?} changed the zone");
        assert_eq!(json(&d, &["list"]).await, list, "{args:?} changed the registry");
    }
    // HOST:PORT resolves the ambiguity.
    ok(&srvctl(&d, &["drain", "m1.example.com:8141"]).await);
    d.stop().await;
}

#[tokio::test]
async fn comments_survive_add_and_remove() {
    let (d, live) = estate().await;
    let path = d.path("masters.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    ok(&srvctl(
        &d,
        &["add-master", "m4.example.com", "--site", "dc2", "--port", &live.to_string(), "--address", "127.0.0.1", "--check", "tcp"],
    )
    .await);
    let after_add = std::fs::read_to_string(&path).unwrap();
    assert!(after_add.starts_with(original.trim_end_matches("# trailing remark\n")), "{after_add}");
    assert!(after_add.contains("# trailing remark"), "{after_add}");
    ok(&srvctl(&d, &["remove-master", "m2.example.com"]).await);
    ok(&srvctl(&d, &["remove-master", "m4.example.com"]).await);
    let f = std::fs::read_to_string(&path).unwrap();
    for keep in ["# Estate registry. Keep this header.", "# m1: the big one", "weight = 20 # heavy", "# trailing remark"] {
        assert!(f.contains(keep), "{keep:?} lost:\n{f}");
    }
    // The comment directly above m2 described m2 and went with it.
    assert!(!f.contains("# m2\n"), "{f}");
    assert!(!f.contains("m2.example.com") && !f.contains("m4.example.com"), "{f}");
    d.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_adds_all_land() {
    let d = TestDaemon::start(&config(), "# empty to start with\n").await;
    let sock = d.path("control.sock");
    let dead = dead_port().to_string();
    let mut jobs = Vec::new();
    for i in 0..50 {
        let host = format!("c{i}.example.com");
        let sock = sock.clone();
        let dead = dead.clone();
        jobs.push(tokio::spawn(async move {
            srvctl_in(&sock, &["add-master", &host, "--site", "dc1", "--port", &dead, "--address", "127.0.0.1", "--check", "tcp"]).await
        }));
    }
    for j in jobs {
        ok(&j.await.unwrap());
    }
    let list = json(&d, &["list"]).await;
    assert_eq!(list["ok"]["masters"].as_array().unwrap().len(), 50);
    let text = std::fs::read_to_string(d.path("masters.toml")).unwrap();
    assert!(text.starts_with("# empty to start with\n"));
    let reg = srvd::input::registry::Registry::parse(&text, &d.path("masters.toml"), &d.config).unwrap();
    assert_eq!(reg.masters.len(), 50);
    d.stop().await;
}

#[tokio::test]
async fn socket_mode_keeps_other_users_out() {
    let d = TestDaemon::start(&config(), "").await;
    let sock = d.path("control.sock");
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    // Let everyone reach the directory, so that only the socket's mode decides.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot switch to user nobody; skipping the other-user half");
        d.stop().await;
        return;
    }
    let o = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", SRVCTL, "--socket"])
        .arg(&sock)
        .arg("list")
        .output()
        .await
        .unwrap();
    assert_eq!(code(&o), 3, "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stderr).contains("Permission denied"), "{}", text(&o.stderr));
    // The same binary as root (the owner) gets in.
    ok(&srvctl(&d, &["list"]).await);
    d.stop().await;
}

#[tokio::test]
async fn stale_socket_is_replaced_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    // A socket file left behind by a dead srvd.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("control.sock")).unwrap());
    assert!(dir.path().join("control.sock").exists());
    let d = TestDaemon::start_in(dir, &config(), "").await.expect("starts over a stale socket");
    ok(&srvctl(&d, &["list"]).await);
    // A second daemon on the same socket path is refused; the first keeps it.
    let cfg = config().replace("{dir}/control.sock", &d.path("control.sock").display().to_string());
    let err = TestDaemon::try_start(&cfg, "").await.err().expect("second daemon refused");
    assert!(err.to_string().contains("another process"), "{err}");
    ok(&srvctl(&d, &["list"]).await);
    // On stop the socket file is removed.
    let sock = d.path("control.sock");
    let _dir = d.stop().await;
    assert!(!sock.exists());
}

/// Drain and set-weight do not change how a master is checked, so its
/// health history (since, last check) carries on.
#[tokio::test]
async fn drain_and_set_weight_keep_health_history() {
    let (d, _) = estate().await;
    let m2 = |st: &serde_json::Value| {
        st["ok"]["masters"].as_array().unwrap().iter().find(|m| m["host"] == "m2.example.com").unwrap()["health"][0].clone()
    };
    // Wait until the first check has been recorded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let before = loop {
        let h = m2(&json(&d, &["status"]).await);
        if !h["last_check"].is_null() {
            break h;
        }
        assert!(std::time::Instant::now() < deadline, "no check recorded: {h}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    ok(&srvctl(&d, &["drain", "m2.example.com"]).await);
    ok(&srvctl(&d, &["set-weight", "m2.example.com", "3"]).await);
    let after = m2(&json(&d, &["status"]).await);
    assert_eq!(after["state"], "up", "{after}");
    assert_eq!(after["since"], before["since"], "{before} -> {after}");
    assert!(!after["last_check"].is_null(), "last check kept: {after}");
    d.stop().await;
}
