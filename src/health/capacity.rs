//! JRuby capacity of each master, from Puppet Server's status API
//! (`GET /status/v1/services/jruby-metrics?level=debug`): the facts behind
//! capacity-aware SRV weights (`policy.weights = "capacity"`) and
//! `srvctl drain --wait-idle`.
//!
//! A metrics task per master (only while capacity weights are on or the
//! master is drained) fetches the figures every [`poll_interval`] over its
//! own kept-alive connection, and keeps on the [`super::HealthBoard`] the
//! last figures and an exponentially weighted moving average of the spare
//! JRubies (free minus queued requests). The supervisor hands the smoothed
//! [`Capacities`] to the zone layer at most once per `policy.weights_period`,
//! so weights (and the SOA serial) change at most that often; the zone
//! layer's policy turns them into weights.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::input::registry::MasterKey;

/// Where Puppet Server serves its JRuby pool figures.
pub const METRICS_PATH: &str = "/status/v1/services/jruby-metrics?level=debug";

/// Weight of a new sample in the moving average of spare JRubies: with a
/// sample every `weights_period / 6`, a step change is ~88% through after
/// one period (1 - 0.7^6).
pub const EWMA_ALPHA: f64 = 0.3;

/// How often a drained master's figures are fetched (for `drain --wait-idle`).
pub const DRAIN_POLL: Duration = Duration::from_secs(1);

/// How often figures are fetched for capacity weights: six samples per
/// `weights_period`, between 1 and 10 seconds apart (one small request per
/// master; the status checks run every `health.interval`).
pub fn poll_interval(weights_period: Duration) -> Duration {
    (weights_period / 6).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// Figures older than this many poll intervals are not used for weights.
pub const STALE_AFTER_POLLS: u32 = 3;

/// One jruby-metrics answer, reduced to what srvd uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct JrubyMetrics {
    /// `num-jrubies`: the size of the JRuby pool.
    pub total: u32,
    /// `num-free-jrubies`: instances idle right now.
    pub free: u32,
    /// Instances lent to a request right now (`num-jrubies - num-free-jrubies`):
    /// 0 means no agent run (catalog compilation, report, file request) is in progress.
    pub borrowed: u32,
    /// Requests waiting for an instance right now (`requested-instances`).
    pub queued: u32,
    /// `average-wait-time`: Puppet Server's average wait for an instance since it started, ms.
    pub average_wait_ms: f64,
}

/// Why a jruby-metrics answer cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// The body is not JSON.
    #[error("jruby-metrics: the answer is not JSON")]
    NotJson,
    /// No `status.experimental.metrics` or `status.metrics` object.
    #[error("jruby-metrics: no status.experimental.metrics in the answer (level=debug refused?)")]
    NoMetrics,
    /// A field is missing or not a count.
    #[error("jruby-metrics: {0} is missing or not a whole number")]
    BadField(&'static str),
    /// More free instances than instances.
    #[error("jruby-metrics: num-free-jrubies {free} exceeds num-jrubies {total}")]
    Inconsistent {
        /// num-free-jrubies
        free: u64,
        /// num-jrubies
        total: u64,
    },
}

fn count(m: &Value, key: &'static str) -> Result<u32, MetricsError> {
    m.get(key).and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()).ok_or(MetricsError::BadField(key))
}

impl JrubyMetrics {
    /// Parses Puppet Server's answer: the figures are in
    /// `status.experimental.metrics` (Puppet Server 5-7) or `status.metrics`.
    pub fn parse(body: &[u8]) -> Result<JrubyMetrics, MetricsError> {
        let v: Value = serde_json::from_slice(body).map_err(|_| MetricsError::NotJson)?;
        let status = v.get("status");
        let m = status
            .and_then(|s| s.get("experimental"))
            .and_then(|e| e.get("metrics"))
            .or_else(|| status.and_then(|s| s.get("metrics")))
            .filter(|m| m.is_object())
            .ok_or(MetricsError::NoMetrics)?;
        let total = count(m, "num-jrubies")?;
        let free = count(m, "num-free-jrubies")?;
        let borrowed = total.checked_sub(free).ok_or(MetricsError::Inconsistent { free: free.into(), total: total.into() })?;
        let queued = match m.get("requested-instances") {
            Some(Value::Array(a)) => u32::try_from(a.len()).unwrap_or(u32::MAX),
            _ => 0,
        };
        let average_wait_ms = m.get("average-wait-time").and_then(Value::as_f64).filter(|w| w.is_finite() && *w >= 0.0).unwrap_or(0.0);
        Ok(JrubyMetrics { total, free, borrowed, queued, average_wait_ms })
    }

    /// Spare instances: free ones not claimed by a waiting request.
    pub fn spare(&self) -> u32 {
        self.free.saturating_sub(self.queued)
    }
}

/// What the checker knows of one master's JRubies (on the board).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JrubyStatus {
    /// The last figures fetched, if any.
    pub last: Option<JrubyMetrics>,
    /// When `last` was fetched, unix milliseconds.
    pub at_unix_ms: u64,
    /// The last fetch failed: why (the last figures are kept, with their time).
    pub error: Option<String>,
    /// When the last fetch (good or not) finished, unix milliseconds.
    pub tried_unix_ms: u64,
    /// Moving average of spare JRubies ([`EWMA_ALPHA`]); `None` before the first figures.
    pub spare_avg: Option<f64>,
    /// Figures fetched since the task started.
    pub samples: u64,
}

impl JrubyStatus {
    pub(crate) fn new() -> JrubyStatus {
        JrubyStatus { last: None, at_unix_ms: 0, error: None, tried_unix_ms: 0, spare_avg: None, samples: 0 }
    }

    /// Records one fetch.
    pub(crate) fn record(&mut self, r: Result<JrubyMetrics, String>, now_ms: u64) {
        self.tried_unix_ms = now_ms;
        match r {
            Ok(m) => {
                let x = f64::from(m.spare());
                self.spare_avg = Some(match self.spare_avg {
                    Some(avg) => avg + EWMA_ALPHA * (x - avg),
                    None => x,
                });
                self.last = Some(m);
                self.at_unix_ms = now_ms;
                self.error = None;
                self.samples = self.samples.saturating_add(1);
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// The smoothed figures for the weights, when fresh (fetched within `stale`, last fetch good).
    pub fn capacity(&self, now_ms: u64, stale: Duration) -> Option<Capacity> {
        let m = self.last?;
        let avg = self.spare_avg?;
        let age = now_ms.saturating_sub(self.at_unix_ms);
        if self.error.is_some() || u128::from(age) > stale.as_millis() {
            return None;
        }
        // Milli-JRubies: whole numbers compare exactly (a change of
        // inputs is what triggers a recomputation).
        let spare_milli = (avg * 1000.0).round().clamp(0.0, f64::from(u32::MAX)) as u32;
        Some(Capacity { spare_milli, total: m.total, average_wait_ms: m.average_wait_ms.round().clamp(0.0, f64::from(u32::MAX)) as u32 })
    }
}

/// One master's smoothed JRuby capacity, as handed to the zone layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Capacity {
    /// Moving average of spare JRubies (free minus queued), in thousandths.
    pub spare_milli: u32,
    /// The pool size (`num-jrubies`).
    pub total: u32,
    /// Puppet Server's average wait for a JRuby, ms (shown, not weighed).
    pub average_wait_ms: u32,
}

/// The capacity of every master with fresh figures.
pub type Capacities = BTreeMap<MasterKey, Capacity>;

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = r#"{"service_version":"7.9.5","service_status_version":1,"detail_level":"debug","state":"running","status":{"experimental":{"jruby-pool-lock-status":{"current-state":":not-in-use","last-change-time":"2026-12-03T15:03:31.893Z"},"metrics":{"average-lock-wait-time":0,"num-free-jrubies":1,"borrow-count":0,"average-requested-jrubies":0.0,"borrow-timeout-count":0,"return-count":0,"borrow-timers":{"total":{"count":0,"mean":0,"max":0,"rate":0.0}},"borrow-retry-count":0,"borrowed-instances":[],"average-borrow-time":0,"num-jrubies":1,"requested-count":0,"queue-limit-hit-rate":0.0,"average-lock-held-time":0,"requested-instances":[],"queue-limit-hit-count":0,"average-free-jrubies":0.9999999999999999,"num-pool-locks":0,"average-wait-time":0}}},"active_alerts":[],"service_name":"jruby-metrics"}"#;

    #[test]
    fn parses_puppetserver_7_answer() {
        // Captured from Debian 12's puppetserver 7.9.5.
        let m = JrubyMetrics::parse(REAL.as_bytes()).unwrap();
        assert_eq!(m, JrubyMetrics { total: 1, free: 1, borrowed: 0, queued: 0, average_wait_ms: 0.0 });
    }

    #[test]
    fn parses_plain_metrics_and_queue() {
        let body =
            r#"{"status":{"metrics":{"num-jrubies":8,"num-free-jrubies":2,"requested-instances":[{},{},{}],"average-wait-time":12.5}}}"#;
        let m = JrubyMetrics::parse(body.as_bytes()).unwrap();
        assert_eq!((m.total, m.free, m.borrowed, m.queued, m.spare()), (8, 2, 6, 3, 0));
        assert_eq!(m.average_wait_ms, 12.5);
    }

    #[test]
    fn hostile_answers_are_errors() {
        let cases: &[(&str, MetricsError)] = &[
            ("", MetricsError::NotJson),
            ("<html>", MetricsError::NotJson),
            ("[]", MetricsError::NoMetrics),
            (r#"{"status":"running"}"#, MetricsError::NoMetrics),
            (r#"{"status":{"experimental":{"metrics":[]}}}"#, MetricsError::NoMetrics),
            (r#"{"status":{"metrics":{"num-jrubies":4}}}"#, MetricsError::BadField("num-free-jrubies")),
            (r#"{"status":{"metrics":{"num-jrubies":-1,"num-free-jrubies":0}}}"#, MetricsError::BadField("num-jrubies")),
            (r#"{"status":{"metrics":{"num-jrubies":1e300,"num-free-jrubies":0}}}"#, MetricsError::BadField("num-jrubies")),
            (r#"{"status":{"metrics":{"num-jrubies":99999999999,"num-free-jrubies":0}}}"#, MetricsError::BadField("num-jrubies")),
            (r#"{"status":{"metrics":{"num-jrubies":2,"num-free-jrubies":3}}}"#, MetricsError::Inconsistent { free: 3, total: 2 }),
        ];
        for (body, want) in cases {
            assert_eq!(JrubyMetrics::parse(body.as_bytes()).as_ref(), Err(want), "{body}");
        }
    }

    #[test]
    fn smoothing_and_staleness() {
        let m = |free| Ok(JrubyMetrics { total: 8, free, borrowed: 8 - free, queued: 0, average_wait_ms: 0.0 });
        let mut s = JrubyStatus::new();
        s.record(m(8), 1_000);
        assert_eq!(s.capacity(1_000, Duration::from_secs(3)).unwrap().spare_milli, 8_000);
        s.record(m(0), 2_000);
        // 8 + 0.3 * (0 - 8) = 5.6
        assert_eq!(s.capacity(2_000, Duration::from_secs(3)).unwrap().spare_milli, 5_600);
        assert!(s.capacity(5_001, Duration::from_secs(3)).is_none(), "stale figures are not used");
        s.record(Err("HTTP 403".into()), 2_500);
        assert!(s.capacity(2_500, Duration::from_secs(3)).is_none(), "a failing fetch withdraws the figures");
        assert_eq!(s.last.unwrap().free, 0, "the last figures stay visible");
        assert_eq!(poll_interval(Duration::from_secs(60)), Duration::from_secs(10));
        assert_eq!(poll_interval(Duration::from_secs(1)), Duration::from_secs(1));
    }
}
