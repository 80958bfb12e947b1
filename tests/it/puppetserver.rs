//! srvd against a real Puppet Server (Debian's `puppetserver` 7.9, in
//! DEB_PACKAGES): started once, in a temp dir, on a free loopback port,
//! with its own CA (`cadir` in the temp dir: nothing under /etc is
//! touched), one JRuby. It checks what the mocks only assume:
//!
//! - the CA identity guard reads the real `/puppet-ca/v1/certificate/ca`
//!   (no client certificate needed) and the fingerprint matches the CA
//!   file agents get; a CA file swapped under the running server (what a
//!   restore from another backup does) takes the CA down with the reason;
//! - jruby-metrics at level=debug is readable without a client
//!   certificate and with one (`client-auth: want`), and srvd parses the
//!   real answer (capacity weights, `drain --wait-idle`).
//!
//! Puppet Server takes 30-60 s to start on this machine; the whole file
//! runs in one test so that it starts once.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestDaemon;

const JAR: &str = "/usr/share/puppetserver/puppetserver.jar";
const CERTNAME: &str = "ps1.srvd.test";
const START_LIMIT: Duration = Duration::from_secs(240);
const LIMIT: Duration = Duration::from_secs(30);

struct PuppetServer {
    dir: tempfile::TempDir,
    port: u16,
    _child: tokio::process::Child,
}

impl PuppetServer {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    async fn start() -> PuppetServer {
        assert!(Path::new(JAR).exists(), "{JAR} is missing: install Debian's puppetserver (`make deps`)");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        for sub in ["conf.d", "services.d", "puppet/code", "var", "run", "log", "ssl", "ca"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        for f in ["auth.conf", "ca.conf", "metrics.conf", "web-routes.conf"] {
            std::fs::copy(Path::new("/etc/puppet/puppetserver/conf.d").join(f), dir.path().join("conf.d").join(f)).unwrap();
        }
        for e in std::fs::read_dir("/etc/puppet/puppetserver/services.d").unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join("services.d").join(e.file_name())).unwrap();
        }
        let w = |p: &str, text: String| std::fs::write(dir.path().join(p), text).unwrap();
        w("conf.d/webserver.conf", format!("webserver: {{\n  client-auth: want\n  ssl-host: 127.0.0.1\n  ssl-port: {port}\n}}\n"));
        w("conf.d/global.conf", format!("global: {{ logging-config: {d}/logback.xml }}\n"));
        w(
            "logback.xml",
            format!(
                "<configuration scan=\"false\"><appender name=\"F\" class=\"ch.qos.logback.core.FileAppender\"><file>{d}/log/server.log</file><encoder><pattern>%d %-5p [%c{{2}}] %m%n</pattern></encoder></appender><root level=\"info\"><appender-ref ref=\"F\"/></root></configuration>\n"
            ),
        );
        w(
            "conf.d/puppetserver.conf",
            format!(
                "jruby-puppet: {{\n  ruby-load-path: [/usr/lib/puppetserver/ruby/vendor_ruby]\n  gem-home: {d}/var/jruby-gems\n  gem-path: [${{jruby-puppet.gem-home}}, \"/usr/lib/puppetserver/vendored-jruby-gems\"]\n  server-conf-dir: {d}/puppet\n  server-code-dir: {d}/puppet/code\n  server-var-dir: {d}/var\n  server-run-dir: {d}/run\n  server-log-dir: {d}/log\n  max-active-instances: 1\n}}\nhttp-client: {{}}\nprofiler: {{}}\n"
            ),
        );
        w(
            "puppet/puppet.conf",
            format!(
                "[main]\ncertname = {CERTNAME}\ndns_alt_names = {CERTNAME}\nssldir = {d}/ssl\nvardir = {d}/var\nlogdir = {d}/log\nrundir = {d}/run\n[server]\nca_name = srvd test Puppet CA\ncadir = {d}/ca\n"
            ),
        );
        let child = tokio::process::Command::new("java")
            .args([
                "-Xms256m",
                "-Xmx512m",
                "-Djruby.logger.class=com.puppetlabs.jruby_utils.jruby.Slf4jLogger",
                "-Djruby.lib=/usr/share/jruby/lib",
            ])
            .arg("-jar")
            .arg(JAR)
            .arg("--config")
            .arg(dir.path().join("conf.d"))
            .arg("--bootstrap-config")
            .arg(dir.path().join("services.d"))
            .stdout(std::fs::File::create(dir.path().join("log/stdout.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("log/stderr.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("java runs (Debian's puppetserver depends on a JRE)");
        let ps = PuppetServer { dir, port, _child: child };
        let t0 = Instant::now();
        loop {
            let log = std::fs::read_to_string(ps.path("log/server.log")).unwrap_or_default();
            if log.contains("Puppet Server has successfully started") {
                break;
            }
            let stderr = std::fs::read_to_string(ps.path("log/stderr.log")).unwrap_or_default();
            assert!(t0.elapsed() < START_LIMIT, "puppetserver did not start within {START_LIMIT:?}:\n{log}\n{stderr}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!("puppetserver started in {:?}", t0.elapsed());
        ps
    }

    /// srvd with this server as the only master (roles puppet and ca), `ca_file` = its CA.
    async fn srvd(&self, health_extra: &str) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        let ssl = self.path("ssl").display().to_string();
        let config = format!(
            "{}\n[health]\ninterval = \"300ms\"\nfast_interval = \"100ms\"\ntimeout = \"2s\"\nca_file = \"{ssl}/certs/ca.pem\"\n{health_extra}\n[policy]\nweights = \"capacity\"\nweights_period = \"1s\"\n",
            common::BASE_CONFIG.replace("ttl = 30", "ttl = 1")
        );
        let reg = format!(
            "[[master]]\nhost = \"{CERTNAME}\"\nsite = \"dc1\"\nport = {}\nroles = [\"puppet\", \"ca\"]\naddresses = [\"127.0.0.1\"]\n",
            self.port
        );
        TestDaemon::start_in(dir, &config, &reg).await.expect("daemon starts")
    }
}

fn status_of(d: &TestDaemon) -> srvd::control::proto::MasterStatus {
    d.running.as_ref().unwrap().control.status().masters.remove(0)
}

/// The master's status once `ok` holds for it.
async fn until(d: &TestDaemon, what: &str, ok: impl Fn(&srvd::control::proto::MasterStatus) -> bool) -> srvd::control::proto::MasterStatus {
    let t0 = Instant::now();
    loop {
        let m = status_of(d);
        if ok(&m) {
            return m;
        }
        assert!(t0.elapsed() < LIMIT, "{what}: not so after {LIMIT:?}: {m:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn role<'a>(m: &'a srvd::control::proto::MasterStatus, r: &str) -> &'a srvd::control::proto::RoleHealth {
    m.health.iter().find(|h| h.role == r).unwrap()
}

fn fingerprint_of(pem_file: &Path) -> String {
    let pem = std::fs::read(pem_file).unwrap();
    let certs = srvd::input::tls::pem_certificates(&pem).unwrap();
    srvd::input::tls::Fingerprint::of_der(certs[0].as_ref()).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_guard_and_jruby_metrics_against_a_real_puppet_server() {
    let ps = PuppetServer::start().await;
    let ca_fp = fingerprint_of(&ps.path("ssl/certs/ca.pem"));

    // 1. No client certificate: status, CA certificate and jruby-metrics are all open.
    let d = ps.srvd("").await;
    let m = until(&d, "CA up with its fingerprint and JRuby figures", |m| {
        role(m, "ca").state == "up" && role(m, "puppet").state == "up" && m.jrubies.as_ref().is_some_and(|j| j.total.is_some())
    })
    .await;
    assert_eq!(role(&m, "ca").ca_fingerprint.as_deref(), Some(ca_fp.as_str()), "the served CA is the CA agents trust");
    let j = m.jrubies.unwrap();
    assert_eq!(
        (j.total, j.free, j.borrowed, j.queued, j.error),
        (Some(1), Some(1), Some(0), Some(0), None),
        "max-active-instances = 1, idle"
    );
    // Capacity weights from the real figures (one master: the most spare of its tier).
    let t0 = Instant::now();
    loop {
        let e = d.running.as_ref().unwrap().control.explain(Some("dc1")).unwrap();
        let n = e.names.iter().find(|n| n.role == "puppet").unwrap();
        let inputs = n.masters[0].weight_inputs.clone().unwrap_or_default();
        if inputs.contains("1.0 of 1 JRubies spare") {
            assert_eq!(n.records[0].weight, 100, "{inputs}");
            break;
        }
        assert!(t0.elapsed() < LIMIT, "weights never followed the real figures: {inputs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Drain until idle: the real server reports no borrowed JRuby.
    let control = d.running.as_ref().unwrap().control.clone();
    let req = srvd::control::proto::Request::Drain(srvd::control::proto::DrainArgs {
        host: CERTNAME.into(),
        wait_idle: true,
        wait_timeout_ms: Some(20_000),
    });
    match control.handle(req, None).await {
        srvd::control::proto::Response::Ok(srvd::control::proto::Reply::Change(c)) => {
            let w = c.wait.unwrap();
            assert_eq!(w.outcome, "idle", "{w:?}");
            assert!(w.detail.contains("no JRuby borrowed (1 free of 1)"), "{w:?}");
        }
        other => panic!("{other:?}"),
    }
    d.stop().await;

    // 2. With a client certificate (the server's own, signed by the CA):
    // Puppet Server asks for one (`client-auth: want`) and accepts it.
    let ssl = ps.path("ssl").display().to_string();
    let d = ps.srvd(&format!("cert_file = \"{ssl}/certs/{CERTNAME}.pem\"\nkey_file = \"{ssl}/private_keys/{CERTNAME}.pem\"\n")).await;
    let m = until(&d, "CA up with a client certificate", |m| {
        role(m, "ca").state == "up" && m.jrubies.as_ref().is_some_and(|j| j.total.is_some())
    })
    .await;
    assert_eq!(role(&m, "ca").ca_fingerprint.as_deref(), Some(ca_fp.as_str()));
    d.stop().await;

    // 3. The server's CA directory now holds another CA certificate (a CA
    // restored from another backup): it serves it at once, and srvd's
    // guard takes the CA down, naming the fingerprint.
    let other = common::mock_master::TestCa::new();
    let ca_crt = ps.path("ca/ca_crt.pem");
    let original = std::fs::read(&ca_crt).unwrap();
    std::fs::write(&ca_crt, &other.cert_pem).unwrap();
    let d = ps.srvd("").await;
    let m = until(&d, "CA down for serving another CA", |m| role(m, "ca").state == "down").await;
    let want = format!("serves a different CA certificate (fingerprint {})", other.fingerprint());
    assert_eq!(role(&m, "ca").reason.as_deref(), Some(want.as_str()));
    assert_eq!(role(&m, "puppet").state, "up", "the puppet role is not affected");
    std::fs::write(&ca_crt, original).unwrap();
    d.stop().await;
}
