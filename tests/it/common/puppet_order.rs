//! Runs `tests/puppet/srv_order.rb` (the real Puppet agent library resolving
//! through srvd) and turns its output into something easy to assert on.
//! Shared by the `puppet_agent` and `puppet_agent_run` test modules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/puppet").join(name)
}

/// One SRV record as Ruby's resolver handed it to Puppet.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Rec {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
    pub ttl: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Query {
    pub name: String,
    pub records: Vec<Rec>,
}

/// What Puppet did for one (srv_domain, service).
#[derive(Debug, Clone, Deserialize)]
pub struct Outcome {
    pub domain: String,
    pub service: String,
    /// Every SRV query Puppet made, in order (a fallback adds `_x-puppet`).
    pub queries: Vec<Query>,
    /// The order Puppet would try masters in, once per repeat.
    pub orders: Vec<Vec<(String, u16)>>,
    /// Whether Ruby's resolver retried over TCP after a truncated UDP answer.
    pub tcp: bool,
}

impl Outcome {
    /// Names Puppet queried, in order.
    pub fn names(&self) -> Vec<&str> {
        self.queries.iter().map(|q| q.name.as_str()).collect()
    }

    /// The records Puppet used (those of the last query: after a fallback,
    /// the `_x-puppet` ones).
    pub fn used(&self) -> &[Rec] {
        self.queries.last().map(|q| &q.records[..]).unwrap_or(&[])
    }

    /// Each order as the sequence of host sets Puppet went through, one set
    /// per priority. Checks on the way that Puppet tried every record of the
    /// answer exactly once and never went back to a lower priority number, so
    /// callers only compare groups: the order inside a group is Puppet's
    /// weighted random choice.
    pub fn groups(&self) -> Vec<Vec<BTreeSet<String>>> {
        let prio: BTreeMap<(String, u16), u16> = self.used().iter().map(|r| ((r.target.clone(), r.port), r.priority)).collect();
        self.orders
            .iter()
            .map(|order| {
                assert_eq!(order.len(), self.used().len(), "{self:?}: Puppet tried every record once");
                let uniq: BTreeSet<_> = order.iter().collect();
                assert_eq!(uniq.len(), order.len(), "{self:?}: no record tried twice");
                let mut groups: Vec<BTreeSet<String>> = Vec::new();
                let mut last: Option<u16> = None;
                for hp in order {
                    let p = *prio.get(hp).unwrap_or_else(|| panic!("{hp:?} tried but not in the answer: {self:?}"));
                    match last {
                        Some(l) if l == p => groups.last_mut().unwrap().insert(hp.0.clone()),
                        Some(l) => {
                            assert!(l < p, "{self:?}: priorities in Puppet's order go up");
                            groups.push(BTreeSet::from([hp.0.clone()]));
                            true
                        }
                        None => {
                            groups.push(BTreeSet::from([hp.0.clone()]));
                            true
                        }
                    };
                    last = Some(p);
                }
                groups
            })
            .collect()
    }

    /// The priority groups, asserting every repeat gave the same ones.
    pub fn group_sets(&self) -> Vec<BTreeSet<String>> {
        let all = self.groups();
        for g in &all[1..] {
            assert_eq!(g, &all[0], "{self:?}: same groups on every run");
        }
        all[0].clone()
    }

    /// The first master Puppet would try, on every repeat.
    pub fn firsts(&self) -> BTreeSet<String> {
        self.orders.iter().filter_map(|o| o.first().map(|h| h.0.clone())).collect()
    }
}

/// Host sets from string slices, for expected values.
pub fn sets(groups: &[&[&str]]) -> Vec<BTreeSet<String>> {
    groups.iter().map(|g| g.iter().map(|h| h.to_string()).collect()).collect()
}

/// Asks Puppet's own SRV code, through the DNS server at `ns`, for each
/// `DOMAIN:SERVICE` (service: puppet, ca, report, file), `repeat` times.
pub async fn puppet_order(ns: SocketAddr, specs: &[String], repeat: usize) -> Vec<Outcome> {
    let out = tokio::process::Command::new("ruby")
        .arg(script("srv_order.rb"))
        .arg("--nameserver")
        .arg(ns.to_string())
        .arg("--repeat")
        .arg(repeat.to_string())
        .args(specs)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("srv_order.rb finishes in 30 s")
        .expect("ruby runs (install puppet-agent: `make deps`)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "srv_order.rb failed: {}\n{stderr}", out.status);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let res: Vec<Outcome> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}\n{stderr}"))).collect();
    assert_eq!(res.len(), specs.len(), "one result per spec: {stdout}\n{stderr}");
    res
}
