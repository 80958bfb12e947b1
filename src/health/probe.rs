//! One probe task: checks one (master, probe) until cancelled.
//!
//! A *round* of checks starts every `interval` (`fast_interval` while a
//! role is down or unsettled), or at once when the master closes the held
//! connection ([`Check::closed`]). A round runs checks until one passes or
//! the hysteresis has decided:
//!
//! - the first check uses the held connection;
//! - while a published master is failing (after a failure, before `fall`
//!   failures in a row), the next check starts at once, on a fresh
//!   connection: a crash is confirmed by refused connects within
//!   milliseconds, and one lost check is cancelled by the next one;
//! - a check that has not answered by `confirm_after` gets a confirming
//!   check on a fresh connection beside it, and so on every
//!   `confirm_after` (at most `fall` in flight, 2..=4); each fails at its
//!   own deadline ([`Latency`]), and the first pass ends the round.
//!
//! A down master gets one check per round (`rise` decides across rounds).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::board::{self, LastCheck};
use super::check::{self, Check, CheckFactory, CheckOutcome, Probe};
use super::hysteresis::{Hysteresis, Phase};
use super::latency::Latency;
use super::{Ctx, Msg, Timing, Verdict, log_transition};
use crate::input::registry::{Master, MasterKey, Role};

/// What one probe task checks.
pub(crate) struct ProbeSpec {
    pub key: MasterKey,
    pub master: Master,
    pub probe: Probe,
    pub roles: Vec<Role>,
    pub phases: Vec<Phase>,
}

/// A check in flight: it owns its [`Check`] and hands it back when done.
type Running = Pin<Box<dyn Future<Output = Done> + Send>>;

struct Done {
    check: Box<dyn Check>,
    outcome: CheckOutcome,
    latency: Duration,
}

fn start(mut check: Box<dyn Check>, deadline: Duration) -> Running {
    Box::pin(async move {
        let t0 = Instant::now();
        let outcome = match tokio::time::timeout(deadline, check.check()).await {
            Ok(o) => o,
            Err(_) => CheckOutcome::fail(format!("timeout after {}", check::fmt_duration(deadline))),
        };
        Done { check, outcome, latency: t0.elapsed() }
    })
}

/// The first of the running checks to finish (pending while none runs).
async fn next_done(slots: &mut [Option<Running>]) -> Done {
    std::future::poll_fn(|cx| {
        for s in slots.iter_mut() {
            if let Some(f) = s
                && let Poll::Ready(d) = f.as_mut().poll(cx)
            {
                *s = None;
                return Poll::Ready(d);
            }
        }
        Poll::Pending
    })
    .await
}

/// Whether some role is published as up (so worth confirming a failure of).
fn published_up(hs: &[Hysteresis]) -> bool {
    hs.iter().any(|h| matches!(h.phase(), Phase::Up | Phase::Unchecked))
}

/// Whether a published role has failed and not yet gone down: confirm now.
fn confirming(hs: &[Hysteresis]) -> bool {
    hs.iter().any(|h| matches!(h.phase(), Phase::Up | Phase::Unchecked) && h.consecutive_fail() > 0)
}

struct Probing {
    ctx: Arc<Ctx>,
    factory: Arc<dyn CheckFactory>,
    spec: ProbeSpec,
    host: String,
    hs: Vec<Hysteresis>,
    timing: Timing,
}

/// Checks one (master, probe) until cancelled.
pub(crate) async fn run_probe(ctx: Arc<Ctx>, spec: ProbeSpec, factory: Arc<dyn CheckFactory>, timing: Timing, token: CancellationToken) {
    let host = crate::input::names::host_string(&spec.key.host);
    let hs: Vec<Hysteresis> = spec.phases.iter().map(|p| Hysteresis::new(*p)).collect();
    let mut p = Probing { ctx, factory, spec, host, hs, timing };
    let mut main: Option<Box<dyn Check>> = Some(p.factory.make(&p.spec.master, p.spec.probe));
    let mut lat = Latency::new();

    // Unknown and pending states are settled at once (and the applier
    // waits for them at start-up); known ones are spread over their first
    // period so a restart does not check everything at once.
    let settled = p.spec.phases.iter().all(|ph| matches!(ph, Phase::Up | Phase::Down));
    let mut owe_settled = !settled;
    let mut next = Instant::now();
    if settled {
        let period = if p.hs.iter().any(Hysteresis::wants_fast) { p.timing.fast_interval } else { p.timing.interval };
        next += period.mul_f64(rand::rng().random_range(0.0..1.0));
    }
    // When a close of the held connection last turned out harmless (the
    // reconnect passed: the master closes idle connections by itself).
    let mut last_harmless_close: Option<Instant> = None;
    let mut network = p.ctx.network.clone();
    if let Some(n) = network.as_mut() {
        n.mark_unchanged();
    }
    loop {
        let closed = async {
            match main.as_mut() {
                Some(m) => m.closed().await,
                None => std::future::pending().await,
            }
        };
        let network_changed = async {
            match network.as_mut() {
                Some(n) => n.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let woke_by_close = tokio::select! {
            biased;
            _ = token.cancelled() => return,
            _ = tokio::time::sleep_until(next) => None,
            r = closed => Some(r),
            still = network_changed => {
                if !still {
                    // The watch ended: no more announcements.
                    network = None;
                }
                match main.as_mut().and_then(|m| m.unroutable()) {
                    Some(reason) => Some(reason),
                    None => continue,
                }
            }
        };
        if let Some(reason) = &woke_by_close {
            // A master that closes every kept connection at once gets no
            // more than one extra round per interval.
            if last_harmless_close.is_some_and(|t| t.elapsed() < p.timing.interval) {
                continue;
            }
            tracing::debug!(host = p.host, port = p.spec.key.port, reason, "held connection ended; checking at once");
        }
        let started = Instant::now();
        let Some(failed) = p.round(&mut main, &mut lat, &token).await else { return };
        if woke_by_close.is_some() && !failed {
            last_harmless_close = Some(started);
        }
        if owe_settled {
            owe_settled = false;
            let _ = p.ctx.events.send(Msg::Settled);
        }
        let fast = p.hs.iter().any(Hysteresis::wants_fast);
        let period = p.timing.jittered(if fast { p.timing.fast_interval } else { p.timing.interval });
        next = (started + period).max(Instant::now());
    }
}

impl Probing {
    /// One round (see the module doc): whether a check of it failed;
    /// `None` when cancelled.
    async fn round(&mut self, main: &mut Option<Box<dyn Check>>, lat: &mut Latency, token: &CancellationToken) -> Option<bool> {
        let mut failed = false;
        let deadline = lat.deadline(self.timing.timeout);
        let confirm_after = lat.confirm_after(self.timing.timeout);
        let first = main.take().unwrap_or_else(|| self.fresh());
        // Up to `fall` checks in flight (2..=4), so a hang is confirmed
        // `fall` times within one deadline plus (fall - 1) x confirm_after.
        let mut slots: Vec<Option<Running>> = (0..self.timing.fall.clamp(2, 4)).map(|_| None).collect();
        slots[0] = Some(start(first, deadline));
        let mut confirm_at = published_up(&self.hs).then(|| Instant::now() + confirm_after);
        loop {
            if slots.iter().all(Option::is_none) {
                return Some(failed);
            }
            tokio::select! {
                biased;
                _ = token.cancelled() => return None,
                d = next_done(&mut slots) => {
                    self.record(&d.outcome, d.latency);
                    if d.outcome.ok {
                        lat.push(d.latency);
                        *main = Some(d.check);
                        return Some(failed);
                    }
                    failed = true;
                    if main.is_none() {
                        *main = Some(d.check);
                    }
                    if !published_up(&self.hs) {
                        // Decided (down), or nothing to confirm: the rest is moot.
                        return Some(failed);
                    }
                    if confirming(&self.hs) && slots.iter().all(Option::is_none) {
                        slots[0] = Some(start(self.fresh(), deadline));
                        confirm_at = Some(Instant::now() + confirm_after);
                    }
                }
                _ = tokio::time::sleep_until(confirm_at.unwrap_or_else(Instant::now)), if confirm_at.is_some() => {
                    confirm_at = None;
                    if published_up(&self.hs)
                        && let Some(i) = slots.iter().position(Option::is_none)
                    {
                        slots[i] = Some(start(self.fresh(), deadline));
                        // The next one, while a slot is left.
                        if slots.iter().any(Option::is_none) {
                            confirm_at = Some(Instant::now() + confirm_after);
                        }
                    }
                }
            }
        }
    }

    fn fresh(&self) -> Box<dyn Check> {
        self.factory.make(&self.spec.master, self.spec.probe)
    }

    /// Feeds one check result to every role's hysteresis, the board, the
    /// log and (when the published state is to change) the applier.
    fn record(&mut self, outcome: &CheckOutcome, latency: Duration) {
        let ctx = &self.ctx;
        let key = &self.spec.key;
        ctx.board.count_check(outcome.ok);
        let published = ctx.target.published(key, &self.spec.roles);
        let at = SystemTime::now();
        for (i, role) in self.spec.roles.iter().enumerate() {
            let Some(h) = self.hs.get_mut(i) else { continue };
            let t = h.record(outcome.ok, self.timing.rise, self.timing.fall);
            if let Some(t) = t {
                log_transition(&self.host, key.port, *role, t, &outcome.reason);
                if t.changes_health() {
                    ctx.board.count_transition(t.to);
                }
            }
            ctx.board.with(key, *role, |s| {
                if let Some(t) = t {
                    s.state = t.to.as_str();
                    s.since_unix = board::unix_secs(at);
                    s.state_reason = outcome.reason.clone();
                }
                if outcome.ca_fingerprint.is_some() {
                    s.ca_fingerprint = outcome.ca_fingerprint.clone();
                }
                s.consecutive_ok = h.consecutive_ok();
                s.consecutive_fail = h.consecutive_fail();
                s.last = Some(LastCheck {
                    at_unix_ms: at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
                    ok: outcome.ok,
                    reason: outcome.reason.clone(),
                    latency_ms: latency.as_secs_f64() * 1000.0,
                });
            });
            let want = h.phase().health();
            if t.is_some() || published.get(i).is_some_and(|p| *p != want) {
                let _ = ctx.events.send(Msg::Verdict(Verdict::Health { key: key.clone(), role: *role, health: want }));
            }
        }
    }
}
