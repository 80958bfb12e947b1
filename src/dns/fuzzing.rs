//! The fuzzing harness, in the library so that the cargo-fuzz target
//! (`fuzz/`) and an ordinary test (`tests/it/hostile.rs`, which replays the
//! corpus in `fuzz/corpus/`) run the same code.
//!
//! [`fuzz_one`] takes raw request bytes through every path a packet can
//! take to an encoded reply (fast path, general path, TSIG check and
//! signing, zone transfer) over UDP and TCP, from an unknown client, from a
//! secondary that needs a key and from one that needs none, and panics when
//! a reply breaks a property: it must parse, fit its size limit, have QR set
//! and carry the request's ID.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType};

use crate::dns::served::Served;
use crate::dns::{self, MAX_UDP_PAYLOAD, Transport};
use crate::health::HealthStates;
use crate::input::config::{Config, EXAMPLE_CONFIG, EXAMPLE_REGISTRY, EXAMPLE_ZONE_FILE};
use crate::input::error::InputError;
use crate::input::registry::Registry;
use crate::zone::publish::{Inputs, Publisher};

/// A secondary that may transfer without a key (the example's secondary,
/// 127.0.0.1, needs the TSIG key `xfr.example.test`).
pub const KEYLESS_SECONDARY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The example config's secondary (transfers need the key); its EDNS
/// Client Subnet options are believed (`ecs_trusted`).
pub const KEYED_SECONDARY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// A client inside dc1's networks (the site-less names answer with dc1's records).
pub const DC1_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 5));

/// Why the example snapshot could not be built (a bug in the embedded example).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] InputError),
    #[error("publishing the example snapshot: {0}")]
    Publish(#[from] std::io::Error),
}

/// A realistic snapshot: the example config (three sites, a zone file, a
/// TSIG key and a keyed secondary at 127.0.0.1) plus a keyless secondary at
/// 127.0.0.2, client networks (dc1: 127.0.1.0/24 and ::1, dc2: 10.2.0.0/16
/// and 127.0.0.2/32; ECS trusted from 127.0.0.1), and the example registry
/// with a dozen more masters, so that some answers need truncation over UDP.
pub fn example_snapshot() -> Result<Arc<Served>, SetupError> {
    let dir = Path::new("/nonexistent-srvd-fuzz");
    let text = format!("{EXAMPLE_CONFIG}\n[[secondary]]\naddress = \"{KEYLESS_SECONDARY}:53\"\nnotify = false\n")
        .replace("[server]\n", "[server]\necs_trusted = [\"127.0.0.1/32\"]\nallow_secondaries_with_networks = true\n")
        .replace("name = \"dc1\"\n", "name = \"dc1\"\nnetworks = [\"127.0.1.0/24\", \"::1/128\"]\n")
        .replace("name = \"dc2\"\n", "name = \"dc2\"\nnetworks = [\"10.2.0.0/16\", \"127.0.0.2/32\"]\n");
    let cfg = Config::parse(&text, &dir.join("example.toml"), dir)?;
    let statics = crate::input::zonefile::parse(EXAMPLE_ZONE_FILE, &dir.join("example.zone"), &cfg.zone.origin, cfg.zone.ttl)?;
    let mut registry = EXAMPLE_REGISTRY.to_string();
    for i in 0..12 {
        registry.push_str(&format!(
            "[[master]]\nhost = \"extra-compiler-{i}.dc2.puppet.example.test\"\nsite = \"dc2\"\naddresses = [\"127.0.3.{i}\"]\ncheck = \"tcp\"\n"
        ));
    }
    let reg = Registry::parse(&registry, &dir.join("masters.toml"), &cfg)?;
    let inputs = Inputs::assemble(cfg, statics, reg)?;
    Ok(Arc::new(Served::new(Publisher::new(inputs, HealthStates::new(), None)?.snapshot())))
}

/// The size limit a reply to `req` over `transport` must respect, worked
/// out independently of `dns`: 512 without EDNS, the EDNS size clamped to
/// 512..=1232 with it, 65535 over TCP.
pub fn limit_for(req: &[u8], transport: Transport) -> usize {
    match transport {
        Transport::Tcp => u16::MAX as usize,
        Transport::Udp => match Message::from_vec(req).ok().and_then(|m| m.edns) {
            Some(e) => e.max_payload().clamp(512, MAX_UDP_PAYLOAD) as usize,
            None => 512,
        },
    }
}

/// Checks one encoded reply to `req`; panics with `what` when it is wrong.
pub fn check_reply(req: &[u8], resp: &[u8], limit: usize, what: &str) {
    assert!(resp.len() <= limit, "{what}: reply of {} bytes exceeds the limit {limit}", resp.len());
    let m = match Message::from_vec(resp) {
        Ok(m) => m,
        Err(e) => panic!("{what}: reply does not parse: {e}; reply {resp:02x?}"),
    };
    assert_eq!(m.metadata.message_type, MessageType::Response, "{what}: QR set");
    if let Some(id) = req.get(..2) {
        assert_eq!(m.metadata.id.to_be_bytes(), id, "{what}: the request's ID");
    }
}

/// Runs `req` through every path to an encoded reply and checks each reply
/// (see the module doc). Returns how many replies were checked.
pub fn fuzz_one(snap: &Served, req: &[u8]) -> usize {
    let mut checked = 0;
    for transport in [Transport::Udp, Transport::Tcp] {
        let limit = limit_for(req, transport);
        for src in [None, Some(DC1_CLIENT), Some(KEYED_SECONDARY)] {
            if let Some(fast) = snap.fast.answer_from(req, transport, src) {
                check_reply(req, &fast, limit, &format!("fast path {transport:?} from {src:?}"));
                checked += 1;
            }
        }
        for src in [None, Some(KEYED_SECONDARY), Some(KEYLESS_SECONDARY), Some(DC1_CLIENT)] {
            let what = format!("general path {transport:?} from {src:?}");
            if let Some(a) = dns::answer(snap, req, transport, src) {
                check_reply(req, &a.bytes, limit, &what);
                checked += 1;
            }
            let Some(reply) = dns::reply_from(snap, req, transport, src) else { continue };
            assert!(reply.limit <= limit, "{what}: reply limit {} above {limit}", reply.limit);
            check_reply(req, &dns::encode(&reply), limit, &what);
            checked += 1;
            if reply.transfer {
                assert_eq!(transport, Transport::Tcp, "{what}: transfers only over TCP");
                let messages = dns::encode_transfer(snap, &reply);
                assert!(!messages.is_empty(), "{what}: a transfer has messages");
                for (i, m) in messages.iter().enumerate() {
                    check_reply(req, m, u16::MAX as usize, &format!("{what}: transfer message {i}"));
                    checked += 1;
                }
            }
        }
    }
    checked
}
