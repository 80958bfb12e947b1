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

use crate::config::TsigKey;

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

/// The outcome of checking a request's TSIG.
pub enum Check {
    /// No TSIG in the request.
    Unsigned,
    /// Signed with `key`, verified; responses are signed with `signer`.
    Valid { key: Name, signer: ResponseSigner },
    /// Unknown key, bad MAC or bad time: answer NOTAUTH with this TSIG.
    Failed { error: TsigError, signer: ResponseSigner },
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
    let signer = signer(key);
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
    pub fn sign(&mut self, msg: &[u8]) -> Record<TSIG> {
        let stub = TSIG::new(self.algorithm.clone(), self.time, FUDGE, Vec::new(), self.oid, self.error, self.other.clone());
        let Some(signer) = &self.signer else {
            return make_tsig_record(self.key_name.clone(), stub);
        };
        let mut tbs = Vec::with_capacity(msg.len() + 128);
        let mut enc = BinEncoder::new(&mut tbs);
        let ok = (|| {
            enc.emit_u16(self.prev_mac.len() as u16)?;
            enc.emit_vec(&self.prev_mac)?;
            enc.emit_vec(msg)?;
            if self.first {
                stub.emit_tsig_for_mac(&mut enc, &self.key_name)
            } else {
                enc.emit_u16((self.time >> 32) as u16)?;
                enc.emit_u32(self.time as u32)?;
                enc.emit_u16(FUDGE)
            }
        })();
        ok.expect("encoding into a Vec does not fail");
        let mac = signer.sign(&tbs).expect("supported algorithm");
        self.prev_mac = mac.clone();
        self.first = false;
        make_tsig_record(self.key_name.clone(), stub.set_mac(mac))
    }

    /// Signs an encoded message in place: appends the TSIG record and counts
    /// it in ARCOUNT.
    pub fn append(&mut self, msg: &mut Vec<u8>) {
        let rec = self.sign(msg);
        msg.extend_from_slice(&encode_record(&rec));
        let ar = u16::from_be_bytes([msg[10], msg[11]]).wrapping_add(1);
        msg[10..12].copy_from_slice(&ar.to_be_bytes());
    }

    /// Room the TSIG record takes at most (for UDP size limits).
    pub fn max_len(&self) -> usize {
        let rec = make_tsig_record(self.key_name.clone(), TSIG::new(self.algorithm.clone(), 0, FUDGE, vec![0; 64], 0, None, vec![0; 6]));
        encode_record(&rec).len()
    }
}

fn encode_record(rec: &Record<TSIG>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    rec.emit(&mut BinEncoder::new(&mut out)).expect("encoding into a Vec does not fail");
    out
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

/// Verifies the TSIG of a response to a request signed with `key`.
pub fn verify_response(key: &TsigKey, raw: &[u8], request_mac: &[u8], now: u64) -> Result<(), String> {
    let (_, _, range) = signer(key).verify_message_byte(raw, Some(request_mac), true).map_err(|e| e.to_string())?;
    if now < range.start || now > range.end {
        return Err("TSIG time outside the fudge window".into());
    }
    Ok(())
}
