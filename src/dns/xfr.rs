//! Zone transfers (AXFR, RFC 5936) to the configured secondaries: who may
//! transfer, and how the snapshot is cut into messages.
//!
//! A transfer is allowed only from the IP of a `[[secondary]]`; when that
//! secondary has a `key`, the request must carry a valid TSIG made with it.
//! IXFR is answered like AXFR (the whole zone, RFC 1995 §4 allows it): srvd
//! keeps no history, and the zone is small; an IXFR from a secondary that
//! already has the current serial gets the SOA alone (see `dns`).

use std::net::IpAddr;

use hickory_proto::rr::{Name, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::input::config::{Config, Secondary, TsigKey};
use crate::zone::Snapshot;

/// The transfer side of the config, carried in every snapshot so that the
/// DNS paths read it without a lock and a reload takes effect at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// TSIG keys transfer requests may be signed with.
    pub keys: Vec<TsigKey>,
    /// Who may transfer the zone and who gets NOTIFY.
    pub secondaries: Vec<Secondary>,
}

impl Access {
    /// The transfer keys and secondaries of `config`.
    pub fn from_config(config: &Config) -> Access {
        Access { keys: config.tsig_keys.clone(), secondaries: config.secondaries.clone() }
    }

    /// May `ip`, authenticated with `key` (None: unsigned), transfer the zone?
    pub fn may_transfer(&self, ip: IpAddr, key: Option<&Name>) -> bool {
        let ip = ip.to_canonical();
        self.secondaries.iter().any(|s| {
            s.address.ip().to_canonical() == ip
                && match &s.key {
                    None => true,
                    Some(k) => key == Some(k),
                }
        })
    }
}

/// Budget of one transfer message, bytes (before compression and TSIG);
/// well under the 65535 a TCP message may hold.
pub const MESSAGE_BUDGET: usize = 16 * 1024;

/// The zone as transfer messages: SOA, every record, SOA again, cut so that
/// no message's records exceed `budget` bytes uncompressed.
pub fn messages(snap: &Snapshot, budget: usize) -> Vec<Vec<Record>> {
    let mut records = snap.all_records();
    records.push(snap.soa.clone());
    let mut out: Vec<Vec<Record>> = Vec::new();
    let mut cur: Vec<Record> = Vec::new();
    let mut size = 0;
    for r in records {
        let len = encoded_len(&r);
        if !cur.is_empty() && size + len > budget {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += len;
        cur.push(r);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn encoded_len(r: &Record) -> usize {
    let mut buf = Vec::with_capacity(64);
    let mut enc = BinEncoder::new(&mut buf);
    match r.emit(&mut enc) {
        Ok(()) => buf.len(),
        Err(_) => 512,
    }
}
