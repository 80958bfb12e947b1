//! Capacity-aware SRV weights (`policy.weights = "capacity"`): inside each
//! priority group of an answer (one failover tier; the whole site-less
//! pool), weights follow each master's spare JRubies as the health layer
//! measured and smoothed them ([`Capacities`]). Pure, like the policy.
//!
//! - Level = round(10 x spare / most spare in the group), 0..=10; weight =
//!   10 x level, or [`SATURATED_WEIGHT`] for level 0: a saturated master
//!   keeps a small share (Puppet counts weight w as 10w, so 1 against 100
//!   is 1%) and never leaves the answer for being busy. With every master
//!   of the group saturated, all get the same small weight.
//! - Quantising to 11 levels keeps small changes of the figures from
//!   changing the records (and the serial); the figures themselves change
//!   at most once per `policy.weights_period`.
//! - A group in which some master has no fresh figures (a `tcp` check, a
//!   refused or garbled metrics answer, not fetched yet) keeps the
//!   registry weights, all of it: mixing measured and configured weights
//!   would compare unlike things. The CA answer (one record) is left alone.

use crate::health::{Capacities, Capacity};
use crate::input::config::{Config, Weights};
use crate::input::registry::{MasterKey, Role};
use crate::zone::policy::{RoleAnswer, SrvTarget};

/// Levels of spare capacity a weight can express (plus 0 = saturated).
pub const LEVELS: u32 = 10;
/// The weight of a saturated master (no spare JRuby, or all claimed by queued requests).
pub const SATURATED_WEIGHT: u16 = 1;

/// How one record's weight was chosen (for `srvctl explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightWhy {
    /// Registry weights (`policy.weights = "static"`, or the CA answer).
    Static,
    /// From the capacity figures.
    Capacity {
        /// This master's figures.
        capacity: Capacity,
        /// The most spare JRubies in the priority group, thousandths.
        group_max_milli: u32,
        /// 0..=LEVELS.
        level: u32,
    },
    /// Registry weight because these masters of the group have no fresh figures.
    Missing(Vec<MasterKey>),
}

fn key(t: &SrvTarget) -> MasterKey {
    MasterKey { host: (*t.target).clone(), port: t.port }
}

/// The weight and reason of each record of one priority group.
fn group(records: &[SrvTarget], caps: &Capacities) -> Vec<(u16, WeightWhy)> {
    let figures: Vec<Option<&Capacity>> = records.iter().map(|t| caps.get(&key(t))).collect();
    let missing: Vec<MasterKey> = records.iter().zip(&figures).filter(|(_, f)| f.is_none()).map(|(t, _)| key(t)).collect();
    if !missing.is_empty() {
        return records.iter().map(|t| (t.weight, WeightWhy::Missing(missing.clone()))).collect();
    }
    let max = figures.iter().flatten().map(|c| c.spare_milli).max().unwrap_or(0);
    figures
        .iter()
        .flatten()
        .map(|c| {
            let level = if max == 0 {
                0
            } else {
                // round(LEVELS * spare / max) in integers, without overflow.
                let l = (u64::from(LEVELS) * u64::from(c.spare_milli) * 2 + u64::from(max)) / (2 * u64::from(max));
                u32::try_from(l).unwrap_or(LEVELS).min(LEVELS)
            };
            let weight = if level == 0 { SATURATED_WEIGHT } else { u16::try_from(level * 10).unwrap_or(u16::MAX) };
            (weight, WeightWhy::Capacity { capacity: **c, group_max_milli: max, level })
        })
        .collect()
}

/// The weight and reason of every record of `a`, in record order.
pub fn explain(config: &Config, a: &RoleAnswer, caps: &Capacities) -> Vec<(u16, WeightWhy)> {
    if config.policy.weights == Weights::Static || a.role == Role::Ca {
        return a.records.iter().map(|t| (t.weight, WeightWhy::Static)).collect();
    }
    let mut out = Vec::with_capacity(a.records.len());
    for g in a.records.chunk_by(|x, y| x.priority == y.priority) {
        out.extend(group(g, caps));
    }
    out
}

/// Sets the weights of `answer`'s records from `caps` when
/// `policy.weights = "capacity"` (no-op otherwise).
pub fn apply(config: &Config, answer: &mut RoleAnswer, caps: &Capacities) {
    if config.policy.weights == Weights::Static {
        return;
    }
    let ws = explain(config, answer, caps);
    for (t, (w, _)) in answer.records.iter_mut().zip(ws) {
        t.weight = w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn rec(host: &str, priority: u16, weight: u16) -> SrvTarget {
        let n = hickory_proto::rr::Name::from_ascii(host).unwrap();
        SrvTarget { priority, weight, port: 8140, target: Arc::new(n) }
    }
    fn cap(spare: f64) -> Capacity {
        Capacity { spare_milli: (spare * 1000.0) as u32, total: 8, average_wait_ms: 0 }
    }
    fn caps(list: &[(&str, f64)]) -> Capacities {
        list.iter().map(|(h, s)| (key(&rec(h, 0, 0)), cap(*s))).collect()
    }

    #[test]
    fn levels_follow_spare_capacity_per_group() {
        let recs = [rec("a.x.", 10, 5), rec("b.x.", 10, 5), rec("c.x.", 10, 5), rec("d.x.", 20, 5)];
        let c = caps(&[("a.x.", 8.0), ("b.x.", 4.0), ("c.x.", 0.0), ("d.x.", 0.3)]);
        let ws: Vec<u16> = recs.chunk_by(|x, y| x.priority == y.priority).flat_map(|g| group(g, &c)).map(|(w, _)| w).collect();
        // a: most spare -> 100; b: half -> 50; c: saturated -> 1 (never 0);
        // d is alone in its tier: the most spare of its group.
        assert_eq!(ws, vec![100, 50, SATURATED_WEIGHT, 100]);
        // Small changes do not move the weights (quantised): 7.7 of 8 is still level 10.
        let c2 = caps(&[("a.x.", 7.7), ("b.x.", 4.1), ("c.x.", 0.4), ("d.x.", 0.3)]);
        let ws2: Vec<u16> = group(&recs[..3], &c2).into_iter().map(|(w, _)| w).collect();
        assert_eq!(ws2, vec![100, 50, 10]);
        let c3 = caps(&[("a.x.", 7.9), ("b.x.", 4.1), ("c.x.", 0.1)]);
        assert_eq!(group(&recs[..3], &c3).into_iter().map(|(w, _)| w).collect::<Vec<_>>(), vec![100, 50, SATURATED_WEIGHT]);
    }

    #[test]
    fn all_saturated_and_missing_figures() {
        let recs = [rec("a.x.", 10, 7), rec("b.x.", 10, 3)];
        let all0 = caps(&[("a.x.", 0.0), ("b.x.", 0.0)]);
        assert!(group(&recs, &all0).iter().all(|(w, _)| *w == SATURATED_WEIGHT));
        let one = caps(&[("a.x.", 5.0)]);
        let g = group(&recs, &one);
        assert_eq!(g.iter().map(|(w, _)| *w).collect::<Vec<_>>(), vec![7, 3], "registry weights when a figure is missing");
        assert!(matches!(&g[0].1, WeightWhy::Missing(m) if m.len() == 1 && m[0].host.to_ascii() == "b.x."));
        assert_eq!(group(&recs, &Capacities::new()).iter().map(|(w, _)| *w).collect::<Vec<_>>(), vec![7, 3]);
    }
}
