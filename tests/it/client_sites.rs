//! One `srv_domain` for every agent (`[[site]] networks`): the site-less
//! names answer each client with its site's records, chosen by the query's
//! source address or by the EDNS Client Subnet of a trusted resolver.
//! Against the real daemon: direct queries from several loopback sources
//! (IPv4 and ::1, UDP and TCP), dig with +subnet from a trusted and an
//! untrusted source, `srvctl explain --client`, and a real Unbound with
//! ECS enabled in front of srvd.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};

use crate::common::{self, TestDaemon};

const SRVCTL: &str = env!("CARGO_BIN_EXE_srvctl");
const O: &str = "puppet.example.test.";

/// dc1: 127.0.1.0/24, 10.1.0.0/16, ::1; dc2: 127.0.2.0/24 and 10.1.5.0/24
/// (inside dc1's /16); dc3: none. ECS is believed from 127.0.0.1 only.
fn config() -> String {
    common::BASE_CONFIG
        .replace("listen = [\"127.0.0.1:0\"]", "listen = [\"127.0.0.1:0\", \"[::1]:0\"]\necs_trusted = [\"127.0.0.1/32\"]")
        .replace("name = \"dc1\"\n", "name = \"dc1\"\nnetworks = [\"127.0.1.0/24\", \"10.1.0.0/16\", \"::1/128\"]\n")
        .replace("name = \"dc2\"\n", "name = \"dc2\"\nnetworks = [\"127.0.2.0/24\", \"10.1.5.0/24\"]\n")
}

fn registry() -> String {
    let m = |host: &str, site: &str, roles: &str| {
        format!("[[master]]\nhost = \"{host}\"\nsite = \"{site}\"\nroles = [{roles}]\naddresses = [\"127.0.0.1\"]\ncheck = \"tcp\"\n")
    };
    [
        m("pm1.dc1.example.com", "dc1", "\"puppet\""),
        m("pm1.dc2.example.com", "dc2", "\"puppet\", \"report\""),
        m("pm1.dc3.example.com", "dc3", "\"puppet\""),
        m("ca1.dc1.example.com", "dc1", "\"ca\""),
    ]
    .concat()
}

/// (priority, target) of an answer, in order.
fn order(m: &Message) -> Vec<(u16, String)> {
    common::srv(m).into_iter().map(|(p, _, _, t)| (p, t)).collect()
}

fn site_order(first: &str) -> Vec<(u16, String)> {
    // Tiers: dc1 -> dc2 (failover) -> dc3; dc2 -> dc1, dc3 (config order); dc3 -> dc2 -> dc1.
    let tiers: &[&str] = match first {
        "dc1" => &["dc1", "dc2", "dc3"],
        "dc2" => &["dc2", "dc1", "dc3"],
        _ => &["dc3", "dc2", "dc1"],
    };
    tiers.iter().enumerate().map(|(i, s)| (10 + 10 * i as u16, format!("pm1.{s}.example.com"))).collect()
}

fn pool() -> Vec<(u16, String)> {
    ["dc1", "dc2", "dc3"].iter().map(|s| (10, format!("pm1.{s}.example.com"))).collect()
}

/// A UDP query from a socket bound to `from`.
async fn udp_from(from: IpAddr, to: SocketAddr, name: &str, t: RecordType) -> Message {
    let s = UdpSocket::bind(SocketAddr::new(from, 0)).await.unwrap();
    s.send_to(&common::build_query(name, t, Some(1232)), to).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf)).await.expect("reply in time").unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

/// A TCP query from a socket bound to `from`.
async fn tcp_from(from: IpAddr, to: SocketAddr, name: &str, t: RecordType) -> Message {
    let sock = if from.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = sock.connect(to).await.unwrap();
    let q = common::build_query(name, t, None);
    s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
    s.write_all(&q).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len)).await.expect("reply in time").unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_queries_get_the_site_of_their_source_address() {
    let d = TestDaemon::start_all_up(&config(), &registry()).await;
    let v4 = d.addr;
    let v6 = d.running.as_ref().unwrap().dns_addrs[1];
    let pool_name = format!("_x-puppet._tcp.{O}");
    for (from, to, want) in [
        (ip("127.0.1.7"), v4, site_order("dc1")),
        (ip("127.0.1.200"), v4, site_order("dc1")),
        (ip("127.0.2.7"), v4, site_order("dc2")),
        (ip("127.0.0.9"), v4, pool()),
        (ip("127.0.0.1"), v4, pool()),
        (ip("::1"), v6, site_order("dc1")),
    ] {
        let m = udp_from(from, to, &pool_name, RecordType::SRV).await;
        assert_eq!(order(&m), want, "UDP from {from}");
        assert!(m.metadata.authoritative);
        assert!(m.answers.iter().all(|r| r.name.to_string() == pool_name), "owner is the name asked: {:?}", m.answers);
        assert_eq!(order(&tcp_from(from, to, &pool_name, RecordType::SRV).await), want, "TCP from {from}");
    }
    // The per-site names do not depend on the client.
    let dc3 = format!("_x-puppet._tcp.dc3.{O}");
    assert_eq!(order(&udp_from(ip("127.0.1.7"), v4, &dc3, RecordType::SRV).await), site_order("dc3"));
    // The CA is the same for everyone, under the site-less name.
    let ca = format!("_x-puppet-ca._tcp.{O}");
    let m = udp_from(ip("127.0.2.7"), v4, &ca, RecordType::SRV).await;
    assert_eq!(order(&m), [(10, "ca1.dc1.example.com".to_string())]);
    assert_eq!(m.answers[0].name.to_string(), ca);
    // report: dc2 has a report master; dc1's answer lists it at dc1's failover tier.
    let report = format!("_x-puppet-report._tcp.{O}");
    assert_eq!(order(&udp_from(ip("127.0.1.7"), v4, &report, RecordType::SRV).await), [(20, "pm1.dc2.example.com".to_string())]);
    assert_eq!(order(&udp_from(ip("127.0.2.7"), v4, &report, RecordType::SRV).await), [(10, "pm1.dc2.example.com".to_string())]);
    // fileserver: nobody has the role: NODATA for every client.
    let fs = udp_from(ip("127.0.1.7"), v4, &format!("_x-puppet-fileserver._tcp.{O}"), RecordType::SRV).await;
    assert!(fs.answers.is_empty() && fs.metadata.response_code == hickory_proto::op::ResponseCode::NoError);
}

/// dig +subnet; returns (SRV targets in order, the CLIENT-SUBNET line's text).
async fn dig_subnet(d: &TestDaemon, from: &str, subnet: &str) -> (Vec<String>, String) {
    let out = tokio::process::Command::new("dig")
        .args(["-p", &d.addr.port().to_string(), "@127.0.0.1", "-b", from, &format!("+subnet={subnet}"), "+norec", "+time=3", "+tries=2"])
        .arg(format!("_x-puppet._tcp.{O}"))
        .arg("SRV")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && text.contains("status: NOERROR"), "{text}");
    let mut answers: Vec<(u16, String)> = text
        .lines()
        .filter(|l| !l.starts_with(';') && l.split_whitespace().nth(3) == Some("SRV"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(4)?.parse().ok()?, f.get(7)?.trim_end_matches('.').to_string()))
        })
        .collect();
    answers.sort();
    assert!(!answers.is_empty(), "{text}");
    let ecs = text.lines().find(|l| l.contains("CLIENT-SUBNET")).unwrap_or("").trim().to_string();
    (answers.into_iter().map(|(p, t)| format!("{p} {t}")).collect(), ecs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_subnet_is_believed_from_the_trusted_resolver_only() {
    let d = TestDaemon::start_all_up(&config(), &registry()).await;
    let show = |o: Vec<(u16, String)>| o.into_iter().map(|(p, t)| format!("{p} {t}")).collect::<Vec<_>>();
    // Trusted: 10.1.5.0/24 is dc2's (inside dc1's /16); scope 24.
    let (got, ecs) = dig_subnet(&d, "127.0.0.1", "10.1.5.0/24").await;
    assert_eq!(got, show(site_order("dc2")));
    assert!(ecs.ends_with("10.1.5.0/24/24"), "{ecs}");
    // 10.1.7.0/24 is dc1's /16, but only 10.1.6.0/23 is sure (dc2's 10.1.5.0/24 is close by): scope 23.
    let (got, ecs) = dig_subnet(&d, "127.0.0.1", "10.1.7.0/24").await;
    assert_eq!(got, show(site_order("dc1")));
    assert!(ecs.ends_with("10.1.7.0/24/23"), "{ecs}");
    // Outside every network: the pool, scoped to the block that holds no network.
    let (got, ecs) = dig_subnet(&d, "127.0.0.1", "192.0.2.0/24").await;
    assert_eq!(got, show(pool()));
    assert!(ecs.ends_with("192.0.2.0/24/1"), "{ecs}");
    // Untrusted source: the ECS is ignored (scope 0); its own address decides.
    let (got, ecs) = dig_subnet(&d, "127.0.0.3", "10.1.5.0/24").await;
    assert_eq!(got, show(pool()));
    assert!(ecs.ends_with("10.1.5.0/24/0"), "{ecs}");
    let (got, _) = dig_subnet(&d, "127.0.2.3", "10.1.7.0/24").await;
    assert_eq!(got, show(site_order("dc2")), "an untrusted client in dc2's network gets dc2");
    // A malformed subnet (bits past the prefix): FORMERR.
    let out = tokio::process::Command::new("dig")
        .args(["-p", &d.addr.port().to_string(), "@127.0.0.1", "-b", "127.0.0.1", "+ednsopt=8:00011600 0a0107", "+norec", "+time=3"])
        .arg(format!("_x-puppet._tcp.{O}"))
        .arg("SRV")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: FORMERR"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_client_says_which_site_and_why() {
    let d = TestDaemon::start_all_up(&config(), &registry()).await;
    let run = |args: Vec<&'static str>| {
        let sock = d.path("control.sock");
        async move { tokio::process::Command::new(SRVCTL).arg("--socket").arg(sock).args(args).output().await.unwrap() }
    };
    let o = run(vec!["--json", "explain", "--client", "127.0.2.9"]).await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = &v["ok"]["client"];
    assert_eq!(
        (c["site"].as_str(), c["reason"].as_str(), c["network"].as_str(), c["scope"].as_u64()),
        (Some("dc2"), Some("network"), Some("127.0.2.0/24"), Some(24))
    );
    let names = v["ok"]["names"].as_array().unwrap();
    assert_eq!(names.len(), 4);
    assert_eq!(names[0]["name"], format!("_x-puppet._tcp.{O}"));
    assert_eq!(names[0]["site"], "dc2");
    assert_eq!(names[0]["records"][0]["target"], "pm1.dc2.example.com");
    let o = run(vec!["explain", "--client", "10.1.5.1"]).await;
    let human = String::from_utf8_lossy(&o.stdout);
    assert!(human.contains("client 10.1.5.1 gets site dc2: 10.1.5.1 is in 10.1.5.0/24 of site dc2"), "{human}");
    assert!(human.contains("pm1.dc2.example.com"), "{human}");
    let o = run(vec!["--json", "explain", "--client", "192.0.2.1"]).await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"]["client"]["reason"], "pool");
    assert!(v["ok"]["client"]["site"].is_null());
    assert_eq!(v["ok"]["names"][0]["records"].as_array().unwrap().len(), 3, "the pool: every site");
    let o = run(vec!["explain", "--client", "::1"]).await;
    assert!(String::from_utf8_lossy(&o.stdout).contains("gets site dc1"));
    // Usage errors: not an address; --site with --client.
    assert_eq!(run(vec!["explain", "--client", "dc1"]).await.status.code(), Some(2));
    assert_eq!(run(vec!["explain", "--client", "10.0.0.1", "--site", "dc1"]).await.status.code(), Some(2));
}

/// A free loopback UDP port (bound and released; Unbound binds it next).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Unbound as a non-daemon on a loopback port, its own config in a temp
/// dir, with the subnet cache on and ECS sent to srvd (127.0.0.1), which
/// is a stub zone. Killed on drop.
struct Unbound {
    child: tokio::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Unbound {
    async fn start(srvd: SocketAddr) -> Unbound {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = format!(
            r#"server:
  interface: 127.0.0.1
  port: {port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  num-threads: 1
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  outgoing-interface: 127.0.0.1
  module-config: "subnetcache iterator"
  send-client-subnet: 127.0.0.1
  max-client-subnet-ipv4: 24
  qname-minimisation: no
  auto-trust-anchor-file: ""
  trust-anchor-file: ""
  # Unbound answers NXDOMAIN for the special-use "test." itself (RFC 6761) unless told not to.
  local-zone: "test." nodefault
stub-zone:
  name: "{O}"
  stub-addr: 127.0.0.1@{srvd_port}
remote-control:
  control-enable: no
"#,
            dir = dir.path().display(),
            srvd_port = srvd.port()
        );
        let path = dir.path().join("unbound.conf");
        std::fs::write(&path, conf).unwrap();
        let child = tokio::process::Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("unbound runs (Makefile DEB_PACKAGES has it)");
        Unbound { child, port, _dir: dir }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_unbound_with_ecs_each_network_gets_its_site() {
    let d = TestDaemon::start_all_up(&config(), &registry()).await;
    let mut u = Unbound::start(d.addr).await;
    let name = format!("_x-puppet._tcp.{O}");
    // Wait for Unbound to answer (it may take a moment to start under load).
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let s = UdpSocket::bind("127.0.1.7:0").await.unwrap();
        let mut q = common::build_query(&name, RecordType::SRV, None);
        q[2] |= 0x01; // RD: a recursive query
        s.send_to(&q, u.addr()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_millis(500), s.recv_from(&mut buf)).await {
            let m = Message::from_vec(&buf[..n]).unwrap();
            if !m.answers.is_empty() {
                break m;
            }
        }
        if let Ok(Some(status)) = u.child.try_wait() {
            let mut err = String::new();
            u.child.stderr.take().unwrap().read_to_string(&mut err).await.unwrap();
            panic!("unbound exited ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "unbound does not answer");
    };
    let sorted = |m: &Message| {
        let mut o = order(m);
        o.sort();
        o
    };
    assert_eq!(sorted(&first), site_order("dc1"), "a client in dc1's 127.0.1.0/24");
    async fn ask(u: &Unbound, from: &str, name: &str) -> Message {
        let s = UdpSocket::bind(format!("{from}:0")).await.unwrap();
        let mut q = common::build_query(name, RecordType::SRV, None);
        q[2] |= 0x01;
        s.send_to(&q, u.addr()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), s.recv_from(&mut buf)).await.expect("unbound answers").unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }
    // Another network through the same resolver: its own site, not dc1's cached answer.
    assert_eq!(sorted(&ask(&u, "127.0.2.7", &name).await), site_order("dc2"), "a client in dc2's 127.0.2.0/24");
    // And again, now both are in Unbound's subnet cache: each keeps its own.
    assert_eq!(sorted(&ask(&u, "127.0.1.8", &name).await), site_order("dc1"));
    assert_eq!(sorted(&ask(&u, "127.0.2.8", &name).await), site_order("dc2"));
    // A client in no network: the pool.
    assert_eq!(sorted(&ask(&u, "127.0.5.5", &name).await), pool());
}

/// Networks change with `srvctl reload`; a bad network is refused with
/// file, key and reason, and the last good networks keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_follow_a_reload_and_a_bad_one_keeps_the_old() {
    let d = TestDaemon::start_all_up(&config(), &registry()).await;
    let name = format!("_x-puppet._tcp.{O}");
    assert_eq!(order(&udp_from(ip("127.0.2.7"), d.addr, &name, RecordType::SRV).await), site_order("dc2"));
    let path = d.path("srvd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let reload =
        || async { tokio::process::Command::new(SRVCTL).arg("--socket").arg(d.path("control.sock")).arg("reload").output().await.unwrap() };
    // 127.0.2.0/24 moves to dc3.
    let moved = text
        .replace(", \"10.1.5.0/24\"]", "]")
        .replace("\"127.0.2.0/24\"", "\"10.1.5.0/24\"")
        .replace("name = \"dc3\"\n", "name = \"dc3\"\nnetworks = [\"127.0.2.0/24\"]\n");
    std::fs::write(&path, &moved).unwrap();
    let o = reload().await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(order(&udp_from(ip("127.0.2.7"), d.addr, &name, RecordType::SRV).await), site_order("dc3"));
    // Host bits set: refused, naming the key; dc3 still answers.
    std::fs::write(&path, moved.replace("\"127.0.2.0/24\"", "\"127.0.2.1/24\"")).unwrap();
    let o = reload().await;
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("site[2].networks[0]") && err.contains("did you mean 127.0.2.0/24"), "{err}");
    assert_eq!(order(&udp_from(ip("127.0.2.7"), d.addr, &name, RecordType::SRV).await), site_order("dc3"));
}

/// The per-site templates of the site-less names are reused across
/// publications where that site's answer did not change: after each of a
/// seeded series of health changes, every answer chosen by network equals
/// one from a freshly built `Served`, from every network.
#[test]
fn reused_per_site_templates_equal_a_fresh_build() {
    use rand::{Rng, SeedableRng};
    use srvd::health::{Health, HealthStates};
    use srvd::input::config::{Config, EXAMPLE_REGISTRY};
    use srvd::input::registry::{Registry, Role};
    use srvd::zone::publish::{Inputs, Publisher};
    let dir = std::path::Path::new("/nonexistent-srvd-test");
    let text = crate::fast_path::example_with_networks(None).replace("file = \"example.zone\"", "");
    let cfg = Config::parse(&text, &dir.join("example.toml"), dir).unwrap();
    let reg = Registry::parse(EXAMPLE_REGISTRY, &dir.join("m.toml"), &cfg).unwrap();
    let publisher = Publisher::new(Inputs::assemble(cfg, vec![], reg).unwrap(), HealthStates::new(), None).unwrap();
    let served = srvd::dns::served::ServedZone::attach(&publisher);
    let keys: Vec<_> = publisher.lock().inputs.registry.masters.iter().map(|m| m.key()).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let srcs: Vec<IpAddr> = ["127.0.1.9", "127.0.2.9", "192.0.2.1", "::1"].iter().map(|s| ip(s)).collect();
    let mut changed = 0;
    for step in 0..30 {
        let k = keys[rng.random_range(0..keys.len())].clone();
        let h = if rng.random_bool(0.5) { Health::Down } else { Health::Up };
        let before = served.snapshot();
        publisher.update(|core| {
            for role in Role::ALL {
                core.health.insert((k.clone(), role), h);
            }
        });
        let now = served.snapshot();
        changed += usize::from(!std::sync::Arc::ptr_eq(&before.zone.nodes, &now.zone.nodes));
        let fresh = srvd::dns::served::Served::new(now.zone.clone());
        for svc in ["_x-puppet", "_x-puppet-ca", "_x-puppet-report", "_x-puppet-fileserver"] {
            for t in [RecordType::SRV, RecordType::TXT] {
                let q = common::build_query(&format!("{svc}._tcp.{O}"), t, Some(1232));
                for src in &srcs {
                    assert_eq!(
                        now.fast.answer_from(&q, srvd::dns::Transport::Udp, Some(*src)),
                        fresh.fast.answer_from(&q, srvd::dns::Transport::Udp, Some(*src)),
                        "step {step}: {svc} {t} from {src}"
                    );
                }
            }
        }
    }
    assert!(changed >= 5, "the health changes changed the answers ({changed} of 30)");
}
