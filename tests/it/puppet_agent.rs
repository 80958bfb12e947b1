//! The real Puppet agent's SRV code (Puppet::HTTP::DNS from Debian's
//! puppet-agent package) resolving through a real srvd: the order in which an
//! agent would try masters, per site and service, for normal answers,
//! truncated answers (UDP -> TCP) and failover.
//!
//! Puppet picks inside one priority at random by weight, so these tests
//! compare priority groups (sets), never the order inside a group.

use crate::common;
use crate::common::puppet_order as order;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{BASE_CONFIG, TestDaemon, srv};
use hickory_proto::rr::RecordType;
use order::{Outcome, puppet_order, sets};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const ORIGIN: &str = "puppet.example.test";

/// A stand-in Puppet master for `check = "tcp"`: up while its port accepts.
/// Connections are accepted and closed at once.
struct Master {
    port: u16,
    task: Option<JoinHandle<()>>,
}

impl Master {
    async fn start() -> Master {
        Self::on_port(0).await
    }

    async fn on_port(port: u16) -> Master {
        let l = TcpListener::bind(("127.0.0.1", port)).await.expect("bind master");
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                drop(s);
            }
        });
        Master { port, task: Some(task) }
    }

    /// Stops accepting: the port refuses connections from now on.
    async fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await; // the listener is dropped when the task ends
        }
    }

    /// Listens on the same port again.
    async fn revive(&mut self) {
        self.kill().await;
        *self = Master::on_port(self.port).await;
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// One `[[master]]` table, reached on 127.0.0.1:`port`.
fn master(host: &str, site: &str, roles: &[&str], port: u16, weight: u16) -> String {
    let roles: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
    format!(
        "[[master]]\nhost = \"{host}.{ORIGIN}\"\nsite = \"{site}\"\nport = {port}\nroles = [{}]\nweight = {weight}\naddresses = [\"127.0.0.1\"]\ncheck = \"tcp\"\n\n",
        roles.join(", ")
    )
}

fn fq(h: &str) -> String {
    format!("{h}.{ORIGIN}")
}

fn fq_sets(groups: &[&[&str]]) -> Vec<BTreeSet<String>> {
    let owned: Vec<Vec<String>> = groups.iter().map(|g| g.iter().map(|h| fq(h)).collect()).collect();
    let refs: Vec<Vec<&str>> = owned.iter().map(|g| g.iter().map(String::as_str).collect()).collect();
    let refs: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
    sets(&refs)
}

fn spec(site: Option<&str>, service: &str) -> String {
    match site {
        Some(s) => format!("{s}.{ORIGIN}:{service}"),
        None => format!("{ORIGIN}:{service}"),
    }
}

/// BASE_CONFIG's sites: dc1 (failover dc2), dc2, dc3 (failover dc2). Tiers
/// are [site] + failover + the other sites in config order, so:
///   dc1: dc1, dc2, dc3     dc2: dc2, dc1, dc3     dc3: dc3, dc2, dc1
/// Masters: dc1 has two compilers with different weights, the primary CA and
/// no report server; dc2 has a compiler that also takes reports, and the
/// standby CA; dc3 one compiler. No master has the fileserver role.
fn estate(port: u16) -> String {
    [
        master("pm1.dc1", "dc1", &["puppet"], port, 10),
        master("pm2.dc1", "dc1", &["puppet"], port, 30),
        master("ca1.dc1", "dc1", &["ca"], port, 10),
        master("pm1.dc2", "dc2", &["puppet", "report"], port, 10),
        master("ca2.dc2", "dc2", &["ca"], port, 10),
        master("pm1.dc3", "dc3", &["puppet"], port, 10),
    ]
    .concat()
}

fn by_spec<'a>(outs: &'a [Outcome], spec: &str) -> &'a Outcome {
    let (d, s) = spec.rsplit_once(':').unwrap();
    outs.iter().find(|o| o.domain == d && o.service == s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puppet_tries_local_masters_first_then_failover_sites_in_order() {
    let m = Master::start().await;
    let d = TestDaemon::start(BASE_CONFIG, &estate(m.port)).await;

    let mut specs = Vec::new();
    for site in [Some("dc1"), Some("dc2"), Some("dc3"), None] {
        for service in ["puppet", "ca", "report", "file"] {
            specs.push(spec(site, service));
        }
    }
    // 8 repeats: 8 fresh weighted random choices per name.
    let outs = puppet_order(d.addr, &specs, 8).await;

    // _x-puppet: local site first, then the failover order.
    let puppet = [
        ("dc1", fq_sets(&[&["pm1.dc1", "pm2.dc1"], &["pm1.dc2"], &["pm1.dc3"]])),
        ("dc2", fq_sets(&[&["pm1.dc2"], &["pm1.dc1", "pm2.dc1"], &["pm1.dc3"]])),
        ("dc3", fq_sets(&[&["pm1.dc3"], &["pm1.dc2"], &["pm1.dc1", "pm2.dc1"]])),
    ];
    for (site, want) in &puppet {
        let o = by_spec(&outs, &spec(Some(site), "puppet"));
        assert_eq!(o.names(), [format!("_x-puppet._tcp.{site}.{ORIGIN}")]);
        assert_eq!(&o.group_sets(), want, "puppet order for {site}");
        // Puppet got srvd's weights and ports unchanged.
        for r in o.used() {
            let w = if r.target == fq("pm2.dc1") { 30 } else { 10 };
            assert_eq!((r.weight, r.port), (w, m.port), "{r:?}");
        }
        assert!(!o.tcp, "a small answer needs no TCP");
    }

    for site in ["dc1", "dc2", "dc3"] {
        // _x-puppet-ca: the one active CA (ca1.dc1, first in site order), the
        // same for every site; the standby never appears.
        let ca = by_spec(&outs, &spec(Some(site), "ca"));
        assert_eq!(ca.names(), [format!("_x-puppet-ca._tcp.{site}.{ORIGIN}")], "no fallback for the CA");
        assert_eq!(ca.group_sets(), fq_sets(&[&["ca1.dc1"]]), "CA for {site}");

        // _x-puppet-report: only the report master, at its site's tier.
        let rep = by_spec(&outs, &spec(Some(site), "report"));
        assert_eq!(rep.names(), [format!("_x-puppet-report._tcp.{site}.{ORIGIN}")]);
        assert_eq!(rep.group_sets(), fq_sets(&[&["pm1.dc2"]]), "report for {site}");
        let want_prio = if site == "dc2" { 10 } else { 20 };
        assert_eq!(rep.used()[0].priority, want_prio, "report priority for {site}");

        // _x-puppet-fileserver: no master has the role, srvd answers NODATA,
        // Puppet falls back to _x-puppet and uses that order.
        let file = by_spec(&outs, &spec(Some(site), "file"));
        assert_eq!(
            file.names(),
            [format!("_x-puppet-fileserver._tcp.{site}.{ORIGIN}"), format!("_x-puppet._tcp.{site}.{ORIGIN}")],
            "fileserver falls back to _x-puppet"
        );
        assert!(file.queries[0].records.is_empty());
        let want = &puppet.iter().find(|(s, _)| *s == site).unwrap().1;
        assert_eq!(&file.group_sets(), want, "fileserver (fallback) order for {site}");
    }

    // The site-less pool at the apex: every compiler at one priority.
    let pool = by_spec(&outs, &spec(None, "puppet"));
    assert_eq!(pool.group_sets(), fq_sets(&[&["pm1.dc1", "pm2.dc1", "pm1.dc2", "pm1.dc3"]]));
    assert_eq!(by_spec(&outs, &spec(None, "ca")).group_sets(), fq_sets(&[&["ca1.dc1"]]));
    assert_eq!(by_spec(&outs, &spec(None, "report")).group_sets(), fq_sets(&[&["pm1.dc2"]]));
    assert_eq!(by_spec(&outs, &spec(None, "file")).names().len(), 2, "apex fileserver falls back too");

    d.stop().await;
}

/// Puppet weighs `weight * 10` at random inside a priority: over many fresh
/// runs both dc1 compilers come first sometimes. (Loose bound: with weights
/// 10 and 30, pm1.dc1 is first with p = 1/4; 60 runs all missing it has
/// probability (3/4)^60 ~ 3e-8.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puppet_spreads_agents_over_a_sites_masters_by_weight() {
    let m = Master::start().await;
    let d = TestDaemon::start(BASE_CONFIG, &estate(m.port)).await;
    let o = puppet_order(d.addr, &[spec(Some("dc1"), "puppet")], 60).await.remove(0);
    assert_eq!(o.firsts(), [fq("pm1.dc1"), fq("pm2.dc1")].into_iter().collect());
    d.stop().await;
}

/// Enough masters that the answer exceeds 512 bytes: Ruby's resolver (no
/// EDNS) gets TC over UDP, retries over TCP and Puppet sees every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_reach_puppet_over_tcp() {
    const N: usize = 40;
    let m = Master::start().await;
    let mut reg = String::new();
    for i in 0..N {
        let site = if i % 2 == 0 { "dc1" } else { "dc2" };
        reg.push_str(&master(&format!("compiler-{i:02}.{site}"), site, &["puppet"], m.port, 10));
    }
    let d = TestDaemon::start(BASE_CONFIG, &reg).await;

    // Precondition: over plain UDP the answer really is truncated.
    let name = format!("_x-puppet._tcp.dc1.{ORIGIN}.");
    let udp = d.udp(&name, RecordType::SRV).await;
    assert!(udp.metadata.truncation, "UDP answer without EDNS is truncated");
    let tcp = d.tcp(&name, RecordType::SRV).await;
    assert_eq!(srv(&tcp).len(), N, "TCP answer has every record");

    let o = puppet_order(d.addr, &[spec(Some("dc1"), "puppet")], 3).await.remove(0);
    assert!(o.tcp, "Ruby's resolver retried over TCP: {o:?}");
    assert_eq!(o.used().len(), N, "Puppet saw every record");
    let dc1: Vec<String> = (0..N).step_by(2).map(|i| format!("compiler-{i:02}.dc1")).collect();
    let dc2: Vec<String> = (1..N).step_by(2).map(|i| format!("compiler-{i:02}.dc2")).collect();
    let dc1: Vec<&str> = dc1.iter().map(String::as_str).collect();
    let dc2: Vec<&str> = dc2.iter().map(String::as_str).collect();
    assert_eq!(o.group_sets(), fq_sets(&[&dc1, &dc2]));
    d.stop().await;
}

/// Health timing for the failover tests: a dead master leaves the answers
/// within a second or so.
const FAST_HEALTH: &str = r#"
[health]
interval = "200ms"
fast_interval = "100ms"
timeout = "500ms"
rise = 1
fall = 1
"#;

/// Waits (polling srvd over UDP, deadline 15 s) until `name`'s SRV targets
/// are exactly the set `want`: srvd has noticed the change.
async fn wait_published(d: &TestDaemon, name: &str, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|h| fq(h)).collect();
    let fqdn = format!("{name}.{ORIGIN}.");
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let got: BTreeSet<String> = srv(&d.udp(&fqdn, RecordType::SRV).await).into_iter().map(|r| r.3).collect();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "srvd did not publish {want:?} at {name} within 15 s (a change needs srvd's health checks, issue 3); got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A master dies (its port stops accepting): once srvd has noticed, Puppet's
/// order for every site no longer has it, and the standby CA takes over the
/// CA name; when it returns, Puppet's order is back to the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puppet_order_follows_masters_dying_and_returning() {
    let mut pm1 = Master::start().await;
    let pm2 = Master::start().await;
    let mut ca1 = Master::start().await;
    let ca2 = Master::start().await;
    let dc2 = Master::start().await;
    let dc3 = Master::start().await;
    let reg = [
        master("pm1.dc1", "dc1", &["puppet"], pm1.port, 10),
        master("pm2.dc1", "dc1", &["puppet"], pm2.port, 10),
        master("ca1.dc1", "dc1", &["ca"], ca1.port, 10),
        master("pm1.dc2", "dc2", &["puppet", "report"], dc2.port, 10),
        master("ca2.dc2", "dc2", &["ca"], ca2.port, 10),
        master("pm1.dc3", "dc3", &["puppet"], dc3.port, 10),
    ]
    .concat();
    let d = TestDaemon::start(&format!("{BASE_CONFIG}{FAST_HEALTH}"), &reg).await;
    let specs = || ["dc1", "dc2", "dc3"].iter().flat_map(|s| [spec(Some(s), "puppet"), spec(Some(s), "ca")]).collect::<Vec<_>>();
    let groups = |outs: &[Outcome], site: &str, svc: &str| by_spec(outs, &spec(Some(site), svc)).group_sets();

    let before = puppet_order(d.addr, &specs(), 4).await;
    assert_eq!(groups(&before, "dc1", "puppet"), fq_sets(&[&["pm1.dc1", "pm2.dc1"], &["pm1.dc2"], &["pm1.dc3"]]));
    assert_eq!(groups(&before, "dc3", "puppet"), fq_sets(&[&["pm1.dc3"], &["pm1.dc2"], &["pm1.dc1", "pm2.dc1"]]));
    assert_eq!(groups(&before, "dc2", "ca"), fq_sets(&[&["ca1.dc1"]]));

    // pm1.dc1 and the primary CA die.
    pm1.kill().await;
    ca1.kill().await;
    wait_published(&d, "_x-puppet._tcp.dc1", &["pm2.dc1", "pm1.dc2", "pm1.dc3"]).await;
    wait_published(&d, "_x-puppet-ca._tcp.dc1", &["ca2.dc2"]).await;
    let dead = puppet_order(d.addr, &specs(), 4).await;
    assert_eq!(groups(&dead, "dc1", "puppet"), fq_sets(&[&["pm2.dc1"], &["pm1.dc2"], &["pm1.dc3"]]));
    assert_eq!(groups(&dead, "dc2", "puppet"), fq_sets(&[&["pm1.dc2"], &["pm2.dc1"], &["pm1.dc3"]]));
    assert_eq!(groups(&dead, "dc3", "puppet"), fq_sets(&[&["pm1.dc3"], &["pm1.dc2"], &["pm2.dc1"]]));
    for site in ["dc1", "dc2", "dc3"] {
        assert_eq!(groups(&dead, site, "ca"), fq_sets(&[&["ca2.dc2"]]), "standby CA for {site}");
    }

    // Both come back.
    pm1.revive().await;
    ca1.revive().await;
    wait_published(&d, "_x-puppet._tcp.dc1", &["pm1.dc1", "pm2.dc1", "pm1.dc2", "pm1.dc3"]).await;
    wait_published(&d, "_x-puppet-ca._tcp.dc1", &["ca1.dc1"]).await;
    let back = puppet_order(d.addr, &specs(), 4).await;
    for site in ["dc1", "dc2", "dc3"] {
        for svc in ["puppet", "ca"] {
            assert_eq!(groups(&back, site, svc), groups(&before, site, svc), "{site} {svc} back to normal");
        }
    }
    d.stop().await;
}

/// The case the agent cannot handle alone: a master that accepts TCP and TLS
/// but answers 503 (or hangs) is used anyway by Puppet (DESIGN.md §2). srvd's
/// https check (mock masters from tests/common/mock_master.rs) takes it out,
/// and Puppet's order no longer has it; healthy again, it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puppet_order_drops_sick_masters_that_puppet_would_use() {
    use common::mock_master::{Behaviour, MockMaster, TestCa};
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    ca.write(&dir.path().join("ca.pem"));
    let pm1 = MockMaster::start(&ca, &fq("pm1.dc1")).await;
    let pm2 = MockMaster::start(&ca, &fq("pm2.dc1")).await;
    let dc2 = MockMaster::start(&ca, &fq("pm1.dc2")).await;
    let reg =
        [pm1.registry_entry("dc1", &["puppet"]), pm2.registry_entry("dc1", &["puppet"]), dc2.registry_entry("dc2", &["puppet"])].concat();
    let health = FAST_HEALTH.replace("[health]", "[health]\nca_file = \"{dir}/ca.pem\"");
    let d = TestDaemon::start_in(dir, &format!("{BASE_CONFIG}{health}"), &reg).await.expect("daemon starts");
    let dc1 = || async { puppet_order(d.addr, &[spec(Some("dc1"), "puppet")], 4).await.remove(0).group_sets() };

    wait_published(&d, "_x-puppet._tcp.dc1", &["pm1.dc1", "pm2.dc1", "pm1.dc2"]).await;
    assert_eq!(dc1().await, fq_sets(&[&["pm1.dc1", "pm2.dc1"], &["pm1.dc2"]]));

    pm1.set(Behaviour::Status(503)).await;
    wait_published(&d, "_x-puppet._tcp.dc1", &["pm2.dc1", "pm1.dc2"]).await;
    assert_eq!(dc1().await, fq_sets(&[&["pm2.dc1"], &["pm1.dc2"]]), "503 master out of Puppet's order");

    pm2.set(Behaviour::Hang).await;
    wait_published(&d, "_x-puppet._tcp.dc1", &["pm1.dc2"]).await;
    assert_eq!(dc1().await, fq_sets(&[&["pm1.dc2"]]), "hung master out too: dc1 agents go to dc2");

    pm1.set(Behaviour::Healthy).await;
    pm2.set(Behaviour::Healthy).await;
    wait_published(&d, "_x-puppet._tcp.dc1", &["pm1.dc1", "pm2.dc1", "pm1.dc2"]).await;
    assert_eq!(dc1().await, fq_sets(&[&["pm1.dc1", "pm2.dc1"], &["pm1.dc2"]]), "back to the local site");
    d.stop().await;
}
