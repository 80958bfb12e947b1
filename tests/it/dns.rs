//! The running daemon on an ephemeral port, queried over UDP and TCP (and
//! with `dig`) for every DNS behaviour of DESIGN.md §4.

use crate::common;

use std::process::Command;

use common::*;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

const REGISTRY: &str = r#"
# test estate
[[master]]
host = "pm1.dc1.puppet.example.test"
site = "dc1"
roles = ["puppet", "report"]
addresses = ["127.0.1.11", "::1"]
[[master]]
host = "pm2.example.com"
site = "dc1"
weight = 5
[[master]]
host = "pm1.dc2.puppet.example.test"
site = "dc2"
addresses = ["127.0.1.21"]
[[master]]
host = "pm1.example.net"
site = "dc3"
port = 8141
[[master]]
host = "ca.example.com"
site = "dc2"
roles = ["ca"]
"#;

async fn daemon() -> TestDaemon {
    TestDaemon::start_all_up(BASE_CONFIG, REGISTRY).await
}

const O: &str = "puppet.example.test.";

fn n(s: &str) -> String {
    format!("{s}.{O}")
}

#[tokio::test]
async fn site_srv_answer_is_authoritative_with_local_first_and_glue() {
    let d = daemon().await;
    for m in [d.udp(&n("_x-puppet._tcp.dc1"), RecordType::SRV).await, d.tcp(&n("_x-puppet._tcp.dc1"), RecordType::SRV).await] {
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative, "AA set");
        assert!(!m.metadata.recursion_available, "RA clear");
        assert_eq!(
            srv(&m),
            vec![
                (10, 10, 8140, "pm1.dc1.puppet.example.test".into()),
                (10, 5, 8140, "pm2.example.com".into()),
                (20, 10, 8140, "pm1.dc2.puppet.example.test".into()),
                (30, 10, 8141, "pm1.example.net".into()),
            ]
        );
        assert!(m.answers.iter().all(|r| r.ttl == 30));
        // Additional: addresses of in-zone targets only.
        let mut add: Vec<String> = m.additionals.iter().map(|r| format!("{} {}", r.name, r.data)).collect();
        add.sort();
        assert_eq!(
            add,
            vec!["pm1.dc1.puppet.example.test. 127.0.1.11", "pm1.dc1.puppet.example.test. ::1", "pm1.dc2.puppet.example.test. 127.0.1.21",]
        );
    }
    // dc3 fails over to dc2 first, then dc1.
    let m = d.udp(&n("_x-puppet._tcp.dc3"), RecordType::SRV).await;
    let order: Vec<String> = srv(&m).into_iter().map(|x| x.3).collect();
    assert_eq!(order, vec!["pm1.example.net", "pm1.dc2.puppet.example.test", "pm1.dc1.puppet.example.test", "pm2.example.com"]);
    // CA is the same single target everywhere, including the site-less apex name.
    for name in [n("_x-puppet-ca._tcp.dc1"), n("_x-puppet-ca._tcp.dc3"), n("_x-puppet-ca._tcp")] {
        let m = d.udp(&name, RecordType::SRV).await;
        assert_eq!(srv(&m), vec![(10, 10, 8140, "ca.example.com".into())], "{name}");
    }
    // Report role exists only on pm1.dc1; fileserver has no masters: NODATA.
    let m = d.udp(&n("_x-puppet-report._tcp.dc2"), RecordType::SRV).await;
    assert_eq!(srv(&m), vec![(20, 10, 8140, "pm1.dc1.puppet.example.test".into())]);
    let m = d.udp(&n("_x-puppet-fileserver._tcp.dc2"), RecordType::SRV).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
}

#[tokio::test]
async fn negative_answers_carry_the_soa() {
    let d = daemon().await;
    for proto in ["udp", "tcp"] {
        let q = |name: String, t| {
            let d = &d;
            async move { if proto == "udp" { d.udp(&name, t).await } else { d.tcp(&name, t).await } }
        };
        // NXDOMAIN
        let m = q(n("nope"), RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.authoritative);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1);
        let soa = &m.authorities[0];
        assert_eq!(soa.record_type(), RecordType::SOA);
        assert_eq!(soa.ttl, 20, "negative TTL = min(SOA TTL, minimum)");
        // The site-less name for a site that does not exist is NXDOMAIN too.
        let m = q(n("_x-puppet._tcp.dc9"), RecordType::SRV).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        // NODATA: existing name, other type; and empty non-terminals.
        for (name, t) in [
            (n("_x-puppet._tcp.dc1"), RecordType::A),
            (n("dc1"), RecordType::A),
            (n("_tcp.dc1"), RecordType::SRV),
            (n("_tcp"), RecordType::TXT),
        ] {
            let m = q(name.clone(), t).await;
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(m.metadata.authoritative, "{name}");
            assert!(m.answers.is_empty(), "{name}");
            assert_eq!(m.authorities.len(), 1, "{name}");
            assert_eq!(m.authorities[0].record_type(), RecordType::SOA, "{name}");
        }
        // Outside the zone: REFUSED, not authoritative.
        for name in ["www.example.com.", "example.test.", "."] {
            let m = q(name.to_string(), RecordType::A).await;
            assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
            assert!(!m.metadata.authoritative);
            assert!(m.answers.is_empty());
        }
    }
}

#[tokio::test]
async fn apex_soa_ns_and_in_zone_addresses() {
    let d = daemon().await;
    let m = d.udp(O, RecordType::SOA).await;
    assert!(m.metadata.authoritative);
    match &m.answers[0].data {
        RData::SOA(soa) => {
            assert_eq!(soa.mname.to_string(), "ns1.puppet.example.test.");
            assert_eq!(soa.rname.to_string(), "hostmaster.example.test.");
            assert_eq!(soa.serial, d.serial());
            assert_eq!(soa.minimum, 20);
        }
        o => panic!("not a SOA: {o:?}"),
    }
    let m = d.tcp(O, RecordType::NS).await;
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data.to_string(), "ns1.puppet.example.test.");
    let m = d.udp(&n("pm1.dc1"), RecordType::A).await;
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data.to_string(), "127.0.1.11");
    let m = d.udp(&n("pm1.dc1"), RecordType::AAAA).await;
    assert_eq!(m.answers[0].data.to_string(), "::1");
    // ANY at a master's name gives both families.
    let m = d.tcp(&n("pm1.dc1"), RecordType::ANY).await;
    assert_eq!(m.answers.len(), 2);
}

#[tokio::test]
async fn question_case_is_preserved() {
    let d = daemon().await;
    let name = "_X-Puppet._TCP.Dc1.PUPPET.example.TEST.";
    for m in [d.udp(name, RecordType::SRV).await, d.tcp(name, RecordType::SRV).await] {
        assert_eq!(m.queries[0].name().to_string(), name);
        assert_eq!(srv(&m).len(), 4);
    }
}

/// 20 masters with long names (SRV targets are never compressed): too big for 512 bytes, fits in 1232 only
/// without some additional records.
fn big_registry() -> String {
    let mut s = String::new();
    for i in 0..20 {
        s.push_str(&format!(
            "[[master]]\nhost = \"compiler-{i:02}.dc1.puppet.example.test\"\nsite = \"dc1\"\naddresses = [\"127.0.2.{i}\"]\n"
        ));
    }
    s
}

#[tokio::test]
async fn udp_size_limits_and_truncation() {
    let d = TestDaemon::start_all_up(BASE_CONFIG, &big_registry()).await;
    let name = n("_x-puppet._tcp.dc1");

    // No EDNS: 512 bytes max, TC, no partial answer.
    let raw = raw_udp(d.addr, &build_query(&name, RecordType::SRV, None)).await.unwrap();
    assert!(raw.len() <= 512);
    let m = Message::from_vec(&raw).unwrap();
    assert!(m.metadata.truncation, "TC set");
    assert!(m.answers.is_empty());
    assert_eq!(m.queries.len(), 1);

    // EDNS 4096: capped at 1232; answers fit, additional trimmed without TC.
    let raw = raw_udp(d.addr, &build_query(&name, RecordType::SRV, Some(4096))).await.unwrap();
    assert!(raw.len() <= 1232, "{} bytes", raw.len());
    let m = Message::from_vec(&raw).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(srv(&m).len(), 20);
    let glue = m.additionals.len();
    assert!(glue > 0 && glue < 20, "some but not all glue: {glue}");
    let edns = m.edns.as_ref().expect("OPT in response");
    assert_eq!(edns.max_payload(), 1232);

    // EDNS 600: more than 512, less than the answer: TC.
    let raw = raw_udp(d.addr, &build_query(&name, RecordType::SRV, Some(600))).await.unwrap();
    assert!(raw.len() <= 600);
    let m = Message::from_vec(&raw).unwrap();
    assert!(m.metadata.truncation);
    assert!(m.edns.is_some(), "OPT kept on truncated answers");

    // EDNS smaller than 512 counts as 512.
    let raw = raw_udp(d.addr, &build_query(O, RecordType::SOA, Some(60))).await.unwrap();
    assert!(raw.len() > 60, "{} bytes", raw.len());
    let m = Message::from_vec(&raw).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 1);

    // TCP: everything.
    let m = d.tcp(&name, RecordType::SRV).await;
    assert!(!m.metadata.truncation);
    assert_eq!(srv(&m).len(), 20);
    assert_eq!(m.additionals.len(), 20);
}

#[tokio::test]
async fn several_queries_on_one_tcp_connection() {
    let d = daemon().await;
    let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    for i in 0..20 {
        let site = ["dc1", "dc2", "dc3"][i % 3];
        let m = tcp_exchange(&mut s, &build_query(&n(&format!("_x-puppet._tcp.{site}")), RecordType::SRV, None)).await;
        assert_eq!(srv(&m).len(), 4, "query {i}");
    }
    let m = tcp_exchange(&mut s, &build_query(&n("missing"), RecordType::A, Some(1232))).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn edns_version_1_gets_badvers() {
    let d = daemon().await;
    let mut m = Message::new(77, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(n("_x-puppet._tcp.dc1")).unwrap(), RecordType::SRV));
    let mut e = Edns::new();
    e.set_version(1);
    e.set_max_payload(1232);
    m.set_edns(e);
    let q = m.to_vec().unwrap();
    let r = query_udp(d.addr, &q).await;
    assert_eq!(u16::from(r.metadata.response_code), 16, "BADVERS");
    assert_eq!(r.edns.as_ref().unwrap().version(), 0);
    assert!(r.answers.is_empty());
    let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let r = tcp_exchange(&mut s, &q).await;
    assert_eq!(u16::from(r.metadata.response_code), 16, "BADVERS");
}

#[tokio::test]
async fn odd_packets() {
    let d = daemon().await;
    // A response (QR=1) is never answered.
    let mut resp = Message::new(5, MessageType::Response, OpCode::Query);
    resp.add_query(Query::query(Name::from_ascii(O).unwrap(), RecordType::SOA));
    // (Silence is checked with a short wait; the answer to the next query on
    // the same server shows it is alive.)
    let quiet = std::time::Duration::from_millis(300);
    assert!(raw_udp_within(d.addr, &resp.to_vec().unwrap(), quiet).await.is_none());
    // Garbage after a valid header: FORMERR with the same id.
    let mut junk = build_query(O, RecordType::SOA, None);
    junk.truncate(16);
    let r = Message::from_vec(&raw_udp(d.addr, &junk).await.unwrap()).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // Shorter than a header: silence.
    assert!(raw_udp_within(d.addr, &[1, 2, 3], quiet).await.is_none());
    // Opcodes other than QUERY: NOTIMP.
    let mut up = Message::new(9, MessageType::Query, OpCode::Update);
    up.add_query(Query::query(Name::from_ascii(O).unwrap(), RecordType::SOA));
    let r = query_udp(d.addr, &up.to_vec().unwrap()).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
    // CHAOS class: REFUSED.
    let mut ch = Message::new(10, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
    q.set_query_class(DNSClass::CH);
    ch.add_query(q);
    let r = query_udp(d.addr, &ch.to_vec().unwrap()).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    // Zone transfer requests are refused (no secondaries configured).
    let m = d.tcp(O, RecordType::AXFR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    // Still serving after all that.
    assert_eq!(srv(&d.udp(&n("_x-puppet._tcp.dc2"), RecordType::SRV).await).len(), 4);
}

#[tokio::test]
async fn serial_rises_on_change_only_and_survives_restart() {
    let d = daemon().await;
    let s0 = d.serial();
    let p = d.running.as_ref().unwrap().publisher.clone();
    // An update that changes nothing keeps the serial.
    let ((), s1) = p.update(|_| {});
    assert_eq!(s1, s0);
    // Draining a master changes the records: serial rises and the answer changes at once.
    let ((), s2) = p.update(|c| {
        c.inputs.registry.masters.iter_mut().find(|m| m.host_str() == "pm2.example.com").unwrap().drained = true;
    });
    assert!(s2 > s0);
    let m = d.udp(O, RecordType::SOA).await;
    match &m.answers[0].data {
        RData::SOA(soa) => assert_eq!(soa.serial, s2),
        _ => unreachable!(),
    }
    assert_eq!(srv(&d.udp(&n("_x-puppet._tcp.dc1"), RecordType::SRV).await).len(), 3);
    // Restart on the same state_dir: the serial never goes back.
    let dir = d.stop().await;
    let last = p.snapshot().serial;
    assert!(last >= s2);
    let stored: u32 = std::fs::read_to_string(dir.path().join("state/serial")).unwrap().trim().parse().unwrap();
    assert_eq!(stored, last, "the served serial is on disk");
    let d2 = TestDaemon::start_in_with(dir, BASE_CONFIG, REGISTRY, Some(std::sync::Arc::new(AlwaysUp))).await.unwrap();
    assert!(d2.serial() > last, "{} > {last}", d2.serial());
}

fn dig(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+norecurse", "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig is installed (make test installs bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn dig_sees_authoritative_answers() {
    let d = TestDaemon::start_all_up(BASE_CONFIG, &format!("{REGISTRY}{}", big_registry())).await;
    let addr = d.addr;
    let out = tokio::task::spawn_blocking(move || dig(addr, &["_x-puppet._tcp.dc2.puppet.example.test", "SRV"])).await.unwrap();
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains("flags: qr aa;"), "AA, no RA: {out}");
    let first = out.lines().find(|l| !l.starts_with(';') && l.contains("SRV")).unwrap();
    assert!(first.contains("10 10 8140 pm1.dc2.puppet.example.test."), "local first: {first}");

    // Plain UDP without EDNS, big answer: dig gets TC and retries over TCP by itself.
    let out = tokio::task::spawn_blocking(move || dig(addr, &["+noedns", "_x-puppet._tcp.dc1.puppet.example.test", "SRV"])).await.unwrap();
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert!(out.contains("ANSWER: 24,"), "{out}");
    assert!(out.contains("(TCP)"), "{out}");

    let out = tokio::task::spawn_blocking(move || dig(addr, &["nothing.puppet.example.test", "A"])).await.unwrap();
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert!(out.contains("IN\tSOA"), "{out}");
    let out = tokio::task::spawn_blocking(move || dig(addr, &["www.example.org", "A"])).await.unwrap();
    assert!(out.contains("status: REFUSED"), "{out}");
    let out = tokio::task::spawn_blocking(move || dig(addr, &["+edns=1", "puppet.example.test", "SOA"])).await.unwrap();
    // dig sees BADVERS and retries with version 0, as RFC 6891 intends.
    assert!(out.contains("BADVERS, retrying with EDNS version 0"), "{out}");
    assert!(out.contains("status: NOERROR"), "{out}");
}
