//! Which site's answers a client gets on the site-less names under the
//! origin (`[[site]] networks`, docs/configuration.md "Sites by client
//! network"): longest-prefix match of the client address over every
//! site's networks, else `policy.client_site_default`, else the site-less
//! pool. Pure and built once per config; a lookup walks one binary trie
//! (at most 32 or 128 steps) and allocates nothing.
//!
//! A lookup also says how far its answer reaches: the shortest prefix of
//! the client address inside which every address gets the same site (the
//! scope of an EDNS Client Subnet reply, RFC 7871 §7.2.1). A nested
//! network of any site makes that prefix longer: the scope never claims
//! more addresses than really share the answer.

use std::net::IpAddr;

use hickory_proto::rr::{LowerName, Name};

use crate::input::config::Config;
use crate::input::network::{Network, bits_of};
use crate::input::registry::Role;
use crate::zone::srv_name;

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct TrieNode {
    child: [u32; 2],
    /// Index into `ClientSites::networks` of the network ending here.
    net: u32,
}

impl Default for TrieNode {
    fn default() -> Self {
        TrieNode { child: [NONE, NONE], net: NONE }
    }
}

/// A binary trie of the networks of one address family.
#[derive(Debug, Clone)]
struct Trie {
    width: u8,
    nodes: Vec<TrieNode>,
}

impl Trie {
    fn new(width: u8) -> Trie {
        Trie { width, nodes: vec![TrieNode::default()] }
    }

    fn bit(bits: u128, width: u8, depth: u8) -> usize {
        usize::from(bits >> (width.saturating_sub(1).saturating_sub(depth)) & 1 == 1)
    }

    fn insert(&mut self, n: &Network, index: u32) {
        let (bits, width) = bits_of(n.addr());
        let mut at = 0usize;
        for depth in 0..n.prefix().min(width) {
            let b = Trie::bit(bits, width, depth);
            let next = self.nodes.get(at).map_or(NONE, |t| t.child[b]);
            at = if next == NONE {
                let new = u32::try_from(self.nodes.len()).unwrap_or(NONE);
                self.nodes.push(TrieNode::default());
                if let Some(t) = self.nodes.get_mut(at) {
                    t.child[b] = new;
                }
                new as usize
            } else {
                next as usize
            };
        }
        if let Some(t) = self.nodes.get_mut(at) {
            t.net = index;
        }
    }

    /// (the longest network containing `bits`, the scope prefix length).
    fn lookup(&self, bits: u128) -> (u32, u8) {
        let mut best = NONE;
        let mut at = 0usize;
        let mut depth = 0u8;
        loop {
            let Some(node) = self.nodes.get(at) else { return (best, depth) };
            if node.net != NONE {
                best = node.net;
            }
            if depth >= self.width {
                return (best, depth);
            }
            let next = node.child[Trie::bit(bits, self.width, depth)];
            if next == NONE {
                // A leaf: the whole block at this depth answers alike. Else a
                // network lies on the other side: one more bit tells them apart.
                let leaf = node.child == [NONE, NONE];
                return (best, if leaf { depth } else { depth.saturating_add(1) });
            }
            at = next as usize;
            depth = depth.saturating_add(1);
        }
    }
}

/// Why a client gets the site it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its address is inside this network of the site (the longest match).
    Network(Network),
    /// No network contains it: `policy.client_site_default`.
    Default,
    /// No network contains it and there is no default: the site-less pool.
    Pool,
}

/// The outcome of one lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The site whose answers the client gets (index into `config.sites`);
    /// `None`: the site-less pool.
    pub site: Option<usize>,
    /// Why.
    pub reason: Reason,
    /// The prefix length of the client address within which every address
    /// gets the same choice (the ECS scope of the answer).
    pub scope: u8,
}

/// The client-network policy of one config.
#[derive(Debug, Clone)]
pub struct ClientSites {
    /// Whether any site has networks: the site-less names are then answered per client.
    enabled: bool,
    v4: Trie,
    v6: Trie,
    /// (network, site index) by the index the tries hold.
    networks: Vec<(Network, usize)>,
    default: Option<usize>,
    trusted: Vec<Network>,
    /// The site-less SRV names (`Role::ALL` order), as published.
    pool_names: Vec<(LowerName, Name)>,
    /// Per site (config order): its SRV names in `Role::ALL` order.
    site_names: Vec<Vec<LowerName>>,
}

impl ClientSites {
    /// The policy of `config` (disabled when no site has networks).
    pub fn new(config: &Config) -> ClientSites {
        let mut v4 = Trie::new(32);
        let mut v6 = Trie::new(128);
        let mut networks = Vec::new();
        for (i, s) in config.sites.iter().enumerate() {
            for n in &s.networks {
                let index = u32::try_from(networks.len()).unwrap_or(NONE);
                match n.addr() {
                    IpAddr::V4(_) => v4.insert(n, index),
                    IpAddr::V6(_) => v6.insert(n, index),
                }
                networks.push((*n, i));
            }
        }
        let origin = &config.zone.origin;
        let pool_names = Role::ALL
            .iter()
            .map(|r| {
                let n = srv_name(origin, None, *r);
                (LowerName::new(&n), n)
            })
            .collect();
        let site_names =
            config.sites.iter().map(|s| Role::ALL.iter().map(|r| LowerName::new(&srv_name(origin, Some(&s.name), *r))).collect()).collect();
        let default = config.policy.client_site_default.as_deref().and_then(|d| config.sites.iter().position(|s| s.name == d));
        ClientSites {
            enabled: !networks.is_empty(),
            v4,
            v6,
            networks,
            default,
            trusted: config.server.ecs_trusted.clone(),
            pool_names,
            site_names,
        }
    }

    /// Whether the site-less names are answered per client.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the EDNS Client Subnet option of a query from `src` is believed.
    pub fn trusts(&self, src: IpAddr) -> bool {
        let src = match src {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(src, IpAddr::V4),
            v4 => v4,
        };
        self.trusted.iter().any(|n| n.contains(src))
    }

    /// The site a client at `addr` gets. An IPv4-mapped IPv6 address
    /// counts as its IPv4 address (a dual-stack socket's view of IPv4
    /// clients); its scope is then IPv4's.
    pub fn choose(&self, addr: IpAddr) -> Choice {
        let (trie, bits) = match addr {
            IpAddr::V4(_) => (&self.v4, bits_of(addr).0),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (&self.v4, u128::from(u32::from(v4))),
                None => (&self.v6, u128::from(v6)),
            },
        };
        let (net, scope) = trie.lookup(bits);
        match self.networks.get(net as usize) {
            Some((n, site)) => Choice { site: Some(*site), reason: Reason::Network(*n), scope },
            None => match self.default {
                Some(d) => Choice { site: Some(d), reason: Reason::Default, scope },
                None => Choice { site: None, reason: Reason::Pool, scope },
            },
        }
    }

    /// The site a client outside every network gets (`None`: the pool).
    pub fn default_site(&self) -> Option<usize> {
        self.default
    }

    /// The role of `name` when it is one of the site-less SRV names.
    pub fn pool_role(&self, name: &LowerName) -> Option<(Role, &Name)> {
        self.pool_names.iter().zip(Role::ALL).find(|((l, _), _)| l == name).map(|((_, n), r)| (r, n))
    }

    /// The SRV name of `role` for site `site` (an index into `config.sites`).
    pub fn site_name(&self, site: usize, role: Role) -> Option<&LowerName> {
        let i = Role::ALL.iter().position(|r| *r == role)?;
        self.site_names.get(site)?.get(i)
    }

    /// How many sites there are (the per-site answers a pre-encoded name needs).
    pub fn sites(&self) -> usize {
        self.site_names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[zone]\norigin = \"p.example.com.\"\n{extra}\n[[site]]\nname = \"dc1\"\nnetworks = [\"10.1.0.0/16\", \"2001:db8:1::/48\"]\n\
             [[site]]\nname = \"dc2\"\nnetworks = [\"10.2.0.0/16\", \"10.1.5.0/24\", \"10.1.6.7/32\"]\n[[site]]\nname = \"dc3\"\n"
        );
        Config::parse(&text, std::path::Path::new("t.toml"), std::path::Path::new(".")).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_scope_is_never_too_wide() {
        let c = ClientSites::new(&config(""));
        assert!(c.enabled());
        let dc1_16 = Reason::Network(Network::parse("10.1.0.0/16").unwrap());
        // 10.1.9.9: dc1's /16; the nested dc2 networks sit under 10.1.0.0/21
        // (10.1.5.0/24, 10.1.6.7/32), so 10.1.8.0/21 alone is sure.
        assert_eq!(c.choose(ip("10.1.9.9")), Choice { site: Some(0), reason: dc1_16, scope: 21 });
        assert_eq!(c.choose(ip("10.1.200.1")), Choice { site: Some(0), reason: dc1_16, scope: 17 });
        let c5 = c.choose(ip("10.1.5.77"));
        assert_eq!((c5.site, c5.scope), (Some(1), 24));
        // Next to the /32: dc1, but only that /32's sibling is sure.
        assert_eq!(c.choose(ip("10.1.6.6")), Choice { site: Some(0), reason: dc1_16, scope: 32 });
        assert_eq!(c.choose(ip("10.1.6.7")).site, Some(1));
        assert_eq!(c.choose(ip("10.1.6.7")).scope, 32);
        assert_eq!(c.choose(ip("10.2.3.4")).scope, 16);
        // No match: the pool, with the widest block that holds no network.
        assert_eq!(c.choose(ip("192.0.2.1")), Choice { site: None, reason: Reason::Pool, scope: 1 });
        // 10.3.0.0/15 holds 10.2.0.0/16: only the /16 is sure.
        assert_eq!(c.choose(ip("10.3.0.1")), Choice { site: None, reason: Reason::Pool, scope: 16 });
        assert_eq!(c.choose(ip("10.4.0.1")), Choice { site: None, reason: Reason::Pool, scope: 14 });
        assert_eq!(c.choose(ip("2001:db8:1:2::1")).site, Some(0));
        assert_eq!(c.choose(ip("2001:db8:1:2::1")).scope, 48);
        assert_eq!(c.choose(ip("::ffff:10.2.0.1")).site, Some(1));
        // An IPv6 client outside: the scope separates it from 2001:db8:1::/48.
        assert_eq!(c.choose(ip("2001:db8:2::1")).scope, 47);
        assert_eq!(c.choose(ip("::1")).scope, 3);
    }

    #[test]
    fn default_site_and_trust() {
        let c = ClientSites::new(&config("[server]\necs_trusted = [\"127.0.0.1/32\"]\n[policy]\nclient_site_default = \"dc3\"\n"));
        assert_eq!(c.choose(ip("192.0.2.1")), Choice { site: Some(2), reason: Reason::Default, scope: 1 });
        assert!(c.trusts(ip("127.0.0.1")));
        assert!(c.trusts(ip("::ffff:127.0.0.1")));
        assert!(!c.trusts(ip("127.0.0.2")));
        let (role, name) = c.pool_role(&LowerName::new(&Name::from_ascii("_X-puppet._tcp.p.example.com.").unwrap())).unwrap();
        assert_eq!((role, name.to_string().as_str()), (Role::Puppet, "_x-puppet._tcp.p.example.com."));
        assert_eq!(c.site_name(1, Role::Ca).unwrap().to_string(), "_x-puppet-ca._tcp.dc2.p.example.com.");
        assert!(c.pool_role(&LowerName::new(&Name::from_ascii("_x-puppet._tcp.dc1.p.example.com.").unwrap())).is_none());
    }

    #[test]
    fn no_networks_is_disabled() {
        let text = "[zone]\norigin = \"p.example.com.\"\n[[site]]\nname = \"dc1\"\n";
        let c = ClientSites::new(&Config::parse(text, std::path::Path::new("t"), std::path::Path::new(".")).unwrap());
        assert!(!c.enabled());
        assert_eq!(c.choose(ip("10.0.0.1")), Choice { site: None, reason: Reason::Pool, scope: 0 });
    }
}
