//! The EDNS Client Subnet option (RFC 7871) on the wire: read from raw
//! queries (both paths use this one reader, so they agree on what is
//! malformed) and written into answers with the scope srvd decided.
//!
//! A malformed option (unknown FAMILY, SOURCE PREFIX-LENGTH beyond the
//! family's bits, ADDRESS not exactly as long as the prefix needs, bits
//! set past the prefix, two ECS options) gets FORMERR (§7.1.2). A query's
//! SCOPE PREFIX-LENGTH should be 0 (§6); another value is ignored.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The EDNS option code of ECS.
pub const CODE: u16 = 8;

/// A well-formed ECS option of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecs {
    /// The client subnet's address, zero past `source`.
    pub addr: IpAddr,
    /// SOURCE PREFIX-LENGTH.
    pub source: u8,
}

/// Why an ECS option is refused (FORMERR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EcsError {
    /// FAMILY is neither 1 (IPv4) nor 2 (IPv6).
    #[error("unknown address family")]
    Family,
    /// SOURCE PREFIX-LENGTH beyond 32 (IPv4) or 128 (IPv6).
    #[error("source prefix longer than the address")]
    Prefix,
    /// ADDRESS shorter or longer than SOURCE PREFIX-LENGTH needs, or the
    /// option shorter than its fixed part.
    #[error("address length does not match the source prefix")]
    Length,
    /// ADDRESS bits set past SOURCE PREFIX-LENGTH.
    #[error("address bits set past the source prefix")]
    HostBits,
    /// Two ECS options in one query.
    #[error("more than one ECS option")]
    Twice,
}

impl Ecs {
    /// Reads the option data (after the option code and length).
    pub fn parse(data: &[u8]) -> Result<Ecs, EcsError> {
        let &[f0, f1, source, _scope, ref addr @ ..] = data else {
            return Err(EcsError::Length);
        };
        let width: u8 = match u16::from_be_bytes([f0, f1]) {
            1 => 32,
            2 => 128,
            _ => return Err(EcsError::Family),
        };
        if source > width {
            return Err(EcsError::Prefix);
        }
        let need = usize::from(source).div_ceil(8);
        if addr.len() != need {
            return Err(EcsError::Length);
        }
        // Bits past the prefix in the last octet must be zero.
        if let Some(last) = addr.last() {
            let used = source % 8;
            if used != 0 && last & (0xffu8 >> used) != 0 {
                return Err(EcsError::HostBits);
            }
        }
        let ip = if width == 32 {
            let mut o = [0u8; 4];
            o.iter_mut().zip(addr).for_each(|(d, s)| *d = *s);
            IpAddr::V4(Ipv4Addr::from(o))
        } else {
            let mut o = [0u8; 16];
            o.iter_mut().zip(addr).for_each(|(d, s)| *d = *s);
            IpAddr::V6(Ipv6Addr::from(o))
        };
        Ok(Ecs { addr: ip, source })
    }

    /// The ECS option in the OPT rdata `rdata`: `Ok(None)` without one, or
    /// when the options are not framed right (the DNS parser ignores such
    /// options too).
    pub fn in_opt(rdata: &[u8]) -> Result<Option<Ecs>, EcsError> {
        let mut found = None;
        let mut i = 0usize;
        while i < rdata.len() {
            let Some(&[c0, c1, l0, l1]) = rdata.get(i..i.saturating_add(4)) else { return Ok(None) };
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            let start = i.saturating_add(4);
            let Some(data) = rdata.get(start..start.saturating_add(len)) else { return Ok(None) };
            if u16::from_be_bytes([c0, c1]) == CODE {
                if found.is_some() {
                    return Err(EcsError::Twice);
                }
                found = Some(Ecs::parse(data)?);
            }
            i = start.saturating_add(len);
        }
        Ok(found)
    }

    /// The ECS option of a raw query, found by walking its sections to the
    /// OPT record. `Ok(None)` when there is none or the message cannot be
    /// walked (the DNS parser then answers it as it deserves).
    pub fn in_query(raw: &[u8]) -> Result<Option<Ecs>, EcsError> {
        match opt_rdata(raw) {
            Some(r) => Ecs::in_opt(r),
            None => Ok(None),
        }
    }

    /// The length of the option in an answer, code and length included.
    pub fn wire_len(&self) -> usize {
        8 + usize::from(self.source).div_ceil(8)
    }

    /// Appends the answer's option: this family, source prefix and address,
    /// with `scope` (RFC 7871 §7.2.1).
    pub fn write(&self, scope: u8, out: &mut Vec<u8>) {
        let family: u16 = if self.addr.is_ipv4() { 1 } else { 2 };
        let len = u16::try_from(self.wire_len().saturating_sub(4)).unwrap_or(0);
        out.extend_from_slice(&CODE.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&family.to_be_bytes());
        out.push(self.source);
        out.push(scope);
        // As many address bytes as the prefix needs (no allocation: the fast path calls this).
        let n = usize::from(self.source).div_ceil(8);
        match self.addr {
            IpAddr::V4(a) => out.extend(a.octets().iter().take(n)),
            IpAddr::V6(a) => out.extend(a.octets().iter().take(n)),
        }
    }
}

/// Skips a (possibly compressed) name at `i`; the index after it.
fn skip_name(raw: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *raw.get(i)?;
        match len & 0xc0 {
            0 if len == 0 => return i.checked_add(1),
            0 => i = i.checked_add(usize::from(len) + 1)?,
            0xc0 => return i.checked_add(2),
            _ => return None,
        }
    }
}

/// The RDATA of the first OPT record in the additional section of `raw`.
fn opt_rdata(raw: &[u8]) -> Option<&[u8]> {
    let count = |at: usize| raw.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut i = 12usize;
    for _ in 0..qd {
        i = skip_name(raw, i)?.checked_add(4)?;
    }
    for n in 0..an.checked_add(ns)?.checked_add(ar)? {
        i = skip_name(raw, i)?;
        let &[t0, t1, _, _, _, _, _, _, l0, l1] = raw.get(i..i.checked_add(10)?)? else { return None };
        let start = i.checked_add(10)?;
        let end = start.checked_add(usize::from(u16::from_be_bytes([l0, l1])))?;
        if n >= an + ns && u16::from_be_bytes([t0, t1]) == 41 {
            return raw.get(start..end);
        }
        i = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(Ecs::parse(&[0, 1, 24, 0, 10, 1, 2]), Ok(Ecs { addr: "10.1.2.0".parse().unwrap(), source: 24 }));
        assert_eq!(Ecs::parse(&[0, 1, 0, 0]), Ok(Ecs { addr: "0.0.0.0".parse().unwrap(), source: 0 }));
        assert_eq!(Ecs::parse(&[0, 2, 48, 0, 0x20, 1, 0xd, 0xb8, 0, 1]).unwrap().addr, "2001:db8:1::".parse::<IpAddr>().unwrap());
        assert_eq!(Ecs::parse(&[0, 3, 24, 0, 10, 1, 2]), Err(EcsError::Family));
        assert_eq!(Ecs::parse(&[0, 1, 33, 0, 10, 1, 2, 3, 4]), Err(EcsError::Prefix));
        assert_eq!(Ecs::parse(&[0, 2, 129, 0]), Err(EcsError::Prefix));
        assert_eq!(Ecs::parse(&[0, 1, 24, 0, 10, 1, 2, 0]), Err(EcsError::Length));
        assert_eq!(Ecs::parse(&[0, 1, 24, 0, 10, 1]), Err(EcsError::Length));
        assert_eq!(Ecs::parse(&[0, 1, 22, 0, 10, 1, 3]), Err(EcsError::HostBits));
        assert_eq!(Ecs::parse(&[0, 1]), Err(EcsError::Length));
        assert_eq!(Ecs::parse(&[]), Err(EcsError::Length));
        let one = [0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 2];
        assert!(Ecs::in_opt(&one).unwrap().is_some());
        assert_eq!(Ecs::in_opt(&[one, one].concat()), Err(EcsError::Twice));
        assert_eq!(Ecs::in_opt(&[0, 8, 0, 9, 0, 1]), Ok(None));
        let mut w = Vec::new();
        Ecs::parse(&[0, 1, 24, 0, 10, 1, 2]).unwrap().write(16, &mut w);
        assert_eq!(w, [0, 8, 0, 7, 0, 1, 24, 16, 10, 1, 2]);
    }

    #[test]
    fn never_panics_on_short_or_odd_bytes() {
        for len in 0..40usize {
            for seed in 0..64u8 {
                let raw: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed)).collect();
                let _ = Ecs::in_query(&raw);
                let _ = Ecs::in_opt(&raw);
                let _ = Ecs::parse(&raw);
            }
        }
    }
}
