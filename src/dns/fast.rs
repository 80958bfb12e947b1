//! The fast path for the common query: one question, class IN, optional
//! plain EDNS0, name present in the zone. Responses are pre-encoded per
//! (name, type) when a snapshot is built — by the general code in `dns`, so
//! both paths give the same answer — and at query time only the ID, the RD/CD
//! bits, the question (client's case and type) and an OPT record (with the
//! request's DO bit) are patched in. A missing name inside the zone gets
//! NXDOMAIN from one template too: the question as sent and the negative
//! SOA, whose owner is a compression pointer to the origin in the question
//! (the same message as the general path's, compressed differently).
//!
//! Anything else (names outside the zone, ANY, transfers, odd flags, EDNS
//! options we would have to echo, a response that would need truncation)
//! returns `None` and goes through [`crate::dns::reply`].

use std::collections::HashMap;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

use std::net::IpAddr;

use super::ecs::Ecs;
use super::served::Served;
use crate::dns::{self, Asker, MAX_UDP_PAYLOAD, Transport};
use crate::zone::clients::ClientSites;

/// A pre-encoded response: header, lowercase question, sections; no OPT.
#[derive(Debug, Clone)]
struct Template {
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct FastNode {
    by_type: Vec<(u16, Template)>,
    /// NODATA (the negative SOA in authority, like NXDOMAIN's) for any type
    /// the name does not have; false for a CNAME.
    nodata: bool,
    /// Types the name has that are left to the general path.
    general: Vec<u16>,
    /// For a site-less name answered per client (`[[site]] networks`): the
    /// answers of each site (config order) under this name; the fields
    /// above then hold the pool's, for clients no network and no default
    /// site claims. Empty for every other name.
    sites: Vec<FastNode>,
}

/// Pre-encoded answers of one snapshot, keyed by lowercase wire-format name.
/// Nothing in `names` depends on the serial (the apex SOA and the negative
/// answers are kept apart), so a snapshot with the same records under a
/// new serial shares them with the one before.
#[derive(Debug, Clone, Default)]
pub struct FastZone {
    names: Arc<HashMap<Vec<u8>, FastNode>>,
    /// Which site's answers a client gets (the site-less names' `sites`).
    clients: Option<Arc<ClientSites>>,
    /// The apex SOA query's answer.
    soa: Option<Template>,
    nx: Option<NxTemplate>,
}

/// The NXDOMAIN answer for names in the zone that do not exist: the
/// negative SOA, whose owner (the origin) is a compression pointer into the
/// question, so one template serves every missing name.
#[derive(Debug, Clone)]
struct NxTemplate {
    /// The origin, lowercase wire format.
    origin: Vec<u8>,
    /// Header flags (bytes 2-3) of the response, RD/CD clear, RCODE 0 (add 3 for NXDOMAIN).
    flags: [u8; 2],
    /// The SOA record after its owner name: type, class, TTL, RDLENGTH,
    /// RDATA (names uncompressed).
    soa_tail: Vec<u8>,
}

/// Wire format of `name` as it is spelled (no lowercasing).
fn wire_name_as_is(name: &Name, out: &mut Vec<u8>) {
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
}

impl NxTemplate {
    fn build(snap: &Served) -> Option<NxTemplate> {
        let soa = &snap.negative_soa;
        let hickory_proto::rr::RData::SOA(rd) = &soa.data else { return None };
        let mut rdata = Vec::with_capacity(64);
        wire_name_as_is(&rd.mname, &mut rdata);
        wire_name_as_is(&rd.rname, &mut rdata);
        for v in [rd.serial, rd.refresh as u32, rd.retry as u32, rd.expire as u32, rd.minimum] {
            rdata.extend_from_slice(&v.to_be_bytes());
        }
        let mut soa_tail = Vec::with_capacity(10 + rdata.len());
        soa_tail.extend_from_slice(&6u16.to_be_bytes());
        soa_tail.extend_from_slice(&1u16.to_be_bytes());
        soa_tail.extend_from_slice(&soa.ttl.to_be_bytes());
        soa_tail.extend_from_slice(&u16::try_from(rdata.len()).ok()?.to_be_bytes());
        soa_tail.extend_from_slice(&rdata);
        // QR, AA.
        Some(NxTemplate { origin: wire_name(&snap.origin), flags: [0x84, 0x00], soa_tail })
    }
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

/// The pre-encoded answer to (`name`, `t`); `forced` answers a site-less
/// name with one site's records (`Some(None)`: the pool's).
fn template(snap: &Served, name: &Name, t: RecordType, forced: Option<Option<usize>>) -> Option<Template> {
    let mut m = Message::new(0, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(name.clone(), t));
    let q = m.to_vec().ok()?;
    let reply = dns::reply_as(snap, &q, Transport::Tcp, None, forced)?;
    let bytes = dns::encode(&reply);
    // Only NOERROR answers are worth keeping (NODATA included).
    if bytes.len() < 12 || bytes.get(3).is_none_or(|b| b & 0x0f != 0) {
        return None;
    }
    Some(Template { bytes })
}

/// The templates of `name` answered from `node`'s records (`forced`: see [`template`]).
fn fast_node(snap: &Served, name: &Name, node: &crate::zone::Node, forced: Option<Option<usize>>) -> FastNode {
    let mut f = FastNode::default();
    for (t, rs) in &node.rrsets {
        let t = *t;
        if t == RecordType::CNAME {
            // A CNAME answers every type; keep it on the general path.
            continue;
        }
        if t == RecordType::SRV && rs.len() > snap.config.policy.max_srv_records {
            // Answers take a window chosen per query (dns::select_srv).
            f.general.push(u16::from(t));
            continue;
        }
        if let Some(tpl) = template(snap, name, t, forced) {
            f.by_type.push((u16::from(t), tpl));
        }
    }
    f.nodata = node.get(RecordType::CNAME).is_none();
    f
}

/// A site-less name answered per client: the pool's templates and one set
/// per site, each made from that site's node for the role (shared with
/// `reuse`, the zone before, where that node did not change).
fn per_client_node(
    snap: &Served,
    reuse: Option<&Served>,
    name: &Name,
    lname: &hickory_proto::rr::LowerName,
    node: &Arc<crate::zone::Node>,
    role: crate::input::registry::Role,
) -> FastNode {
    let c = &snap.clients;
    let before = reuse.and_then(|p| p.fast.names.get(&wire_name(name)).filter(|f| f.sites.len() == c.sites()).map(|f| (p, f)));
    let same = |n: &hickory_proto::rr::LowerName| {
        before.is_some_and(|(p, _)| match (p.zone.nodes.get(n), snap.zone.nodes.get(n)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        })
    };
    let mut f = match before {
        Some((_, b)) if same(lname) => FastNode { sites: Vec::new(), ..b.clone() },
        _ => fast_node(snap, name, node, Some(None)),
    };
    f.sites = (0..c.sites())
        .map(|i| {
            let site_name = c.site_name(i, role);
            match (before, site_name) {
                (Some((_, b)), Some(n)) if same(n) => b.sites.get(i).cloned().unwrap_or_default(),
                (_, Some(n)) => match snap.nodes.get(n) {
                    Some(site_node) => fast_node(snap, name, site_node, Some(Some(i))),
                    None => FastNode::default(),
                },
                (_, None) => FastNode::default(),
            }
        })
        .collect();
    f
}

/// Whether `snap` has the names of `prev` and differs from it only in
/// nodes that hold nothing but SRV and TXT records (a health change): no
/// other name's answer includes those (additional records are addresses),
/// so every other template stays valid.
fn only_srv_names_changed(prev: &Served, snap: &Served) -> bool {
    let srv_txt = |n: &crate::zone::Node| n.rrsets.iter().all(|(t, _)| matches!(*t, RecordType::SRV | RecordType::TXT));
    prev.zone.nodes.len() == snap.zone.nodes.len()
        && snap.zone.nodes.iter().all(|(k, n)| match prev.zone.nodes.get(k) {
            Some(o) => Arc::ptr_eq(o, n) || (srv_txt(o) && srv_txt(n)),
            None => false,
        })
}

impl FastZone {
    /// Pre-encodes every (name, type) of the snapshot. With `prev`, the
    /// zone served before, whose records are the same (`nodes` shared),
    /// only what holds the serial is made again.
    pub fn build(snap: &Served, prev: Option<&Served>) -> FastZone {
        let soa = template(snap, &snap.origin, RecordType::SOA, None);
        let nx = NxTemplate::build(snap);
        let clients = snap.clients.enabled().then(|| snap.clients.clone());
        if let Some(p) = prev
            && Arc::ptr_eq(&p.zone.nodes, &snap.zone.nodes)
            && Arc::ptr_eq(&p.zone.config, &snap.zone.config)
        {
            return FastZone { names: p.fast.names.clone(), clients, soa, nx };
        }
        let reuse = prev.filter(|p| Arc::ptr_eq(&p.zone.config, &snap.zone.config) && only_srv_names_changed(p, snap));
        let mut names = HashMap::with_capacity(snap.nodes.len());
        for (lname, node) in snap.nodes.iter() {
            let name: Name = lname.clone().into();
            if let Some((role, _)) = clients.as_ref().and_then(|c| c.pool_role(lname)) {
                let f = per_client_node(snap, reuse, &name, lname, node, role);
                names.insert(wire_name(&name), f);
                continue;
            }
            // An unchanged node answers as before: its template is shared.
            if let Some(p) = reuse
                && p.zone.nodes.get(lname).is_some_and(|o| Arc::ptr_eq(o, node))
            {
                let wire = wire_name(&name);
                if let Some(f) = p.fast.names.get(&wire) {
                    names.insert(wire, f.clone());
                    continue;
                }
            }
            names.insert(wire_name(&name), fast_node(snap, &name, node, None));
        }
        FastZone { names: Arc::new(names), clients, soa, nx }
    }

    /// Answers `q` from a template, or `None` for the general path.
    /// Every access to `q` is checked: a packet can make this return
    /// `None`, never panic.
    pub fn answer(&self, q: &[u8], transport: Transport) -> Option<Vec<u8>> {
        self.answer_from(q, transport, None)
    }

    /// Like [`FastZone::answer`] for a query from `src` (which picks the
    /// site of the site-less names, with `[[site]] networks`).
    pub fn answer_from(&self, q: &[u8], transport: Transport, src: Option<IpAddr>) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.answer_into_from(q, transport, src, &mut out)?;
        Some(out)
    }

    /// Like [`FastZone::answer`], writing the response into `out` (cleared
    /// first), so that a UDP worker reuses one buffer per packet slot
    /// instead of allocating a reply per packet. On `None`, `out` holds
    /// nothing meaningful.
    pub fn answer_into(&self, q: &[u8], transport: Transport, out: &mut Vec<u8>) -> Option<()> {
        self.answer_into_from(q, transport, None, out)
    }

    /// Like [`FastZone::answer_into`] for a query from `src`.
    pub fn answer_into_from(&self, q: &[u8], transport: Transport, src: Option<IpAddr>, out: &mut Vec<u8>) -> Option<()> {
        let &[id0, id1, flags0, flags1, qd0, qd1, an0, an1, ns0, ns1, ar0, ar1] = q.get(..12)? else {
            return None;
        };
        // QR=0, opcode QUERY, no TC/AA/Z oddities we would have to think about.
        if flags0 & 0xfe != 0 || flags1 & 0xc0 != 0 {
            return None;
        }
        let counts = [u16::from_be_bytes([qd0, qd1]), u16::from_be_bytes([an0, an1]), u16::from_be_bytes([ns0, ns1])];
        let arcount = u16::from_be_bytes([ar0, ar1]);
        if counts != [1, 0, 0] || arcount > 1 {
            return None;
        }
        // The question name: plain labels only, lowercased into a stack buffer.
        let mut lower = [0u8; 255];
        let mut i = 12usize;
        let mut n = 0usize;
        loop {
            let len = usize::from(*q.get(i)?);
            if len > 63 || n + len + 1 > lower.len() {
                return None;
            }
            *lower.get_mut(n)? = len as u8;
            n += 1;
            if len == 0 {
                i += 1;
                break;
            }
            let label = q.get(i + 1..i + 1 + len)?;
            for (dst, b) in lower.get_mut(n..n + len)?.iter_mut().zip(label) {
                *dst = b.to_ascii_lowercase();
            }
            n += len;
            i += 1 + len;
        }
        let qname_end = i;
        let &[t0, t1, c0, c1] = q.get(i..i + 4)? else {
            return None;
        };
        let qtype = u16::from_be_bytes([t0, t1]);
        let qclass = u16::from_be_bytes([c0, c1]);
        if qclass != 1 || matches!(qtype, 255 | 252 | 251 | 0 | PROBE_TYPE) {
            return None;
        }
        i += 4;
        let mut ecs = None;
        let edns = if arcount == 1 {
            // OPT: root owner, type 41, class = payload, ttl = ext-rcode/version/flags,
            // no options or one well-formed ECS option (a malformed one gets
            // FORMERR from the general path).
            let &[owner, ty0, ty1, p0, p1, ext_rcode, version, fl0, _fl1, rdl0, rdl1] = q.get(i..i + 11)? else {
                return None;
            };
            if owner != 0 || [ty0, ty1] != [0, 41] || ext_rcode != 0 || version != 0 {
                return None;
            }
            i += 11;
            let rdlen = usize::from(u16::from_be_bytes([rdl0, rdl1]));
            if rdlen > 0 {
                let &[c0, c1, l0, l1, ref data @ ..] = q.get(i..i.checked_add(rdlen)?)? else {
                    return None;
                };
                if u16::from_be_bytes([c0, c1]) != super::ecs::CODE || usize::from(u16::from_be_bytes([l0, l1])) != data.len() {
                    return None;
                }
                ecs = Some(Ecs::parse(data).ok()?);
                i += rdlen;
            }
            // The DO bit is copied into the response (RFC 3225), like the
            // general path does; other flags are ignored (no DNSSEC here).
            Some((u16::from_be_bytes([p0, p1]), fl0 & 0x80))
        } else {
            None
        };
        if i != q.len() {
            return None;
        }
        let qname = lower.get(..n)?;
        // The answer's ECS: echoed with scope 0 unless the client's network chose the answer.
        let mut echo = ecs.map(|e| (e, 0u8));
        let node = match self.names.get(qname) {
            Some(node) if !node.sites.is_empty() => match &self.clients {
                Some(c) => {
                    let (site, scope) = Asker::new(c, src, ecs.as_ref()).site(c);
                    if let Some((_, s)) = echo.as_mut() {
                        *s = scope;
                    }
                    Some(site.and_then(|i| node.sites.get(i)).unwrap_or(node))
                }
                None => Some(node),
            },
            other => other,
        };
        let tpl = match node {
            Some(node) if node.general.contains(&qtype) => return None,
            Some(_) if qtype == u16::from(RecordType::SOA) && self.nx.as_ref().is_some_and(|nx| nx.origin == qname) => self.soa.as_ref()?,
            Some(node) => match node.by_type.iter().find(|(t, _)| *t == qtype) {
                Some((_, t)) => t,
                None if node.nodata => return self.negative(q, qname, qname_end, flags0, flags1 & 0x10, (edns, echo), transport, out),
                None => return None,
            },
            None => return self.negative(q, qname, qname_end, flags0, (flags1 & 0x10) | 0x03, (edns, echo), transport, out),
        };
        let limit = size_limit(transport, edns);
        let opt_len = opt_len(edns, echo);
        if tpl.bytes.len() + opt_len > limit {
            return None;
        }
        out.clear();
        out.reserve(tpl.bytes.len() + opt_len);
        out.extend_from_slice(&tpl.bytes);
        let hdr: &mut [u8; 12] = out.get_mut(..12)?.try_into().ok()?;
        hdr[0] = id0;
        hdr[1] = id1;
        hdr[2] = (hdr[2] & !0x01) | (flags0 & 0x01); // RD
        hdr[3] = (hdr[3] & !0x10) | (flags1 & 0x10); // CD
        // The name as sent, and the qtype (the template holds the same name
        // in lowercase, so the same length).
        out.get_mut(12..qname_end + 2)?.copy_from_slice(q.get(12..qname_end + 2)?);
        append_opt(out, edns, echo)
    }

    /// NXDOMAIN (`flags1` with RCODE 3) or NODATA (RCODE 0) for `qname`
    /// (lowercase wire format, `qname_end` its end in `q`) when it lies in
    /// the zone: header, the question as sent, the negative SOA with its
    /// owner pointing at the origin's labels in the question. `None` for
    /// names outside the zone (REFUSED, general path).
    #[allow(clippy::too_many_arguments)]
    fn negative(
        &self,
        q: &[u8],
        qname: &[u8],
        qname_end: usize,
        flags0: u8,
        flags1: u8,
        (edns, echo): (Edns0, Echo),
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Option<()> {
        let nx = self.nx.as_ref()?;
        // The offset of the origin's labels in the name, on a label boundary.
        let mut pos = 0usize;
        let origin_at = loop {
            let rest = qname.get(pos..)?;
            if rest.len() == nx.origin.len() {
                if rest == nx.origin.as_slice() {
                    break pos;
                }
                return None;
            }
            if rest.len() < nx.origin.len() {
                return None;
            }
            pos = pos.checked_add(usize::from(*rest.first()?) + 1)?;
        };
        let pointer = u16::try_from(12usize.checked_add(origin_at)?).ok().filter(|p| *p < 0x4000)? | 0xc000;
        let opt_len = opt_len(edns, echo);
        let len = qname_end + 4 + 2 + nx.soa_tail.len() + opt_len;
        if len > size_limit(transport, edns) {
            return None;
        }
        out.clear();
        out.reserve(len);
        out.extend_from_slice(q.get(..2)?);
        out.push(nx.flags[0] | (flags0 & 0x01)); // RD
        out.push(nx.flags[1] | flags1); // CD, RCODE
        out.extend_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0]);
        out.extend_from_slice(q.get(12..qname_end + 4)?);
        out.extend_from_slice(&pointer.to_be_bytes());
        out.extend_from_slice(&nx.soa_tail);
        append_opt(out, edns, echo)
    }
}

/// The response size limit for a transport and the request's EDNS.
fn size_limit(transport: Transport, edns: Option<(u16, u8)>) -> usize {
    match (transport, edns) {
        (Transport::Tcp, _) => u16::MAX as usize,
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some((p, _))) => p.clamp(512, MAX_UDP_PAYLOAD) as usize,
    }
}

/// The request's EDNS: (payload size, DO bit).
type Edns0 = Option<(u16, u8)>;
/// The ECS option to echo and its scope.
type Echo = Option<(Ecs, u8)>;

/// The size of the response's OPT (with its ECS option, if any).
fn opt_len(edns: Option<(u16, u8)>, echo: Option<(Ecs, u8)>) -> usize {
    match edns {
        Some(_) => 11 + echo.map_or(0, |(e, _)| e.wire_len()),
        None => 0,
    }
}

/// Appends srvd's OPT (with the request's DO bit, and the ECS option with
/// its scope when the request had one) when the request had EDNS.
fn append_opt(out: &mut Vec<u8>, edns: Option<(u16, u8)>, echo: Option<(Ecs, u8)>) -> Option<()> {
    if let Some((_, dnssec_ok)) = edns {
        let ar = u16::from_be_bytes(out.get(10..12)?.try_into().ok()?).checked_add(1)?;
        out.get_mut(10..12)?.copy_from_slice(&ar.to_be_bytes());
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
        let rdlen = u16::try_from(echo.map_or(0, |(e, _)| e.wire_len())).ok()?;
        out.extend_from_slice(&[0, 0, dnssec_ok, 0]);
        out.extend_from_slice(&rdlen.to_be_bytes());
        if let Some((e, scope)) = echo {
            e.write(scope, out);
        }
    }
    Some(())
}
