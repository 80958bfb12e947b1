//! TSIG (RFC 8945) for zone transfers and NOTIFY: checking a signed request
//! and signing the response (or the chain of responses of a transfer).
//!
//! hickory-proto provides the HMACs and the to-be-signed layout of a request
//! ([`TSigner`]); this module adds what a server needs on top: the RFC 8945
//! §5.2 checks in order (key, MAC, time) with the matching error responses,
//! and signing already encoded messages, including the chained MACs of a
//! multi-message transfer (§5.3.1).

use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::TSIG;
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError, make_tsig_record};
use hickory_proto::rr::{Name, Record, TSigner};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::input::config::TsigKey;

/// Allowed clock difference, seconds (RFC 8945 recommends 300).
pub const FUDGE: u16 = 300;

/// Seconds since the epoch, as TSIG counts time.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A signer for a configured key.
pub fn signer(key: &TsigKey) -> TSigner {
    TSigner::new(key.secret.0.clone(), key.algorithm.clone(), key.name.clone(), FUDGE)
        .expect("config only accepts algorithms TSigner supports")
}

/// A signer for a configured key, `None` if hickory cannot sign with its
/// algorithm (the config rejects those; this is the request path's copy).
fn try_signer(key: &TsigKey) -> Option<TSigner> {
    TSigner::new(key.secret.0.clone(), key.algorithm.clone(), key.name.clone(), FUDGE).ok()
}

/// The outcome of checking a request's TSIG.
pub enum Check {
    /// No TSIG in the request.
    Unsigned,
    /// Signed with `key`, verified; responses are signed with `signer`.
    Valid {
        /// The configured key's name (transfer access is checked against it).
        key: Name,
        /// Signs the response with the same key, chained to the request's MAC.
        signer: ResponseSigner,
    },
    /// Unknown key, bad MAC or bad time: answer NOTAUTH with this TSIG.
    Failed {
        /// The TSIG error code for the response (BADKEY, BADSIG, BADTIME).
        error: TsigError,
        /// Makes the response's TSIG: unsigned for BADKEY/BADSIG, signed for BADTIME (RFC 8945 §5.2).
        signer: ResponseSigner,
    },
}

/// Checks the TSIG of a parsed request (`raw` is what was received) against
/// the configured keys at time `now`.
pub fn check(keys: &[TsigKey], raw: &[u8], msg: &Message, now: u64) -> Check {
    let Some(sig) = msg.signature.as_deref() else {
        return Check::Unsigned;
    };
    let (name, oid, alg) = (sig.name.clone(), sig.data.oid, sig.data.algorithm.clone());
    let Some(key) = keys.iter().find(|k| k.name == name && k.algorithm == alg) else {
        // RFC 8945 §5.2.1: unknown key or algorithm, unsigned BADKEY.
        return Check::Failed { error: TsigError::BadKey, signer: ResponseSigner::unsigned(name, alg, oid, now, TsigError::BadKey) };
    };
    let Some(signer) = try_signer(key) else {
        return Check::Failed { error: TsigError::BadKey, signer: ResponseSigner::unsigned(name, alg, oid, now, TsigError::BadKey) };
    };
    match signer.verify_message_byte(raw, None, true) {
        Err(_) => Check::Failed { error: TsigError::BadSig, signer: ResponseSigner::unsigned(name, alg, oid, now, TsigError::BadSig) },
        Ok((mac, _time, range)) => {
            if now < range.start || now > range.end {
                // §5.2.3: BADTIME is signed and carries our time.
                let mut s = ResponseSigner::signed(signer, mac, oid, now);
                s.error = Some(TsigError::BadTime);
                s.other = now.to_be_bytes()[2..].to_vec();
                return Check::Failed { error: TsigError::BadTime, signer: s };
            }
            Check::Valid { key: key.name.clone(), signer: ResponseSigner::signed(signer, mac, oid, now) }
        }
    }
}

/// Signs the response(s) to one signed request. Each call to
/// [`ResponseSigner::sign`] covers the next message: the first includes the
/// request's MAC and all TSIG variables, later ones the previous MAC and the
/// timers only (RFC 8945 §5.3.1).
#[derive(Clone)]
pub struct ResponseSigner {
    key_name: Name,
    algorithm: TsigAlgorithm,
    /// None: the response carries an unsigned TSIG (BADKEY, BADSIG).
    signer: Option<TSigner>,
    prev_mac: Vec<u8>,
    first: bool,
    oid: u16,
    time: u64,
    error: Option<TsigError>,
    other: Vec<u8>,
}

impl std::fmt::Debug for ResponseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseSigner")
            .field("key", &self.key_name)
            .field("signed", &self.signer.is_some())
            .field("error", &self.error)
            .finish()
    }
}

impl ResponseSigner {
    fn signed(signer: TSigner, request_mac: Vec<u8>, oid: u16, time: u64) -> Self {
        ResponseSigner {
            key_name: signer.signer_name().clone(),
            algorithm: signer.algorithm().clone(),
            signer: Some(signer),
            prev_mac: request_mac,
            first: true,
            oid,
            time,
            error: None,
            other: Vec::new(),
        }
    }

    fn unsigned(key_name: Name, algorithm: TsigAlgorithm, oid: u16, time: u64, error: TsigError) -> Self {
        ResponseSigner {
            key_name,
            algorithm,
            signer: None,
            prev_mac: Vec::new(),
            first: true,
            oid,
            time,
            error: Some(error),
            other: Vec::new(),
        }
    }

    /// The TSIG record for the next message, given as encoded without TSIG.
    /// Should signing fail (it cannot with the algorithms the config
    /// accepts), the record goes out without a MAC, which the client rejects.
    pub fn sign(&mut self, msg: &[u8]) -> Record<TSIG> {
        let stub = TSIG::new(self.algorithm.clone(), self.time, FUDGE, Vec::new(), self.oid, self.error, self.other.clone());
        let Some(signer) = &self.signer else {
            return make_tsig_record(self.key_name.clone(), stub);
        };
        // The to-be-signed data is built in a plain Vec: a BinEncoder stops
        // at 65535 bytes, which a full-size message plus MAC would pass.
        let mut vars = Vec::with_capacity(600);
        let mut enc = BinEncoder::new(&mut vars);
        let ok = if self.first {
            stub.emit_tsig_for_mac(&mut enc, &self.key_name)
        } else {
            enc.emit_u16((self.time >> 32) as u16).and_then(|()| enc.emit_u32(self.time as u32)).and_then(|()| enc.emit_u16(FUDGE))
        };
        let Ok(mac_len) = u16::try_from(self.prev_mac.len()) else {
            return make_tsig_record(self.key_name.clone(), stub);
        };
        let mut tbs = Vec::with_capacity(msg.len().saturating_add(vars.len()).saturating_add(self.prev_mac.len()).saturating_add(2));
        tbs.extend_from_slice(&mac_len.to_be_bytes());
        tbs.extend_from_slice(&self.prev_mac);
        tbs.extend_from_slice(msg);
        tbs.extend_from_slice(&vars);
        let mac = match ok.map_err(|e| e.to_string()).and_then(|()| signer.sign(&tbs).map_err(|e| e.to_string())) {
            Ok(mac) => mac,
            Err(e) => {
                tracing::warn!(error = %e, key = %self.key_name, "TSIG signing failed; sending the TSIG without a MAC");
                return make_tsig_record(self.key_name.clone(), stub);
            }
        };
        self.prev_mac = mac.clone();
        self.first = false;
        make_tsig_record(self.key_name.clone(), stub.set_mac(mac))
    }

    /// Signs an encoded message in place: appends the TSIG record and counts
    /// it in ARCOUNT. A message shorter than a header, or whose ARCOUNT is
    /// full, or that the record would take past 65535 bytes, is left as is.
    pub fn append(&mut self, msg: &mut Vec<u8>) {
        let Some(ar) = msg.get(10..12).and_then(|c| <[u8; 2]>::try_from(c).ok()).and_then(|c| u16::from_be_bytes(c).checked_add(1)) else {
            return;
        };
        let rec = self.sign(msg);
        let Some(bytes) = encode_record(&rec) else { return };
        if msg.len().saturating_add(bytes.len()) > u16::MAX as usize {
            return;
        }
        msg.extend_from_slice(&bytes);
        if let Some(count) = msg.get_mut(10..12) {
            count.copy_from_slice(&ar.to_be_bytes());
        }
    }

    /// Room the TSIG record takes at most (for UDP size limits).
    pub fn max_len(&self) -> usize {
        let rec = make_tsig_record(self.key_name.clone(), TSIG::new(self.algorithm.clone(), 0, FUDGE, vec![0; 64], 0, None, vec![0; 6]));
        // The record of the longest MAC and other data srvd sends; if it
        // cannot even be encoded, nothing fits.
        encode_record(&rec).map_or(u16::MAX as usize, |b| b.len())
    }
}

fn encode_record(rec: &Record<TSIG>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    rec.emit(&mut BinEncoder::new(&mut out)).ok()?;
    Some(out)
}

/// Signs a request (NOTIFY) with `key`; returns the encoded message and the
/// request MAC needed to verify the answer ([`verify_response`]).
pub fn sign_request(key: &TsigKey, msg: &mut Message, now: u64) -> Result<(Vec<u8>, Vec<u8>), hickory_proto::ProtoError> {
    let signer = signer(key);
    let (rec, _) = signer.sign_message(msg, now)?;
    let mac = rec.data.mac.clone();
    msg.set_signature(rec);
    Ok((msg.to_vec()?, mac))
}

/// Why the TSIG of a response was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Missing, malformed, or a MAC that does not match.
    #[error("{0}")]
    Mac(hickory_proto::dnssec::DnsSecError),
    /// Signed too long ago or in the future.
    #[error("TSIG time outside the fudge window")]
    Time,
}

/// Verifies the TSIG of a response to a request signed with `key`.
pub fn verify_response(key: &TsigKey, raw: &[u8], request_mac: &[u8], now: u64) -> Result<(), VerifyError> {
    let (_, _, range) = signer(key).verify_message_byte(raw, Some(request_mac), true).map_err(VerifyError::Mac)?;
    if now < range.start || now > range.end {
        return Err(VerifyError::Time);
    }
    Ok(())
}
