//! The pre-encoded fast path must answer exactly what the general path
//! answers, for every name, type, EDNS size, DO bit, RD bit and letter case.

use std::path::Path;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, Record, RecordType};
use srvd::dns::{self, Transport};
use srvd::health::HealthStates;
use srvd::input::config::{Config, EXAMPLE_CONFIG, EXAMPLE_REGISTRY, EXAMPLE_ZONE_FILE};
use srvd::input::registry::Registry;
use srvd::zone::publish::{Inputs, Publisher};

fn publisher(registry: &str) -> std::sync::Arc<Publisher> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("example.zone"), EXAMPLE_ZONE_FILE).unwrap();
    let cfg = Config::parse(EXAMPLE_CONFIG, &dir.path().join("example.toml"), dir.path()).unwrap();
    let statics = srvd::input::zonefile::load(&dir.path().join("example.zone"), &cfg.zone.origin, cfg.zone.ttl).unwrap();
    let reg = Registry::parse(registry, Path::new("m.toml"), &cfg).unwrap();
    let inputs = Inputs::assemble(cfg, statics, reg).unwrap();
    Publisher::new(inputs, HealthStates::new(), None).unwrap()
}

fn lower(rs: &[Record]) -> Vec<Record> {
    rs.iter()
        .map(|r| {
            let mut r = r.clone();
            r.name = Name::from_ascii(r.name.to_ascii().to_ascii_lowercase()).unwrap();
            r
        })
        .collect()
}

fn mixed_case(s: &str, seed: usize) -> String {
    s.chars().enumerate().map(|(i, c)| if (i + seed).is_multiple_of(3) { c.to_ascii_uppercase() } else { c }).collect()
}

#[test]
fn fast_path_matches_general_path() {
    let mut big = EXAMPLE_REGISTRY.to_string();
    for i in 0..12 {
        big.push_str(&format!("[[master]]\nhost = \"extra-compiler-{i}.dc2.puppet.example.test\"\nsite = \"dc2\"\naddresses = [\"127.0.3.{i}\"]\ncheck = \"tcp\"\n"));
    }
    for registry in [EXAMPLE_REGISTRY, big.as_str()] {
        let p = publisher(registry);
        let snap = srvd::dns::served::Served::new(p.snapshot());
        let mut names: Vec<String> = snap.nodes.keys().map(|n| n.to_string()).collect();
        names.extend([
            "nope.puppet.example.test.".into(),
            "a.b.nope.pm1.dc1.puppet.example.test.".into(),
            "_x-puppet._tcp.dc9.puppet.example.test.".into(),
            "puppet.example.test.evil.".into(),
            "example.test.".into(),
            "www.example.com.".into(),
            ".".into(),
        ]);
        let types = [
            RecordType::SRV,
            RecordType::A,
            RecordType::AAAA,
            RecordType::SOA,
            RecordType::NS,
            RecordType::TXT,
            RecordType::MX,
            RecordType::ANY,
            RecordType::CAA,
        ];
        let (mut fast_hits, mut total) = (0, 0);
        for (ni, name) in names.iter().enumerate() {
            for t in types {
                for (edns, dnssec_ok) in
                    [(None, false), (Some(512u16), false), (Some(600), true), (Some(1232), false), (Some(1232), true), (Some(4096), false)]
                {
                    for rd in [false, true] {
                        for transport in [Transport::Udp, Transport::Tcp] {
                            let qname = if ni % 2 == 0 { mixed_case(name, ni) } else { name.clone() };
                            let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
                            m.metadata.recursion_desired = rd;
                            m.add_query(Query::query(Name::from_ascii(&qname).unwrap(), t));
                            if let Some(size) = edns {
                                let mut e = Edns::new();
                                e.set_max_payload(size);
                                e.set_dnssec_ok(dnssec_ok);
                                m.set_edns(e);
                            }
                            let q = m.to_vec().unwrap();
                            total += 1;
                            let slow = dns::encode(&dns::reply(&snap, &q, transport).unwrap());
                            let Some(fast) = snap.fast.answer(&q, transport) else { continue };
                            fast_hits += 1;
                            let (a, b) = (Message::from_vec(&fast).unwrap(), Message::from_vec(&slow).unwrap());
                            let ctx = format!("{qname} {t} edns={edns:?} do={dnssec_ok} rd={rd} {transport:?}");
                            assert_eq!(a.metadata, b.metadata, "{ctx}");
                            assert_eq!(a.queries, b.queries, "{ctx}");
                            assert_eq!(a.queries[0].name().to_string(), qname, "{ctx}: question case kept");
                            assert_eq!(lower(&a.answers), lower(&b.answers), "{ctx}");
                            assert_eq!(lower(&a.authorities), lower(&b.authorities), "{ctx}");
                            assert_eq!(lower(&a.additionals), lower(&b.additionals), "{ctx}");
                            assert_eq!(a.edns, b.edns, "{ctx}");
                            // RFC 3225: the DO bit is copied into the response.
                            assert_eq!(a.edns.as_ref().map(|e| e.flags().dnssec_ok), edns.map(|_| dnssec_ok), "{ctx}");
                            if transport == Transport::Udp {
                                let limit = edns.map(|s| s.clamp(512, 1232) as usize).unwrap_or(512);
                                assert!(fast.len() <= limit, "{ctx}: {} > {limit}", fast.len());
                            }
                        }
                    }
                }
            }
        }
        // Missing names in the zone are answered NXDOMAIN on the fast path.
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii("Nope.Puppet.Example.Test.").unwrap(), RecordType::A));
        let fast = snap.fast.answer(&m.to_vec().unwrap(), Transport::Udp).expect("NXDOMAIN on the fast path");
        assert_eq!(Message::from_vec(&fast).unwrap().metadata.response_code, hickory_proto::op::ResponseCode::NXDomain);
        // The common queries do take the fast path.
        assert!(fast_hits * 2 > total, "fast path used for {fast_hits} of {total}");
    }
}

/// The example config with client networks: dc1 owns 127.0.1.0/24,
/// 10.1.0.0/16 and ::1; dc2 127.0.2.0/24 and 10.1.5.0/24 (inside dc1's);
/// ECS is believed from 127.0.0.1 only. `default` adds client_site_default.
pub(crate) fn example_with_networks(default: Option<&str>) -> String {
    let mut text = EXAMPLE_CONFIG
        .replace("[server]\n", "[server]\necs_trusted = [\"127.0.0.1/32\"]\nallow_secondaries_with_networks = true\n")
        .replace("name = \"dc1\"\n", "name = \"dc1\"\nnetworks = [\"127.0.1.0/24\", \"10.1.0.0/16\", \"::1/128\"]\n")
        .replace("name = \"dc2\"\n", "name = \"dc2\"\nnetworks = [\"127.0.2.0/24\", \"10.1.5.0/24\"]\n");
    if let Some(d) = default {
        text = text.replace("[policy]\n", &format!("[policy]\nclient_site_default = \"{d}\"\n"));
    }
    text
}

/// `q` (with an OPT and no options, the OPT last) with `option` (code,
/// length and data) added to the OPT.
pub(crate) fn with_option(mut q: Vec<u8>, option: &[u8]) -> Vec<u8> {
    let n = q.len();
    let rdlen = u16::from_be_bytes([q[n - 2], q[n - 1]]) + option.len() as u16;
    q[n - 2..].copy_from_slice(&rdlen.to_be_bytes());
    q.extend_from_slice(option);
    q
}

/// An ECS option: family, source prefix, scope 0, the address bytes given.
pub(crate) fn ecs_option(family: u16, source: u8, addr: &[u8]) -> Vec<u8> {
    let mut o = vec![0, 8];
    o.extend_from_slice(&(4 + addr.len() as u16).to_be_bytes());
    o.extend_from_slice(&family.to_be_bytes());
    o.extend_from_slice(&[source, 0]);
    o.extend_from_slice(addr);
    o
}

/// Answers chosen by client network: the fast path (one template per site)
/// answers byte for byte what the general path does, for every source,
/// ECS option (trusted or not, matching or not, malformed), name and type.
#[test]
fn fast_path_matches_general_path_for_answers_chosen_by_network() {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use std::net::IpAddr;
    for default in [None, Some("dc3")] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("example.zone"), EXAMPLE_ZONE_FILE).unwrap();
        let cfg = Config::parse(&example_with_networks(default), &dir.path().join("example.toml"), dir.path()).unwrap();
        let statics = srvd::input::zonefile::load(&dir.path().join("example.zone"), &cfg.zone.origin, cfg.zone.ttl).unwrap();
        let reg = Registry::parse(EXAMPLE_REGISTRY, Path::new("m.toml"), &cfg).unwrap();
        let p = Publisher::new(Inputs::assemble(cfg, statics, reg).unwrap(), HealthStates::new(), None).unwrap();
        let snap = srvd::dns::served::Served::new(p.snapshot());
        let srcs: [Option<IpAddr>; 7] = [
            None,
            Some("127.0.0.1".parse().unwrap()),
            Some("127.0.1.9".parse().unwrap()),
            Some("127.0.2.9".parse().unwrap()),
            Some("::1".parse().unwrap()),
            Some("192.0.2.1".parse().unwrap()),
            Some("::ffff:127.0.2.3".parse().unwrap()),
        ];
        let ecs: [Option<Vec<u8>>; 9] = [
            None,
            Some(ecs_option(1, 24, &[10, 1, 7])),
            Some(ecs_option(1, 24, &[10, 1, 5])),
            Some(ecs_option(1, 16, &[10, 2])),
            Some(ecs_option(1, 0, &[])),
            Some(ecs_option(2, 48, &[0x20, 1, 0xd, 0xb8, 0, 1])),
            Some(ecs_option(1, 32, &[127, 0, 2, 1])),
            // Malformed: FORMERR on the general path, never a fast answer.
            Some(ecs_option(3, 24, &[10, 1, 7])),
            Some(ecs_option(1, 20, &[10, 1, 7])),
        ];
        let names = [
            "_x-puppet._tcp.puppet.example.test.",
            "_X-Puppet-CA._tcp.puppet.example.test.",
            "_x-puppet-report._tcp.puppet.example.test.",
            "_x-puppet-fileserver._tcp.puppet.example.test.",
            "_x-puppet._tcp.dc2.puppet.example.test.",
            "pm1.dc1.puppet.example.test.",
            "nope.puppet.example.test.",
        ];
        let (mut fast_hits, mut total, mut by_network) = (0, 0, 0);
        for name in names {
            for t in [RecordType::SRV, RecordType::TXT, RecordType::A, RecordType::ANY] {
                for (ei, opt) in ecs.iter().enumerate() {
                    for src in srcs {
                        for transport in [Transport::Udp, Transport::Tcp] {
                            let q = common_query(name, t, opt.is_some() || ei == 0 && src.is_some_and(|s| s.is_ipv6()));
                            let q = match opt {
                                Some(o) => with_option(q, o),
                                None => q,
                            };
                            total += 1;
                            let slow_reply = dns::reply_from(&snap, &q, transport, src).unwrap();
                            let slow = dns::encode(&slow_reply);
                            let ctx = format!("{name} {t} ecs#{ei} src={src:?} {transport:?} default={default:?}");
                            if ei >= 7 {
                                let m = Message::from_vec(&slow).unwrap();
                                assert_eq!(m.metadata.response_code, hickory_proto::op::ResponseCode::FormErr, "{ctx}");
                                assert!(snap.fast.answer_from(&q, transport, src).is_none(), "{ctx}");
                                continue;
                            }
                            let Some(fast) = snap.fast.answer_from(&q, transport, src) else { continue };
                            fast_hits += 1;
                            let (a, b) = (Message::from_vec(&fast).unwrap(), Message::from_vec(&slow).unwrap());
                            // The templates are the general path's bytes (a mixed-case
                            // question only changes how the general path compresses).
                            if !b.answers.is_empty() && name == name.to_ascii_lowercase() {
                                assert_eq!(fast, slow, "{ctx}: byte-identical");
                            }
                            assert_eq!(a.metadata, b.metadata, "{ctx}");
                            assert_eq!(lower(&a.answers), lower(&b.answers), "{ctx}");
                            assert_eq!(lower(&a.authorities), lower(&b.authorities), "{ctx}");
                            assert_eq!(a.edns, b.edns, "{ctx}");
                            if let Some(EdnsOption::Subnet(s)) = a.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet))
                                && s.scope_prefix() > 0
                            {
                                by_network += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(fast_hits * 2 > total, "fast path used for {fast_hits} of {total}");
        assert!(by_network > 50, "answers with a non-zero ECS scope: {by_network}");
    }
}

fn common_query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// The in-process cost of answers chosen by client network on the fast
/// path, against the per-site names (bench/dns.sh measures it over UDP):
/// ns per answer for dc1's names, the site-less names from a source in
/// dc1's networks, and the same with a trusted ECS option.
#[test]
#[ignore = "benchmark: cargo test --release --test it -- --ignored fast_path::network_choice_cost --nocapture"]
fn network_choice_cost() {
    use std::net::IpAddr;
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("example.zone"), EXAMPLE_ZONE_FILE).unwrap();
    let cfg = Config::parse(&example_with_networks(None), &dir.path().join("example.toml"), dir.path()).unwrap();
    let statics = srvd::input::zonefile::load(&dir.path().join("example.zone"), &cfg.zone.origin, cfg.zone.ttl).unwrap();
    let reg = Registry::parse(EXAMPLE_REGISTRY, Path::new("m.toml"), &cfg).unwrap();
    let p = Publisher::new(Inputs::assemble(cfg, statics, reg).unwrap(), HealthStates::new(), None).unwrap();
    let snap = srvd::dns::served::Served::new(p.snapshot());
    let svcs = ["_x-puppet", "_x-puppet-ca", "_x-puppet-report", "_x-puppet-fileserver"];
    let q = |site: &str, ecs: bool| -> Vec<Vec<u8>> {
        svcs.iter()
            .map(|s| {
                let q = common_query(&format!("{s}._tcp.{site}puppet.example.test."), RecordType::SRV, true);
                if ecs { with_option(q, &ecs_option(1, 24, &[10, 1, 7])) } else { q }
            })
            .collect()
    };
    let src: IpAddr = "127.0.1.9".parse().unwrap();
    let trusted: IpAddr = "127.0.0.1".parse().unwrap();
    let mut out = Vec::with_capacity(2048);
    let mut time = |qs: &[Vec<u8>], from: IpAddr| {
        let n = 400_000;
        let t = Instant::now();
        for i in 0..n {
            snap.fast.answer_into_from(&qs[i % qs.len()], Transport::Udp, Some(from), &mut out).expect("fast path");
        }
        t.elapsed().as_nanos() as f64 / n as f64
    };
    let site = time(&q("dc1.", false), src);
    let net = time(&q("", false), src);
    let ecs = time(&q("", true), trusted);
    println!(
        "fast path ns/answer: per-site {site:.0}, by network (source) {net:.0} ({:.2}x), by network (trusted ECS) {ecs:.0} ({:.2}x)",
        net / site,
        ecs / site
    );
}
