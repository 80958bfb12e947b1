//! IP networks in CIDR notation (`10.1.0.0/16`, `2001:db8:1::/48`), as the
//! config writes them for `[[site]] networks` and `[server] ecs_trusted`.
//! Strict: the prefix length is required, and an address with bits set
//! past the prefix (`10.1.2.3/16`) is refused rather than silently masked,
//! since it usually means a typo in the prefix length.

use std::fmt;
use std::net::IpAddr;

/// An IPv4 or IPv6 network: an address with every bit past `prefix` zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

/// Why a network was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// No `/`.
    #[error("{0:?} is not \"address/prefix-length\" (e.g. \"10.1.0.0/16\")")]
    NoPrefix(String),
    /// The address part does not parse.
    #[error("{0:?}: {1:?} is not an IPv4 or IPv6 address")]
    BadAddress(String, String),
    /// The prefix length is not a number within the family's bits.
    #[error("{0:?}: prefix length {1:?} is not a number from 0 to {2}")]
    BadPrefix(String, String, u8),
    /// Bits set past the prefix.
    #[error("{0:?} has host bits set past /{1} (did you mean {2}?)")]
    HostBits(String, u8, Network),
}

/// The address as a 128-bit number, IPv4 in the low 32 bits, and its bit count.
pub fn bits_of(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

/// The mask of the first `prefix` bits of a `width`-bit number.
fn mask(prefix: u8, width: u8) -> u128 {
    let full: u128 = if width >= 128 { u128::MAX } else { (1u128 << width) - 1 };
    let host = width.saturating_sub(prefix);
    if host >= 128 { 0 } else { full & !((1u128 << host).wrapping_sub(1)) }
}

/// `addr` with every bit past `prefix` cleared (prefix capped at the family's bits).
pub fn truncate(addr: IpAddr, prefix: u8) -> IpAddr {
    let (bits, width) = bits_of(addr);
    let m = bits & mask(prefix.min(width), width);
    match addr {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(u32::try_from(m).unwrap_or(0))),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(m)),
    }
}

impl Network {
    /// The network of `addr`/`prefix`, if `prefix` fits the family and no host bit is set.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Network> {
        let (bits, width) = bits_of(addr);
        (prefix <= width && bits & !mask(prefix, width) == 0).then_some(Network { addr, prefix })
    }

    /// Parses `"addr/len"`.
    pub fn parse(s: &str) -> Result<Network, NetworkError> {
        let t = s.trim();
        let (a, p) = t.split_once('/').ok_or_else(|| NetworkError::NoPrefix(s.to_string()))?;
        let addr: IpAddr = a.parse().map_err(|_| NetworkError::BadAddress(s.to_string(), a.to_string()))?;
        let width = bits_of(addr).1;
        let prefix = p
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= width && p.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| NetworkError::BadPrefix(s.to_string(), p.to_string(), width))?;
        Network::new(addr, prefix)
            .ok_or_else(|| NetworkError::HostBits(s.to_string(), prefix, Network { addr: truncate(addr, prefix), prefix }))
    }

    /// The network's first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside (same family, same first `prefix` bits).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, wa) = bits_of(self.addr);
        let (b, wb) = bits_of(ip);
        wa == wb && (b & mask(self.prefix, wb)) == a
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for Network {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6() {
        let n = Network::parse("10.1.0.0/16").unwrap();
        assert_eq!(n.to_string(), "10.1.0.0/16");
        assert!(n.contains("10.1.255.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(!n.contains("::ffff:10.1.0.1".parse().unwrap()));
        let n = Network::parse("2001:db8:1::/48").unwrap();
        assert!(n.contains("2001:db8:1:ffff::1".parse().unwrap()));
        assert!(!n.contains("2001:db8:2::1".parse().unwrap()));
        assert_eq!(Network::parse("0.0.0.0/0").unwrap().prefix(), 0);
        assert!(Network::parse("0.0.0.0/0").unwrap().contains("192.0.2.1".parse().unwrap()));
        assert_eq!(Network::parse("::1/128").unwrap().prefix(), 128);
        assert!(Network::parse("::/0").unwrap().contains("::1".parse().unwrap()));
    }

    #[test]
    fn refuses_bad_networks() {
        assert!(matches!(Network::parse("10.1.0.0"), Err(NetworkError::NoPrefix(_))));
        assert!(matches!(Network::parse("10.1.0/16"), Err(NetworkError::BadAddress(..))));
        assert!(matches!(Network::parse("10.1.0.0/33"), Err(NetworkError::BadPrefix(..))));
        assert!(matches!(Network::parse("10.1.0.0/+8"), Err(NetworkError::BadPrefix(..))));
        assert!(matches!(Network::parse("::/129"), Err(NetworkError::BadPrefix(..))));
        assert!(matches!(Network::parse("10.1.0.0/"), Err(NetworkError::BadPrefix(..))));
        let e = Network::parse("10.1.2.3/16").unwrap_err();
        assert!(e.to_string().contains("did you mean 10.1.0.0/16"), "{e}");
        assert!(matches!(Network::parse("2001:db8::1/64"), Err(NetworkError::HostBits(..))));
    }

    #[test]
    fn truncates() {
        assert_eq!(truncate("10.1.2.3".parse().unwrap(), 16), "10.1.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(truncate("10.1.2.3".parse().unwrap(), 0), "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(truncate("10.1.2.3".parse().unwrap(), 99), "10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!(truncate("2001:db8::1".parse().unwrap(), 32), "2001:db8::".parse::<IpAddr>().unwrap());
    }
}
