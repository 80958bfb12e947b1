//! Answering queries from a [`Served`] zone snapshot: authoritative-only semantics
//! (AA, REFUSED outside the zone, NXDOMAIN/NODATA with SOA, additional A/AAAA
//! for in-zone targets), EDNS (BADVERS, payload limits) and truncation.
//!
//! [`reply_from`] works out the response to raw query bytes and [`encode`]
//! turns it into bytes, so the UDP path ([`answer`]), the TCP path
//! and tests share one implementation.

pub mod ecs;
pub mod fast;
pub mod notify;
pub mod served;
pub mod server;
pub mod stats;
pub mod tsig;
pub mod xfr;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use std::net::IpAddr;

use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::zone::Node;
use crate::zone::clients::ClientSites;
use ecs::Ecs;
use served::Served;
use stats::{Outcome, Path};

/// UDP payload srvd advertises and never exceeds (DNS flag day 2020).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// Transport the query came in on; decides the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Answers are limited to the client's EDNS payload (at most
    /// [`MAX_UDP_PAYLOAD`]) and truncated (TC) beyond it.
    Udp,
    /// Answers may be up to 65535 bytes; zone transfers are allowed.
    Tcp,
}

/// A response before encoding.
#[derive(Debug, Default)]
pub struct Reply {
    /// Header of the response (id, opcode, rcode, flags); `None` when the
    /// request was too broken to answer.
    pub metadata: Option<Metadata>,
    /// The question, echoed back.
    pub query: Option<Query>,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section: the negative SOA of NXDOMAIN/NODATA answers.
    pub authority: Vec<Record>,
    /// Additional section: A/AAAA of in-zone SRV, NS and MX targets (EDNS OPT
    /// and TSIG are added at encoding).
    pub additional: Vec<Record>,
    /// EDNS of the response (present iff the query had EDNS).
    pub edns: Option<Edns>,
    /// Size limit of the whole message.
    pub limit: usize,
    /// Signs the response when the request carried a TSIG (RFC 8945).
    pub tsig: Option<crate::dns::tsig::ResponseSigner>,
    /// An allowed zone transfer over TCP: the caller sends the zone
    /// ([`crate::dns::xfr::messages`]) with this reply's header and signer.
    pub transfer: bool,
    /// The request's EDNS Client Subnet option, echoed in the OPT with this
    /// scope prefix (RFC 7871 §7.2.1).
    pub ecs: Option<(Ecs, u8)>,
}

/// An encoded answer and how to count it (the transport loops count it in
/// their [`stats::Shard`]).
#[derive(Debug)]
pub struct Answered {
    /// The wire message to send.
    pub bytes: Vec<u8>,
    /// How to count it.
    pub how: HowAnswered,
}

/// Answers one raw query from a client at `src` (which decides zone
/// transfers), fast path first. `None` means: send nothing (not a query,
/// or too broken to say anything about).
pub fn answer(snap: &Served, query: &[u8], transport: Transport, src: Option<IpAddr>) -> Option<Answered> {
    let mut bytes = Vec::new();
    let how = answer_into(snap, query, transport, src, &mut bytes)?;
    Some(Answered { bytes, how })
}

/// How an answer written by [`answer_into`] is counted.
#[derive(Debug, Clone, Copy)]
pub struct HowAnswered {
    /// Fast (pre-encoded) or general path.
    pub path: Path,
    /// The response code class (NOERROR, NODATA, NXDOMAIN, ...).
    pub outcome: Outcome,
    /// TC was set (the answer did not fit).
    pub truncated: bool,
}

/// Like [`answer`], writing the response into `out` (replacing what it
/// held): the UDP hot path, which keeps one buffer per packet slot, so a
/// fast-path answer costs no allocation.
pub fn answer_into(snap: &Served, query: &[u8], transport: Transport, src: Option<IpAddr>, out: &mut Vec<u8>) -> Option<HowAnswered> {
    if snap.fast.answer_into_from(query, transport, src, out).is_some() {
        // Fast answers are NOERROR or NXDOMAIN and never truncated; ANCOUNT 0
        // with NOERROR is NODATA.
        let no_answers = out.get(6..8).is_none_or(|c| c == [0, 0]);
        let rcode = if out.get(3).is_some_and(|b| b & 0x0f == 3) { ResponseCode::NXDomain } else { ResponseCode::NoError };
        return Some(HowAnswered { path: Path::Fast, outcome: Outcome::of(rcode, no_answers), truncated: false });
    }
    let reply = reply_from(snap, query, transport, src)?;
    *out = encode(&reply);
    let rcode = reply.metadata.map_or(ResponseCode::ServFail, |m| m.response_code);
    let truncated = out.get(2).is_some_and(|b| b & 0x02 != 0);
    Some(HowAnswered { path: Path::General, outcome: Outcome::of(rcode, reply.answers.is_empty()), truncated })
}

fn header_metadata(req: &[u8]) -> Option<Metadata> {
    let &[id0, id1, flags0, flags1, ..] = req.get(..HEADER_LEN)? else {
        return None;
    };
    if flags0 & 0x80 != 0 {
        return None; // never answer responses
    }
    let op = OpCode::from_u8((flags0 >> 3) & 0x0f);
    let mut m = Metadata::new(u16::from_be_bytes([id0, id1]), MessageType::Response, op);
    m.recursion_desired = flags0 & 0x01 != 0;
    m.checking_disabled = flags1 & 0x10 != 0;
    Some(m)
}

fn error(mut m: Metadata, rcode: ResponseCode, query: Option<Query>, edns: Option<Edns>, limit: usize) -> Reply {
    m.response_code = rcode;
    Reply { metadata: Some(m), query, edns, limit, ..Default::default() }
}

/// The OPT of a response: srvd's payload size, version 0, and the request's
/// DO bit copied (RFC 3225 §3); no options are echoed.
fn response_edns(req: &Edns) -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(MAX_UDP_PAYLOAD);
    e.set_version(0);
    e.set_dnssec_ok(req.flags().dnssec_ok);
    e
}

/// Works out the response to one raw query from an unknown client (no
/// zone transfers).
pub fn reply(snap: &Served, raw: &[u8], transport: Transport) -> Option<Reply> {
    reply_from(snap, raw, transport, None)
}

/// Works out the response to one raw query from `src`.
pub fn reply_from(snap: &Served, raw: &[u8], transport: Transport, src: Option<IpAddr>) -> Option<Reply> {
    reply_as(snap, raw, transport, src, None)
}

/// Who asks, as far as the answers to the site-less names go
/// (`[[site]] networks`, [`crate::zone::clients`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asker {
    /// The address that picks the site: the ECS subnet of a trusted
    /// resolver, else the source address; `None` when unknown.
    pub(crate) addr: Option<IpAddr>,
    /// `addr` is the ECS subnet: the answer's ECS scope then says how far it reaches.
    pub(crate) from_ecs: bool,
    /// Pre-encoding: the answer of this site (`None`: the pool), whoever asks.
    pub(crate) forced: Option<Option<usize>>,
}

impl Asker {
    /// The asker of a query from `src` carrying `ecs`.
    pub(crate) fn new(clients: &ClientSites, src: Option<IpAddr>, ecs: Option<&Ecs>) -> Asker {
        match (src, ecs) {
            // SOURCE PREFIX-LENGTH 0: the client asked that its address not be used.
            (Some(s), Some(e)) if e.source > 0 && clients.trusts(s) => Asker { addr: Some(e.addr), from_ecs: true, forced: None },
            _ => Asker { addr: src, from_ecs: false, forced: None },
        }
    }

    /// (the site whose answers this asker gets, `None`: the pool; the ECS scope).
    pub(crate) fn site(&self, clients: &ClientSites) -> (Option<usize>, u8) {
        if let Some(f) = self.forced {
            return (f, 0);
        }
        match self.addr {
            Some(a) => {
                let c = clients.choose(a);
                (c.site, if self.from_ecs { c.scope } else { 0 })
            }
            None => (clients.default_site(), 0),
        }
    }
}

/// For a site-less SRV name answered per client: the chosen site's node
/// (`None`: the pool's own), the owner name to answer with, the ECS scope.
fn per_client<'s>(snap: &'s Served, qname: &LowerName, asker: &Asker) -> Option<(Option<&'s Node>, &'s Name, u8)> {
    let c = &*snap.clients;
    if !c.enabled() {
        return None;
    }
    let (role, pool) = c.pool_role(qname)?;
    let (site, scope) = asker.site(c);
    let node = site.and_then(|i| c.site_name(i, role)).and_then(|n| snap.nodes.get(n)).map(|n| &**n);
    Some((node, pool, scope))
}

/// Like [`reply_from`]; `forced` (pre-encoding) answers the site-less names
/// with one site's records (`Some(None)`: the pool) whoever asks.
pub(crate) fn reply_as(
    snap: &Served,
    raw: &[u8],
    transport: Transport,
    src: Option<IpAddr>,
    forced: Option<Option<usize>>,
) -> Option<Reply> {
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
            // The OPT stays when the request had one (RFC 6891 §7).
            let edns = msg.edns.as_ref().map(response_edns);
            let mut r = error(meta, ResponseCode::NotAuth, msg.queries.first().cloned(), edns, limit_of(&msg, transport));
            r.tsig = Some(signer);
            return Some(r);
        }
    };
    let ecs = Ecs::in_query(raw);
    let mut asker = Asker::new(&snap.clients, src, ecs.as_ref().ok().and_then(Option::as_ref));
    asker.forced = forced;
    let mut reply = reply_msg(snap, meta, &msg, transport, src, key.as_ref(), ecs, &asker);
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

#[allow(clippy::too_many_arguments)]
fn reply_msg(
    snap: &Served,
    meta: Metadata,
    msg: &Message,
    transport: Transport,
    src: Option<IpAddr>,
    key: Option<&Name>,
    ecs: Result<Option<Ecs>, ecs::EcsError>,
    asker: &Asker,
) -> Reply {
    let edns = msg.edns.as_ref().map(response_edns);
    let limit = limit_of(msg, transport);
    let q = match msg.queries.as_slice() {
        [q] => q.clone(),
        qs => return error(meta, ResponseCode::FormErr, qs.first().cloned(), edns, limit),
    };
    // RFC 7871 §7.1.2: a malformed ECS option is a format error.
    let ecs = match ecs {
        Ok(e) => e,
        Err(e) => {
            tracing::debug!(src = ?src, error = %e, "malformed EDNS Client Subnet option; answering FORMERR");
            return error(meta, ResponseCode::FormErr, Some(q), edns, limit);
        }
    };
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
        return transfer(snap, meta, q, edns, limit, transport, src, key, ixfr_client_serial(msg, snap));
    }

    let mut m = meta;
    m.authoritative = true;
    let mut reply = Reply { query: Some(q.clone()), edns, limit, ..Default::default() };
    // The answer does not depend on the client (scope 0) unless chosen by its network below.
    reply.ecs = ecs.filter(|_| reply.edns.is_some()).map(|e| (e, 0));

    let Some(node) = snap.nodes.get(&qname) else {
        m.response_code = ResponseCode::NXDomain;
        reply.authority.push(snap.negative_soa.clone());
        reply.metadata = Some(m);
        return reply;
    };
    let mut node = &**node;
    // A site-less name answered per client: the chosen site's records under the asked name.
    let mut rename = None;
    if let Some((site_node, pool, scope)) = per_client(snap, &qname, asker) {
        if let Some(n) = site_node {
            node = n;
            rename = Some(pool);
        }
        if let Some((_, s)) = reply.ecs.as_mut() {
            *s = scope;
        }
    }
    let is_apex = qname == snap.origin_lower;

    match qtype {
        RecordType::SOA if is_apex => reply.answers.push(snap.soa.clone()),
        RecordType::ANY if transport == Transport::Udp => {
            // RFC 8482 §4.1: one RRset (the SOA at the apex, else the name's
            // first), so that a spoofed ANY is not worth amplifying.
            if is_apex {
                reply.answers.push(snap.soa.clone());
            } else if let Some((_, rs)) = node.rrsets.first() {
                reply.answers.extend(rs.iter().cloned());
            }
        }
        RecordType::ANY => {
            // Over TCP the source address is real: the whole node (SRV
            // records within policy.max_srv_records, see below).
            if is_apex {
                reply.answers.push(snap.soa.clone());
            }
            for (t, rs) in &node.rrsets {
                if *t == RecordType::SRV {
                    select_srv(rs, snap.config.policy.max_srv_records, meta.id, &mut reply.answers);
                } else {
                    reply.answers.extend(rs.iter().cloned());
                }
            }
        }
        RecordType::SRV if node.get(RecordType::SRV).is_some() => {
            if let Some(rs) = node.get(RecordType::SRV) {
                select_srv(rs, snap.config.policy.max_srv_records, meta.id, &mut reply.answers);
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
    if let Some(owner) = rename {
        for r in reply.answers.iter_mut() {
            r.name = owner.clone();
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

/// At most `max` of the SRV records `rs` (sorted by priority, best first):
/// every priority group that fits whole, then a window of the first group
/// that does not, starting at the query's ID (modulo the group's size,
/// wrapping), so that answers to different queries spread over all masters
/// of that group; groups of lower priority are left out. The same query
/// (ID included) always gets the same records, on every path.
pub fn select_srv(rs: &[Record], max: usize, id: u16, out: &mut Vec<Record>) {
    if rs.len() <= max {
        out.extend(rs.iter().cloned());
        return;
    }
    let prio = |r: &Record| match &r.data {
        RData::SRV(s) => s.priority,
        _ => u16::MAX,
    };
    let mut start = 0usize;
    while let Some(first) = rs.get(start) {
        let p = prio(first);
        let len = rs.get(start..).map_or(0, |g| g.iter().take_while(|r| prio(r) == p).count());
        let room = max.saturating_sub(start);
        if len <= room {
            out.extend(rs.iter().skip(start).take(len).cloned());
            start += len;
            continue;
        }
        if let Some(group) = rs.get(start..start + len) {
            let offset = usize::from(id) % len;
            out.extend(group.iter().cycle().skip(offset).take(room).cloned());
        }
        return;
    }
}

/// The serial of the SOA an IXFR request carries in its authority section
/// (RFC 1995 §3), when it is the zone's SOA.
fn ixfr_client_serial(msg: &Message, snap: &Served) -> Option<u32> {
    msg.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) if LowerName::new(&r.name) == snap.origin_lower => Some(soa.serial),
        _ => None,
    })
}

/// Is serial `a` equal to or newer than `b` (RFC 1982 serial arithmetic)?
/// The one undefined case (exactly 2^31 apart) counts as not newer.
pub fn serial_at_least(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d < 1 << 31
}

/// AXFR/IXFR: only over TCP and only for a listed secondary (with its key).
/// Over UDP, AXFR is a format error (RFC 5936 §4.2) and an allowed IXFR
/// gets the current SOA alone, which tells the client to use TCP (RFC 1995 §2).
/// An IXFR from a secondary already at the current serial (or newer) gets
/// the current SOA alone over TCP too (RFC 1995 §2, §4).
#[allow(clippy::too_many_arguments)]
fn transfer(
    snap: &Served,
    meta: Metadata,
    q: Query,
    edns: Option<Edns>,
    limit: usize,
    transport: Transport,
    src: Option<IpAddr>,
    key: Option<&Name>,
    client_serial: Option<u32>,
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
    let up_to_date = qtype == RecordType::IXFR && client_serial.is_some_and(|s| serial_at_least(s, snap.serial));
    match transport {
        Transport::Tcp if !up_to_date => {
            tracing::info!(src = ?src, key = ?key.map(|k| k.to_string()), %qtype, serial = snap.serial, "zone transfer");
            reply.transfer = true;
        }
        Transport::Tcp | Transport::Udp => reply.answers.push(snap.soa.clone()),
    }
    reply
}

/// A/AAAA of in-zone SRV targets and NS names, when the zone has them.
fn add_additional(snap: &Served, reply: &mut Reply) {
    // Each target once, in order of appearance. The records of distinct
    // target nodes are distinct (different owners) and a node holds no
    // duplicates, so nothing needs comparing record by record (a
    // `contains` per record once made big answers quadratic).
    let mut seen: std::collections::HashSet<LowerName> = std::collections::HashSet::new();
    for r in &reply.answers {
        let t = match &r.data {
            RData::SRV(s) => &s.target,
            RData::NS(n) => &n.0,
            RData::MX(mx) => &mx.exchange,
            _ => continue,
        };
        let lt = LowerName::new(t);
        if !snap.origin_lower.zone_of(&lt) {
            continue;
        }
        let Some(node) = snap.nodes.get(&lt) else { continue };
        if !seen.insert(lt) {
            continue;
        }
        for rt in [RecordType::A, RecordType::AAAA] {
            if let Some(rs) = node.get(rt) {
                reply.additional.extend(rs.iter().cloned());
            }
        }
    }
}

/// Size of a DNS header.
const HEADER_LEN: usize = 12;

/// Size of an OPT record without options.
const OPT_LEN: usize = 11;

/// What goes into one encoding attempt of [`encode_with`].
#[derive(Clone, Copy)]
struct Dress {
    records: bool,
    question: bool,
    opt: bool,
    tsig: bool,
}

/// Encodes a reply within its size limit. If the answer or authority section
/// does not fit, the response carries only the question and TC; additional
/// records that do not fit are left out without TC (RFC 2181 §9).
/// A TSIG-signed reply gets its signature appended, within the limit.
///
/// Never panics and never exceeds `reply.limit` (taken as at least 12 and at
/// most 65535): when even the question, OPT and TSIG do not fit together,
/// the TSIG is dropped first, then the OPT, then the question, down to a
/// bare header with TC. See docs/dns.md ("Sizes").
pub fn encode(reply: &Reply) -> Vec<u8> {
    let mut signer = reply.tsig.clone();
    encode_with(reply, signer.as_mut())
}

/// Like [`encode`], signing with `signer` instead of `reply.tsig`: the
/// messages of a transfer share one signer (chained MACs, RFC 8945 §5.3.1).
pub fn encode_with(reply: &Reply, mut signer: Option<&mut tsig::ResponseSigner>) -> Vec<u8> {
    let meta = reply.metadata.unwrap_or_else(|| {
        let mut m = Metadata::new(0, MessageType::Response, OpCode::Query);
        m.response_code = ResponseCode::ServFail;
        m
    });
    let limit = reply.limit.clamp(HEADER_LEN, u16::MAX as usize);
    let has_opt = reply.edns.is_some();
    let opt_len = OPT_LEN + reply.ecs.as_ref().map_or(0, |(e, _)| e.wire_len());
    let tsig_len = signer.as_ref().map_or(0, |s| s.max_len());
    let mut tc = meta;
    tc.truncation = true;
    let attempts = [
        (meta, Dress { records: true, question: true, opt: has_opt, tsig: true }),
        (tc, Dress { records: false, question: true, opt: has_opt, tsig: true }),
        (tc, Dress { records: false, question: true, opt: has_opt, tsig: false }),
        (tc, Dress { records: false, question: true, opt: false, tsig: false }),
        (tc, Dress { records: false, question: false, opt: false, tsig: false }),
    ];
    for (m, dress) in attempts {
        let sign = dress.tsig && signer.is_some();
        let extra = if dress.opt { opt_len } else { 0 } + if sign { tsig_len } else { 0 };
        let Some(room) = limit.checked_sub(extra) else { continue };
        let Some(mut bytes) = try_encode(reply, m, room, dress) else { continue };
        if sign && let Some(s) = signer.as_deref_mut() {
            s.append(&mut bytes);
        }
        if bytes.len() <= limit {
            return bytes;
        }
    }
    // A bare header always fits.
    let mut m = tc;
    if m.response_code.high() != 0 {
        m.response_code = ResponseCode::ServFail;
    }
    let mut bytes = Vec::with_capacity(HEADER_LEN);
    let header = hickory_proto::op::Header { metadata: m, counts: Default::default() };
    if header.emit(&mut BinEncoder::new(&mut bytes)).is_err() || bytes.len() != HEADER_LEN {
        bytes.clear();
        bytes.extend_from_slice(&m.id.to_be_bytes());
        bytes.extend_from_slice(&[0x82, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]); // QR, TC, SERVFAIL
    }
    bytes
}

fn try_encode(reply: &Reply, meta: Metadata, room: usize, dress: Dress) -> Option<Vec<u8>> {
    let mut meta = meta;
    let edns = reply.edns.as_ref().filter(|_| dress.opt);
    if edns.is_none() && meta.response_code.high() != 0 {
        // An extended RCODE needs the OPT; without it, say SERVFAIL.
        meta.response_code = ResponseCode::ServFail;
    }
    let mut buf = Vec::with_capacity(512);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_max_size(u16::try_from(room).ok()?);
    let place = enc.place::<hickory_proto::op::Header>().ok()?;
    let mut qd = 0u16;
    if let Some(q) = reply.query.as_ref().filter(|_| dress.question) {
        q.emit(&mut enc).ok()?;
        qd = 1;
    }
    let (mut an, mut ns, mut ar) = (0u16, 0u16, 0u16);
    if dress.records {
        for r in &reply.answers {
            r.emit(&mut enc).ok()?;
            an = an.checked_add(1)?;
        }
        for r in &reply.authority {
            r.emit(&mut enc).ok()?;
            ns = ns.checked_add(1)?;
        }
        // Additional records are optional: emit_all rolls back the one that
        // does not fit and stops there.
        let n = match enc.emit_all(reply.additional.iter()) {
            Ok(n) => n,
            Err(hickory_proto::ProtoError::NotAllRecordsWritten { count, .. }) => count,
            Err(_) => return None,
        };
        ar = u16::try_from(n).ok()?;
    }
    if let Some(e) = edns {
        let ecs = reply.ecs.as_ref();
        let opt_len = OPT_LEN + ecs.map_or(0, |(e, _)| e.wire_len());
        enc.set_max_size(u16::try_from(room.checked_add(opt_len)?).ok()?);
        let mut e = e.clone();
        e.set_rcode_high(meta.response_code.high());
        if let Some((ecs, scope)) = ecs {
            let subnet = hickory_proto::rr::rdata::opt::ClientSubnet::new(ecs.addr, ecs.source, *scope);
            e.options_mut().insert(hickory_proto::rr::rdata::opt::EdnsOption::Subnet(subnet));
        }
        Record::from(&e).emit(&mut enc).ok()?;
        ar = ar.checked_add(1)?;
    }
    let header = hickory_proto::op::Header {
        metadata: meta,
        counts: hickory_proto::op::HeaderCounts { queries: qd, answers: an, authorities: ns, additionals: ar },
    };
    place.replace(&mut enc, header).ok()?;
    Some(buf)
}

/// The messages of an allowed zone transfer (`reply.transfer`), encoded and
/// signed in order with the reply's signer: SOA, the zone, SOA, in messages
/// of about [`crate::dns::xfr::MESSAGE_BUDGET`] bytes (RFC 5936 §2.2).
pub fn encode_transfer(snap: &Served, reply: &Reply) -> Vec<Vec<u8>> {
    let mut signer = reply.tsig.clone();
    crate::dns::xfr::messages(snap, crate::dns::xfr::MESSAGE_BUDGET)
        .into_iter()
        .map(|answers| {
            let msg = Reply {
                metadata: reply.metadata,
                query: reply.query.clone(),
                answers,
                edns: reply.edns.clone(),
                limit: u16::MAX as usize,
                ..Default::default()
            };
            encode_with(&msg, signer.as_mut())
        })
        .collect()
}

#[doc(hidden)]
pub mod fuzzing;
