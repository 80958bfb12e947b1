//! Answering queries from a [`Snapshot`]: authoritative-only semantics
//! (AA, REFUSED outside the zone, NXDOMAIN/NODATA with SOA, additional A/AAAA
//! for in-zone targets), EDNS (BADVERS, payload limits) and truncation.
//!
//! [`resolve_from`] works out the response to raw query bytes and [`encode`]
//! turns it into bytes, so the UDP path ([`answer_counted`]), the TCP path
//! and tests share one implementation.

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use std::net::IpAddr;

use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::metrics::counters::{Outcome, Path, Shard};
use crate::tsig;
use crate::zone::Snapshot;

/// UDP payload srvd advertises and never exceeds (DNS flag day 2020).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// Transport the query came in on; decides the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A response before encoding.
#[derive(Debug, Default)]
pub struct Reply {
    pub metadata: Option<Metadata>,
    pub query: Option<Query>,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    /// EDNS of the response (present iff the query had EDNS).
    pub edns: Option<Edns>,
    /// Size limit of the whole message.
    pub limit: usize,
    /// Signs the response when the request carried a TSIG (RFC 8945).
    pub tsig: Option<crate::tsig::ResponseSigner>,
    /// An allowed zone transfer over TCP: the caller sends the zone
    /// ([`crate::xfr::messages`]) with this reply's header and signer.
    pub transfer: bool,
}

/// Answers one raw query from a client at `src` (which decides zone
/// transfers), fast path first, and counts the answer (or the silence) in
/// `shard`. `None` means: send nothing (not a query, or too broken to say
/// anything about).
/// This is the UDP hot path: the counting is two or three relaxed atomic
/// increments on the worker's own shard.
pub fn answer_counted(snap: &Snapshot, query: &[u8], transport: Transport, src: Option<IpAddr>, shard: &Shard) -> Option<Vec<u8>> {
    if let Some(bytes) = snap.fast.answer(query, transport) {
        // Templates are NOERROR and never truncated; ANCOUNT 0 is NODATA.
        let no_answers = bytes[6] == 0 && bytes[7] == 0;
        shard.answered(transport, Path::Fast, Outcome::of(ResponseCode::NoError, no_answers), false);
        return Some(bytes);
    }
    let Some(reply) = resolve_from(snap, query, transport, src) else {
        shard.dropped(transport);
        return None;
    };
    let bytes = encode(&reply);
    let rcode = reply.metadata.map_or(ResponseCode::ServFail, |m| m.response_code);
    let truncated = bytes[2] & 0x02 != 0;
    shard.answered(transport, Path::General, Outcome::of(rcode, reply.answers.is_empty()), truncated);
    Some(bytes)
}

fn header_metadata(req: &[u8]) -> Option<Metadata> {
    if req.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([req[0], req[1]]);
    let qr = req[2] & 0x80 != 0;
    if qr {
        return None; // never answer responses
    }
    let op = OpCode::from_u8((req[2] >> 3) & 0x0f);
    let mut m = Metadata::new(id, MessageType::Response, op);
    m.recursion_desired = req[2] & 0x01 != 0;
    m.checking_disabled = req[3] & 0x10 != 0;
    Some(m)
}

fn error(mut m: Metadata, rcode: ResponseCode, query: Option<Query>, edns: Option<Edns>, limit: usize) -> Reply {
    m.response_code = rcode;
    Reply { metadata: Some(m), query, edns, limit, ..Default::default() }
}

fn response_edns(req: &Edns) -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(MAX_UDP_PAYLOAD);
    e.set_version(0);
    let _ = req;
    e
}

/// Works out the response to one raw query from an unknown client (no
/// zone transfers).
pub fn resolve(snap: &Snapshot, raw: &[u8], transport: Transport) -> Option<Reply> {
    resolve_from(snap, raw, transport, None)
}

/// Works out the response to one raw query from `src`.
pub fn resolve_from(snap: &Snapshot, raw: &[u8], transport: Transport, src: Option<IpAddr>) -> Option<Reply> {
    let meta = header_metadata(raw)?;
    let msg = match Message::from_vec(raw) {
        Ok(m) => m,
        Err(_) => return Some(error(meta, ResponseCode::FormErr, None, None, 512)),
    };
    let (key, signer) = match tsig::check(&snap.xfr.keys, raw, &msg, tsig::now()) {
        tsig::Check::Unsigned => (None, None),
        tsig::Check::Valid { key, signer } => (Some(key), Some(signer)),
        tsig::Check::Failed { error: e, signer } => {
            let key = msg.signature.as_ref().map(|s| s.name.to_string()).unwrap_or_default();
            tracing::info!(src = ?src, key, error = ?e, "TSIG check failed; answering NOTAUTH");
            let mut r = error(meta, ResponseCode::NotAuth, msg.queries.first().cloned(), None, limit_of(&msg, transport));
            r.tsig = Some(signer);
            return Some(r);
        }
    };
    let mut reply = resolve_msg(snap, meta, &msg, transport, src, key.as_ref());
    reply.tsig = signer;
    Some(reply)
}

fn limit_of(msg: &Message, transport: Transport) -> usize {
    match transport {
        Transport::Tcp => u16::MAX as usize,
        Transport::Udp => match &msg.edns {
            Some(e) => e.max_payload().clamp(512, MAX_UDP_PAYLOAD) as usize,
            None => 512,
        },
    }
}

fn resolve_msg(snap: &Snapshot, meta: Metadata, msg: &Message, transport: Transport, src: Option<IpAddr>, key: Option<&Name>) -> Reply {
    let edns = msg.edns.as_ref().map(response_edns);
    let limit = limit_of(msg, transport);
    if msg.queries.len() != 1 {
        return error(meta, ResponseCode::FormErr, msg.queries.first().cloned(), edns, limit);
    }
    let q = msg.queries[0].clone();
    if let Some(e) = &msg.edns
        && e.version() > 0
    {
        return error(meta, ResponseCode::BADVERS, Some(q), edns, limit);
    }
    if meta.op_code != OpCode::Query {
        return error(meta, ResponseCode::NotImp, Some(q), edns, limit);
    }
    // IXFR carries the client's SOA in the authority section (RFC 1995).
    if !msg.answers.is_empty() || (!msg.authorities.is_empty() && q.query_type() != RecordType::IXFR) {
        return error(meta, ResponseCode::FormErr, Some(q), edns, limit);
    }
    let qname = LowerName::new(q.name());
    if q.query_class() != DNSClass::IN || !snap.origin_lower.zone_of(&qname) {
        return error(meta, ResponseCode::Refused, Some(q), edns, limit);
    }
    let qtype = q.query_type();
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return transfer(snap, meta, q, edns, limit, transport, src, key);
    }

    let mut m = meta;
    m.authoritative = true;
    let mut reply = Reply { query: Some(q.clone()), edns, limit, ..Default::default() };

    let Some(node) = snap.nodes.get(&qname) else {
        m.response_code = ResponseCode::NXDomain;
        reply.authority.push(snap.negative_soa.clone());
        reply.metadata = Some(m);
        return reply;
    };
    let is_apex = qname == snap.origin_lower;

    match qtype {
        RecordType::SOA if is_apex => reply.answers.push(snap.soa.clone()),
        RecordType::ANY => {
            // RFC 8482 allows a minimal answer; the zone is small, so give it all.
            if is_apex {
                reply.answers.push(snap.soa.clone());
            }
            for (_, rs) in &node.rrsets {
                reply.answers.extend(rs.iter().cloned());
            }
        }
        t => {
            if let Some(rs) = node.get(t) {
                reply.answers.extend(rs.iter().cloned());
            } else if let Some(c) = node.get(RecordType::CNAME) {
                reply.answers.extend(c.iter().cloned());
            }
        }
    }
    if reply.answers.is_empty() {
        reply.authority.push(snap.negative_soa.clone());
    } else {
        add_additional(snap, &mut reply);
    }
    reply.metadata = Some(m);
    reply
}

/// AXFR/IXFR: only over TCP and only for a listed secondary (with its key).
/// Over UDP, AXFR is a format error (RFC 5936 §4.2) and an allowed IXFR
/// gets the current SOA alone, which tells the client to use TCP (RFC 1995 §2).
#[allow(clippy::too_many_arguments)]
fn transfer(
    snap: &Snapshot,
    meta: Metadata,
    q: Query,
    edns: Option<Edns>,
    limit: usize,
    transport: Transport,
    src: Option<IpAddr>,
    key: Option<&Name>,
) -> Reply {
    let qtype = q.query_type();
    if transport == Transport::Udp && qtype == RecordType::AXFR {
        return error(meta, ResponseCode::FormErr, Some(q), edns, limit);
    }
    if q.name() != &snap.origin {
        return error(meta, ResponseCode::NotAuth, Some(q), edns, limit);
    }
    if !src.is_some_and(|ip| snap.xfr.may_transfer(ip, key)) {
        tracing::info!(src = ?src, key = ?key.map(|k| k.to_string()), %qtype, "zone transfer refused: not a listed secondary (or not with its key)");
        return error(meta, ResponseCode::Refused, Some(q), edns, limit);
    }
    let mut m = meta;
    m.authoritative = true;
    let mut reply = Reply { metadata: Some(m), query: Some(q), edns, limit, ..Default::default() };
    match transport {
        Transport::Tcp => {
            tracing::info!(src = ?src, key = ?key.map(|k| k.to_string()), %qtype, serial = snap.serial, "zone transfer");
            reply.transfer = true;
        }
        Transport::Udp => reply.answers.push(snap.soa.clone()),
    }
    reply
}

/// A/AAAA of in-zone SRV targets and NS names, when the zone has them.
fn add_additional(snap: &Snapshot, reply: &mut Reply) {
    let mut targets = Vec::new();
    for r in &reply.answers {
        match &r.data {
            RData::SRV(s) => targets.push(s.target.clone()),
            RData::NS(n) => targets.push(n.0.clone()),
            RData::MX(mx) => targets.push(mx.exchange.clone()),
            _ => {}
        }
    }
    for t in targets {
        let lt = LowerName::new(&t);
        if !snap.origin_lower.zone_of(&lt) {
            continue;
        }
        if let Some(node) = snap.nodes.get(&lt) {
            for rt in [RecordType::A, RecordType::AAAA] {
                if let Some(rs) = node.get(rt) {
                    for r in rs {
                        if !reply.additional.contains(r) {
                            reply.additional.push(r.clone());
                        }
                    }
                }
            }
        }
    }
}

/// Size of an OPT record without options.
const OPT_LEN: usize = 11;

/// Encodes a reply within its size limit. If the answer or authority section
/// does not fit, the response carries only the question and TC; additional
/// records that do not fit are left out without TC (RFC 2181 §9).
/// A TSIG-signed reply gets its signature appended, within the limit.
pub fn encode(reply: &Reply) -> Vec<u8> {
    let meta = reply.metadata.expect("reply has metadata");
    let tsig_room = reply.tsig.as_ref().map_or(0, |t| t.max_len());
    let room = reply.limit - if reply.edns.is_some() { OPT_LEN } else { 0 } - tsig_room;
    let mut bytes = match try_encode(reply, meta, room, true) {
        Some(b) => b,
        None => {
            let mut m = meta;
            m.truncation = true;
            let r =
                Reply { metadata: Some(m), query: reply.query.clone(), edns: reply.edns.clone(), limit: reply.limit, ..Default::default() };
            try_encode(&r, m, room, false).expect("a header and one question always fit")
        }
    };
    if let Some(t) = &reply.tsig {
        t.clone().append(&mut bytes);
    }
    bytes
}

fn try_encode(reply: &Reply, meta: Metadata, room: usize, with_records: bool) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_max_size(room as u16);
    let place = enc.place::<hickory_proto::op::Header>().ok()?;
    let mut qd = 0u16;
    if let Some(q) = &reply.query {
        q.emit(&mut enc).ok()?;
        qd = 1;
    }
    let (mut an, mut ns, mut ar) = (0u16, 0u16, 0u16);
    if with_records {
        for r in &reply.answers {
            r.emit(&mut enc).ok()?;
            an += 1;
        }
        for r in &reply.authority {
            r.emit(&mut enc).ok()?;
            ns += 1;
        }
        // Additional records are optional: emit_all rolls back the one that
        // does not fit and stops there.
        ar = match enc.emit_all(reply.additional.iter()) {
            Ok(n) => n as u16,
            Err(hickory_proto::ProtoError::NotAllRecordsWritten { count, .. }) => count as u16,
            Err(_) => return None,
        };
    }
    if let Some(e) = &reply.edns {
        enc.set_max_size((room + OPT_LEN) as u16);
        let mut e = e.clone();
        e.set_rcode_high(meta.response_code.high());
        Record::from(&e).emit(&mut enc).ok()?;
        ar += 1;
    }
    let header = hickory_proto::op::Header {
        metadata: meta,
        counts: hickory_proto::op::HeaderCounts { queries: qd, answers: an, authorities: ns, additionals: ar },
    };
    place.replace(&mut enc, header).ok()?;
    Some(buf)
}
