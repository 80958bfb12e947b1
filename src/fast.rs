//! The fast path for the common query: one question, class IN, optional
//! plain EDNS0, name present in the zone. Responses are pre-encoded per
//! (name, type) when a snapshot is built — by the general code in `dns`, so
//! both paths give the same answer — and at query time only the ID, the RD/CD
//! bits, the question (client's case and type) and an OPT record are patched in.
//!
//! Anything else (missing names, ANY, transfers, odd flags, EDNS options we
//! would have to echo, a response that would need truncation) returns `None`
//! and goes through [`crate::dns::resolve`].

use std::collections::HashMap;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

use crate::dns::{self, MAX_UDP_PAYLOAD, Transport};
use crate::zone::Snapshot;

/// A pre-encoded response: header, lowercase question, sections; no OPT.
#[derive(Debug, Clone)]
struct Template {
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct FastNode {
    by_type: Vec<(u16, Template)>,
    /// NODATA (SOA in authority) for any type the name does not have.
    nodata: Option<Template>,
}

/// Pre-encoded answers of one snapshot, keyed by lowercase wire-format name.
#[derive(Debug, Clone, Default)]
pub struct FastZone {
    names: HashMap<Vec<u8>, FastNode>,
}

/// A type no zone holds, used to pre-encode the NODATA response.
const PROBE_TYPE: u16 = 65534;

fn wire_name(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

fn template(snap: &Snapshot, name: &Name, t: RecordType) -> Option<Template> {
    let mut m = Message::new(0, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(name.clone(), t));
    let q = m.to_vec().ok()?;
    let reply = dns::resolve(snap, &q, Transport::Tcp)?;
    let bytes = dns::encode(&reply);
    // Only NOERROR answers are worth keeping (NODATA included).
    if bytes.len() < 12 || bytes[3] & 0x0f != 0 {
        return None;
    }
    Some(Template { bytes })
}

impl FastZone {
    /// Pre-encodes every (name, type) of the snapshot, and a NODATA per name.
    pub fn build(snap: &Snapshot) -> FastZone {
        let mut names = HashMap::new();
        for (lname, node) in &snap.nodes {
            let name: Name = lname.clone().into();
            let mut f = FastNode::default();
            let mut types: Vec<RecordType> = node.rrsets.iter().map(|(t, _)| *t).collect();
            if lname == &snap.origin_lower {
                types.push(RecordType::SOA);
            }
            for t in types {
                if t == RecordType::CNAME {
                    // A CNAME answers every type; keep it on the general path.
                    continue;
                }
                if let Some(tpl) = template(snap, &name, t) {
                    f.by_type.push((u16::from(t), tpl));
                }
            }
            if node.get(RecordType::CNAME).is_none() {
                f.nodata = template(snap, &name, RecordType::Unknown(PROBE_TYPE));
            }
            names.insert(wire_name(&name), f);
        }
        FastZone { names }
    }

    /// Answers `q` from a template, or `None` for the general path.
    pub fn answer(&self, q: &[u8], transport: Transport) -> Option<Vec<u8>> {
        if q.len() < 17 {
            return None;
        }
        // QR=0, opcode QUERY, no TC/AA/Z oddities we would have to think about.
        if q[2] & 0xfe != 0 || q[3] & 0xc0 != 0 {
            return None;
        }
        let counts = [u16::from_be_bytes([q[4], q[5]]), u16::from_be_bytes([q[6], q[7]]), u16::from_be_bytes([q[8], q[9]])];
        let arcount = u16::from_be_bytes([q[10], q[11]]);
        if counts != [1, 0, 0] || arcount > 1 {
            return None;
        }
        // The question name: plain labels only, lowercased into a stack buffer.
        let mut lower = [0u8; 255];
        let mut i = 12;
        let mut n = 0;
        loop {
            let len = *q.get(i)? as usize;
            if len > 63 || n + len + 1 > 255 {
                return None;
            }
            lower[n] = len as u8;
            n += 1;
            if len == 0 {
                i += 1;
                break;
            }
            let label = q.get(i + 1..i + 1 + len)?;
            for (k, b) in label.iter().enumerate() {
                lower[n + k] = b.to_ascii_lowercase();
            }
            n += len;
            i += 1 + len;
        }
        let qname_end = i;
        let tail = q.get(i..i + 4)?;
        let qtype = u16::from_be_bytes([tail[0], tail[1]]);
        let qclass = u16::from_be_bytes([tail[2], tail[3]]);
        if qclass != 1 || matches!(qtype, 255 | 252 | 251 | 0 | PROBE_TYPE) {
            return None;
        }
        i += 4;
        let edns_payload = if arcount == 1 {
            // OPT: root owner, type 41, class = payload, ttl = ext-rcode/version/flags, no options.
            let opt = q.get(i..i + 11)?;
            if opt[0] != 0 || opt[1..3] != [0, 41] || opt[5] != 0 || opt[6] != 0 || opt[9..11] != [0, 0] {
                return None;
            }
            // DO bit or other EDNS flags: fine to ignore (no DNSSEC); version must be 0.
            i += 11;
            Some(u16::from_be_bytes([opt[3], opt[4]]))
        } else {
            None
        };
        if i != q.len() {
            return None;
        }
        let node = self.names.get(&lower[..n])?;
        let tpl = node.by_type.iter().find(|(t, _)| *t == qtype).map(|(_, t)| t).or(node.nodata.as_ref())?;
        let limit = match (transport, edns_payload) {
            (Transport::Tcp, _) => u16::MAX as usize,
            (Transport::Udp, None) => 512,
            (Transport::Udp, Some(p)) => p.clamp(512, MAX_UDP_PAYLOAD) as usize,
        };
        let opt_len = if edns_payload.is_some() { 11 } else { 0 };
        if tpl.bytes.len() + opt_len > limit {
            return None;
        }
        let mut out = Vec::with_capacity(tpl.bytes.len() + opt_len);
        out.extend_from_slice(&tpl.bytes);
        out[0] = q[0];
        out[1] = q[1];
        out[2] = (out[2] & !0x01) | (q[2] & 0x01); // RD
        out[3] = (out[3] & !0x10) | (q[3] & 0x10); // CD
        out[12..qname_end + 2].copy_from_slice(&q[12..qname_end + 2]); // name as sent, and qtype
        if edns_payload.is_some() {
            let ar = u16::from_be_bytes([out[10], out[11]]) + 1;
            out[10..12].copy_from_slice(&ar.to_be_bytes());
            out.extend_from_slice(&[0, 0, 41]);
            out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        Some(out)
    }
}
