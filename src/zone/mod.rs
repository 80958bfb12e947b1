//! The immutable zone snapshot the DNS side answers from. Built from the
//! config, the static zone file records and the policy's answers; swapped in
//! whole. Lookups are one hash probe on the lowercased query name.

pub mod clients;
pub mod policy;
pub mod publish;
pub mod retire;
pub mod serial;
pub mod weights;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::input::config::Config;
use crate::input::registry::{Registry, Role};
use crate::input::zonefile::StaticRecord;
use crate::zone::policy::{Answers, RoleAnswer};

/// The records of one owner name. A node with no rrsets is an empty non-terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// Each record type present at this name with its records (no duplicates),
    /// in the order they were added.
    pub rrsets: Vec<(RecordType, Vec<Record>)>,
}

impl Node {
    /// The records of type `t` at this name, if any.
    pub fn get(&self, t: RecordType) -> Option<&[Record]> {
        self.rrsets.iter().find(|(rt, _)| *rt == t).map(|(_, v)| v.as_slice())
    }
    /// Adds `r` to its RRset unless it is there already (linear in the
    /// RRset: for the small sets of static and address records).
    fn add(&mut self, r: Record) {
        let t = r.record_type();
        match self.rrsets.iter_mut().find(|(rt, _)| *rt == t) {
            Some((_, v)) => {
                if !v.contains(&r) {
                    v.push(r)
                }
            }
            None => self.rrsets.push((t, vec![r])),
        }
    }

    /// Appends records of one type known to be distinct from each other and
    /// from what the node holds (the SRV records of one policy answer: one
    /// per master), without comparing: a `contains` per record made
    /// publishing quadratic in the number of masters.
    fn extend_distinct(&mut self, t: RecordType, rs: impl IntoIterator<Item = Record>) {
        match self.rrsets.iter_mut().find(|(rt, _)| *rt == t) {
            Some((_, v)) => v.extend(rs),
            None => self.rrsets.push((t, rs.into_iter().collect())),
        }
    }
}

/// Every owner name of the zone with its records. The nodes are shared
/// between snapshots: a health change makes only the SRV names whose
/// records changed again.
pub type Nodes = HashMap<LowerName, Arc<Node>>;

/// How many of `prios` (sorted, best first) can ever be served when an
/// answer holds at most `max` records: whole priority groups while they
/// fit, then the whole first group that does not (answers take a window
/// of it); groups after that never are.
pub fn servable(prios: &[u16], max: usize) -> usize {
    let mut taken = 0usize;
    while taken < prios.len() && taken < max {
        let p = prios[taken];
        taken += prios[taken..].iter().take_while(|q| **q == p).count();
    }
    taken
}

/// The published zone data: records, serial and the policy output they
/// came from. Immutable and shared (`Arc`); the DNS layer adds what it
/// needs to answer fast (`dns::Served`).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The config this snapshot was built from (a reload gives a new one).
    pub config: Arc<Config>,
    /// The zone's apex (`zone.origin`).
    pub origin: Name,
    /// The apex as a lowercased name, ready to compare with query names.
    pub origin_lower: LowerName,
    /// The SOA serial this snapshot is served under (RFC 1982 arithmetic).
    pub serial: u32,
    /// The apex SOA (with `serial`).
    pub soa: Record,
    /// SOA for negative answers: TTL = min(SOA TTL, minimum) (RFC 2308).
    pub negative_soa: Record,
    /// Every owner name in the zone, including empty non-terminals. The apex
    /// node holds the NS set; the SOA is kept apart so that data comparisons
    /// ignore the serial.
    pub nodes: Arc<Nodes>,
    /// The policy output this snapshot publishes (for explain/status).
    pub answers: Arc<Answers>,
}

/// Builds the node map (all data but the SOA) from config, static records,
/// registry and policy answers.
pub fn build_nodes(config: &Config, statics: &[StaticRecord], registry: &Registry, answers: &[Arc<RoleAnswer>]) -> Nodes {
    let origin = &config.zone.origin;
    let ttl = config.zone.ttl;
    let mut nodes: HashMap<LowerName, Node> = HashMap::new();
    fn add(nodes: &mut HashMap<LowerName, Node>, r: Record) {
        nodes.entry(LowerName::new(&r.name)).or_default().add(r);
    }
    for ns in &config.zone.nameservers {
        add(&mut nodes, Record::from_rdata(origin.clone(), ttl, RData::NS(NS(ns.clone()))));
    }
    for s in statics {
        add(&mut nodes, s.record.clone());
    }
    for m in &registry.masters {
        if origin.zone_of(&m.host) {
            for ip in &m.addresses {
                let rd = match ip {
                    IpAddr::V4(v4) => RData::A(A(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                add(&mut nodes, Record::from_rdata(m.host.clone(), ttl, rd));
            }
        }
    }
    for a in answers {
        let name = srv_name(origin, a.site.as_deref(), a.role);
        add_answer(config, nodes.entry(LowerName::new(&name)).or_default(), &name, a);
    }
    // Empty non-terminals: every ancestor of every owner, down to the origin.
    let mut names: Vec<Name> = nodes.keys().map(|n| Name::from(n.clone())).collect();
    for a in answers {
        names.push(srv_name(origin, a.site.as_deref(), a.role));
    }
    for n in names {
        let mut cur = n;
        while cur.num_labels() > origin.num_labels() {
            cur = cur.base_name();
            nodes.entry(LowerName::new(&cur)).or_default();
        }
    }
    nodes.entry(LowerName::new(origin)).or_default();
    nodes.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()
}

/// The records of `a` the zone holds: only those an answer can carry
/// (policy.max_srv_records, see [`servable`]). An answer's node follows
/// from its name, its role and these alone.
pub fn kept_records<'a>(config: &Config, a: &'a RoleAnswer) -> &'a [policy::SrvTarget] {
    let mut taken = 0usize;
    let rs = a.records.as_slice();
    while let Some(p) = rs.get(taken).map(|t| t.priority)
        && taken < config.policy.max_srv_records
    {
        taken = taken.saturating_add(rs.get(taken..).map_or(0, |r| r.iter().take_while(|t| t.priority == p).count()));
    }
    rs.get(..taken).unwrap_or(rs)
}

/// Adds the records of one policy answer to the node of its SRV name.
fn add_answer(config: &Config, node: &mut Node, name: &Name, a: &RoleAnswer) {
    let ttl = config.zone.ttl;
    // The name exists (NODATA, not NXDOMAIN) even when it has no SRV
    // records. A TXT placeholder gives it a record, so that secondaries,
    // which learn names only from transferred records, answer NODATA too
    // (an NXDOMAIN would send agents through their search list first).
    if a.records.is_empty() {
        let text = format!("srvd: no {} master is published here; agents fall back to _x-puppet", a.role);
        node.add(Record::from_rdata(name.clone(), ttl, RData::TXT(TXT::new(vec![text]))));
    }
    let kept = kept_records(config, a);
    let keep = kept.len();
    let srvs = kept
        .iter()
        .map(|t| Record::from_rdata(name.clone(), ttl, RData::SRV(SRV::new(t.priority, t.weight, t.port, Name::clone(&t.target)))));
    if keep > 0 {
        node.extend_distinct(RecordType::SRV, srvs);
    }
}

/// The node map of `answers` where only the answers at `changed` (indices
/// into `answers`) differ in their records from those `prev` was built
/// from (same config, zone file and registry): those SRV names' nodes are
/// made again, every other node is shared with `prev`. `None` when a
/// changed name also holds other records (then build the map whole);
/// with it, whether any node differs from `prev`'s.
pub fn rebuild_answers(config: &Config, prev: &Nodes, answers: &[Arc<RoleAnswer>], changed: &[usize]) -> Option<(Nodes, bool)> {
    let origin = &config.zone.origin;
    let mut nodes = prev.clone();
    let mut differ = false;
    for &i in changed {
        let a = answers.get(i)?;
        let name = srv_name(origin, a.site.as_deref(), a.role);
        let lname = LowerName::new(&name);
        let old = prev.get(&lname)?;
        if old.rrsets.iter().any(|(t, _)| *t != RecordType::SRV && *t != RecordType::TXT) {
            return None;
        }
        let mut node = Node::default();
        add_answer(config, &mut node, &name, a);
        if node != **old {
            differ = true;
            nodes.insert(lname, Arc::new(node));
        }
    }
    Some((nodes, differ))
}

/// The SRV owner name of a role for a site (or the site-less apex pool).
pub fn srv_name(origin: &Name, site: Option<&str>, role: Role) -> Name {
    let mut s = format!("{}._tcp", role.service());
    if let Some(site) = site {
        s.push('.');
        s.push_str(site);
    }
    Name::from_ascii(&s).and_then(|n| n.append_domain(origin)).expect("service names are valid")
}

/// Every SRV name srvd publishes for this config.
pub fn published_names(config: &Config) -> Vec<Name> {
    let mut v = Vec::new();
    for role in Role::ALL {
        v.push(srv_name(&config.zone.origin, None, role));
        for s in config.site_names() {
            v.push(srv_name(&config.zone.origin, Some(s), role));
        }
    }
    v
}

/// The apex SOA for a serial.
pub fn soa_record(config: &Config, serial: u32) -> Record {
    let z = &config.zone;
    let rd = SOA::new(
        z.nameservers[0].clone(),
        z.hostmaster.clone(),
        serial,
        // refresh, retry, expire: secondaries also get NOTIFY, so refresh can be modest.
        300,
        60,
        1_209_600,
        z.negative_ttl,
    );
    Record::from_rdata(z.origin.clone(), z.ttl, RData::SOA(rd))
}

impl Snapshot {
    /// The snapshot of `nodes` and `answers` under `serial`. Cheap to call
    /// again with the same data and another serial (the data is shared).
    pub fn new(config: &Arc<Config>, nodes: Arc<Nodes>, answers: Arc<Answers>, serial: u32) -> Snapshot {
        let soa = soa_record(config, serial);
        let mut negative_soa = soa.clone();
        negative_soa.ttl = config.zone.ttl.min(config.zone.negative_ttl);
        Snapshot {
            config: config.clone(),
            origin: config.zone.origin.clone(),
            origin_lower: LowerName::new(&config.zone.origin),
            serial,
            soa,
            negative_soa,
            nodes,
            answers,
        }
    }

    /// All records of the zone, SOA first (for listing and transfers).
    pub fn all_records(&self) -> Vec<Record> {
        let mut v = vec![self.soa.clone()];
        let mut names: Vec<&LowerName> = self.nodes.keys().collect();
        names.sort();
        for n in names.into_iter().filter_map(|n| self.nodes.get(n)) {
            for (_, rs) in &n.rrsets {
                v.extend(rs.iter().cloned());
            }
        }
        v
    }
}
