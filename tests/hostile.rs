//! Hostile and malformed packets: the reported crash (a TSIG with long key
//! and algorithm names beside a long question name), the fuzz corpus
//! replayed through the library harness, and thousands of malformed packets
//! against the real daemon over UDP and TCP, after which it must still answer
//! correctly with all its UDP workers.

mod common;

use srvd::dns::fuzzing;

/// A wire-format name of `len` octets (at most 255), labels of at most 63.
fn long_name(len: usize, fill: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut left = len - 1; // the root label
    while left > 0 {
        let l = (left - 1).min(63);
        if l == 0 {
            // One octet left cannot hold a label: widen the previous one.
            break;
        }
        out.push(l as u8);
        out.extend(std::iter::repeat_n(fill, l));
        left -= l + 1;
    }
    out.push(0);
    out
}

/// A query for `qname` (wire format) with a TSIG record named `key`, with
/// algorithm `alg` and an empty MAC: an unknown key, so the BADKEY path.
fn tsig_query(id: u16, qname: &[u8], key: &[u8], alg: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(qname);
    p.extend_from_slice(&[0, 33, 0, 1]); // SRV IN
    p.extend_from_slice(key);
    p.extend_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0]); // TSIG ANY TTL 0
    let mut rdata = alg.to_vec();
    rdata.extend_from_slice(&[0, 0, 0x65, 0x00, 0x00, 0x00]); // time
    rdata.extend_from_slice(&300u16.to_be_bytes()); // fudge
    rdata.extend_from_slice(&[0, 0]); // MAC size 0
    rdata.extend_from_slice(&id.to_be_bytes()); // original ID
    rdata.extend_from_slice(&[0, 0, 0, 0]); // error, other len
    p.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    p.extend_from_slice(&rdata);
    p
}

/// The packets of the report: long names (the "always fit" expect) and
/// longer ones (the size arithmetic underflow), in several sizes.
fn reported_crash_packets() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for (q, k, a) in [(255, 100, 100), (255, 200, 200), (255, 255, 255), (200, 150, 150), (100, 255, 255), (30, 255, 255)] {
        v.push(tsig_query(0x4242, &long_name(q, b'q'), &long_name(k, b'k'), &long_name(a, b'a')));
    }
    v
}

#[test]
fn reported_crash_tsig_with_long_names_is_answered() {
    let snap = fuzzing::example_snapshot().unwrap();
    for p in reported_crash_packets() {
        assert!(fuzzing::fuzz_one(&snap, &p) > 0, "the packet is answered");
        // UDP: NOTAUTH (BADKEY), within 512 bytes.
        let reply = srvd::dns::resolve(&snap, &p, srvd::dns::Transport::Udp).unwrap();
        let bytes = srvd::dns::encode(&reply);
        assert!(bytes.len() <= 512);
        let m = hickory_proto::op::Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.response_code, hickory_proto::op::ResponseCode::NotAuth);
    }
}
