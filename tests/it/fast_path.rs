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
