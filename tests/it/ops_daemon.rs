//! The srvd binary as a service runs it: log lines written to a file carry
//! no ANSI escapes, `--log-format json` writes one JSON object per line,
//! every srvctl change is logged once with the caller's uid and user name,
//! and READY=1 reaches $NOTIFY_SOCKET only once DNS answers.

use crate::common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const SRVD: &str = env!("CARGO_BIN_EXE_srvd");
const SRVCTL: &str = env!("CARGO_BIN_EXE_srvctl");

fn write_config(dir: &Path) -> PathBuf {
    let cfg = common::BASE_CONFIG.replace("{dir}", &dir.display().to_string()) + "\n[health]\ninterval = \"1s\"\ntimeout = \"200ms\"\n";
    let path = dir.join("srvd.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// A srvd child process whose stderr goes to `log`.
struct Srvd {
    child: Child,
    log: PathBuf,
    dir: PathBuf,
}

impl Srvd {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Srvd {
        let config = write_config(dir);
        let log = dir.join("srvd.log");
        let mut cmd = Command::new(SRVD);
        cmd.arg("--config").arg(&config).args(args).env_remove("SRVD_LOG").env_remove("SRVD_LOG_FORMAT").env_remove("NOTIFY_SOCKET");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
        Srvd { child, log, dir: dir.to_path_buf() }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the "serving" log line; returns its text.
    fn wait_serving(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains("serving")) {
                return line.to_string();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("srvd exited at start ({st}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "srvd did not log 'serving' within 20 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn srvctl(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(SRVCTL).arg("--socket").arg(self.dir.join("control.sock")).args(args).output().unwrap();
        assert!(out.status.success(), "srvctl {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        out
    }

    /// SIGTERM, then waits for the exit; returns the whole log.
    fn stop(mut self) -> String {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "srvd did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log()
    }
}

impl Drop for Srvd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn me() -> (u32, String) {
    let uid = unsafe { libc::getuid() };
    let out = Command::new("id").arg("-un").output().unwrap();
    (uid, String::from_utf8(out.stdout).unwrap().trim().to_string())
}

/// The admin changes of one session: add, drain, undrain, set-weight, reload, remove.
fn admin_session(d: &Srvd) {
    d.srvctl(&["add-master", "pm9.example.com", "--site", "dc1", "--port", "1", "--check", "tcp", "--address", "127.0.0.1"]);
    d.srvctl(&["drain", "pm9.example.com"]);
    d.srvctl(&["undrain", "pm9.example.com"]);
    d.srvctl(&["set-weight", "pm9.example.com", "30"]);
    d.srvctl(&["reload"]);
    d.srvctl(&["remove-master", "pm9.example.com"]);
    d.srvctl(&["list"]); // not a change: not logged
}

const COMMANDS: [&str; 6] = ["add-master", "drain", "undrain", "set-weight", "reload", "remove-master"];

#[test]
fn text_logs_in_a_file_have_no_escapes_and_each_change_once_with_its_uid() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Srvd::start(dir.path(), &[], &[]);
    d.wait_serving();
    admin_session(&d);
    let log = d.stop();
    assert!(!log.contains('\x1b'), "ANSI escape in a log written to a file:\n{log}");
    let (uid, user) = me();
    let changes: Vec<&str> = log.lines().filter(|l| l.contains("srvctl change")).collect();
    assert_eq!(changes.len(), COMMANDS.len(), "one line per change:\n{}", changes.join("\n"));
    for cmd in COMMANDS {
        let lines: Vec<&&str> = changes.iter().filter(|l| l.contains(&format!("command=\"{cmd}\""))).collect();
        assert_eq!(lines.len(), 1, "{cmd}: {changes:#?}");
        let l = lines[0];
        assert!(l.contains("srvctl change applied") && l.contains(&format!("uid={uid}")) && l.contains(&format!("user=\"{user}\"")), "{l}");
        if cmd != "reload" {
            assert!(l.contains("pm9.example.com"), "{l}");
        }
    }
    assert!(!log.contains("command=\"list\""), "read-only commands are not logged as changes");
}

#[test]
fn json_logs_parse_line_by_line_and_carry_the_change_and_its_author() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Srvd::start(dir.path(), &["--log-format", "json"], &[]);
    d.wait_serving();
    admin_session(&d);
    assert_eq!(unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.log().matches("\"reloaded\"").count() < 2 {
        assert!(Instant::now() < deadline, "SIGHUP reload not logged: {}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = d.stop();
    let (uid, user) = me();
    let mut events = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
        events.push(v);
    }
    assert!(events.len() >= 10, "{log}");
    let changes: Vec<&serde_json::Value> = events.iter().filter(|v| v["fields"]["message"] == "srvctl change applied").collect();
    assert_eq!(changes.len(), COMMANDS.len(), "{log}");
    for cmd in COMMANDS {
        let c: Vec<_> = changes.iter().filter(|v| v["fields"]["command"] == cmd).collect();
        assert_eq!(c.len(), 1, "{cmd}: {changes:#?}");
        assert_eq!(c[0]["fields"]["uid"], uid, "{}", c[0]);
        assert_eq!(c[0]["fields"]["user"], user.as_str(), "{}", c[0]);
        assert_eq!(c[0]["level"], "INFO");
    }
    let add = changes.iter().find(|v| v["fields"]["command"] == "add-master").unwrap();
    assert_eq!(add["fields"]["target"], "pm9.example.com");
    assert!(events.iter().any(|v| v["fields"]["message"] == "SIGHUP: reloading"), "{log}");
}

#[test]
fn the_env_var_selects_json_for_fatal_errors_too() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[zone]\norigin = \"x.\"\nbogus = 1\n").unwrap();
    let out = Command::new(SRVD).arg("--config").arg(&cfg).env("SRVD_LOG_FORMAT", "json").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {err}"));
    assert_eq!(v["level"], "ERROR");
    assert!(v["fields"]["error"].as_str().unwrap().contains("bogus"), "{v}");
    // A bad value is a usage error naming the flag.
    let out = Command::new(SRVD).args(["--log-format", "xml", "--check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-format"));
}

/// The DNS port from the "serving" line (`addrs=[127.0.0.1:PORT]`).
fn port_of(serving: &str) -> u16 {
    let at = serving.find("127.0.0.1:").unwrap_or_else(|| panic!("no address in {serving}")) + "127.0.0.1:".len();
    serving[at..].chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().unwrap()
}

#[test]
fn ready_reaches_notify_socket_once_dns_answers() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut d = Srvd::start(dir.path(), &[], &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).unwrap_or_else(|e| panic!("no notification within 20 s ({e}): {}", d.log()));
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(msg.lines().collect::<Vec<_>>(), ["READY=1"], "{msg:?}");
    // By the time READY=1 arrived, srvd had logged "serving" and answers DNS.
    let serving = d.log().lines().find(|l| l.contains("serving")).map(str::to_string);
    let serving = serving.unwrap_or_else(|| panic!("READY=1 before the 'serving' line: {}", d.log()));
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send_to(&common::build_query("puppet.example.test.", RecordType::SOA, None), ("127.0.0.1", port_of(&serving))).unwrap();
    let n = udp.recv(&mut buf).expect("DNS answers right after READY=1");
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1, "{m:?}");
    // READY=1 is sent once, not again on reload.
    assert_eq!(unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.log().contains("reloaded") {
        assert!(Instant::now() < deadline, "SIGHUP not handled: {}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    sock.set_nonblocking(true).unwrap();
    assert!(sock.recv(&mut buf).is_err(), "a second notification: {:?}", String::from_utf8_lossy(&buf));
    d.wait_serving();
    d.stop();
}
