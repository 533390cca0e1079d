//! Pacing the polls of long EKS work by what the fleet has seen it take: updates (control plane,
//! node group per replacement batch, add-ons) and, in migrations, node group creation and
//! deletion and the old Auto Scaling group's instances terminating. Once a few of a kind have
//! ended, a new one is looked at once early (to catch a quick failure), then not again until one
//! backoff step before the short end of what such work took (the 10th percentile of the last
//! 32); the usual backoff follows. Work that takes about the same time every time then costs
//! three calls (early look, just before, at the end) however long it runs: with the default
//! backoff (5 s doubling to 60 s), 3 DescribeUpdate calls for an 8-minute control-plane update
//! instead of 12; the API budget that matters across thousands of clusters sharing one account's
//! EKS quota.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use crate::eks::{EksError, WaitOptions};

/// Durations kept per kind (the most recent).
const KEEP: usize = 32;
/// Durations seen before pacing starts.
const MIN_SAMPLES: usize = 3;

/// Recent durations of EKS work that ended as asked, per kind; shared by every cluster's steps
/// (one per coordinator).
#[derive(Debug, Default)]
pub struct UpdateDurations {
    seen: Mutex<HashMap<String, VecDeque<Duration>>>,
}

impl UpdateDurations {
    /// Notes that work of `kind` took `per_unit` (its duration over its units of work).
    pub fn record(&self, kind: &str, per_unit: Duration) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let d = seen.entry(kind.to_string()).or_default();
        if d.len() == KEEP {
            d.pop_front();
        }
        d.push_back(per_unit);
    }

    /// Notes that `issued` has just ended as asked.
    pub fn ended(&self, issued: &Issued) {
        self.record(&issued.kind, issued.at.elapsed() / issued.units);
    }

    /// The short end of the recent durations per unit of `kind` (their 10th percentile; the
    /// shortest of fewer than ten), once [`MIN_SAMPLES`] have been seen.
    pub fn low(&self, kind: &str) -> Option<Duration> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let d = seen.get(kind).filter(|d| d.len() >= MIN_SAMPLES)?;
        let mut sorted: Vec<Duration> = d.iter().copied().collect();
        sorted.sort_unstable();
        Some(sorted[sorted.len() / 10])
    }

    /// How long after work of `kind` with `units` of work was issued to poll it again (after the
    /// early look): `step` before the short end of what such work takes. `None` until enough
    /// are known.
    pub fn paced_poll(&self, kind: &str, units: u32, step: Duration) -> Option<Duration> {
        self.low(kind)
            .map(|low| (low * units.max(1)).saturating_sub(step))
    }

    /// Waits out the quiet part of work `issued` when the fleet knows how long such work takes:
    /// one `look` after the backoff's first delay (a quick failure is seen at once), then a
    /// sleep until [`UpdateDurations::paced_poll`] (at most half of `wait.timeout`). Returns what
    /// `look` saw if the work already ended (`Some`); `None` to go on polling as usual, at once.
    /// A retryable error of the look is let pass (the polls after it will see it again).
    pub async fn pace<T, Fut>(
        &self,
        issued: &Issued,
        wait: &WaitOptions,
        look: impl FnOnce() -> Fut,
    ) -> Result<Option<T>, EksError>
    where
        Fut: Future<Output = Result<Option<T>, EksError>>,
    {
        let early = wait.backoff.initial;
        let Some(paced) = self.paced_poll(&issued.kind, issued.units, early) else {
            return Ok(None);
        };
        let paced = paced.min(wait.timeout / 2);
        if paced <= early {
            return Ok(None);
        }
        tokio::time::sleep_until(issued.at + early).await;
        match look().await {
            Ok(Some(end)) => return Ok(Some(end)),
            Ok(None) => {}
            Err(e) if e.retryable() => {}
            Err(e) => return Err(e),
        }
        tracing::debug!(kind = %issued.kind, after = ?paced, "next poll near the usual end of such work");
        tokio::time::sleep_until(issued.at + paced).await;
        Ok(None)
    }
}

/// [`UpdateDurations::pace`] for work this attempt `issued`, when there is such work and a
/// fleet's durations to pace it by; `Ok(None)` at once otherwise (an update adopted after a
/// restart, or a group that already existed, is not paced).
pub async fn pace_issued<T, Fut>(
    durations: Option<&UpdateDurations>,
    issued: Option<&Issued>,
    wait: &WaitOptions,
    look: impl FnOnce() -> Fut,
) -> Result<Option<T>, EksError>
where
    Fut: Future<Output = Result<Option<T>, EksError>>,
{
    match (durations, issued) {
        (Some(d), Some(i)) => d.pace(i, wait, look).await,
        _ => Ok(None),
    }
}

/// [`UpdateDurations::ended`] for work this attempt `issued`, when there is such work and a
/// fleet's durations to learn it into (nothing adopted is learnt from).
pub fn learn(durations: Option<&UpdateDurations>, issued: Option<&Issued>) {
    if let (Some(d), Some(i)) = (durations, issued) {
        d.ended(i);
    }
}

/// Work a step issued, for pacing its polls and learning from its end.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Its kind: `control-plane`, `nodegroup-batch`, `addon <name>`, `nodegroup-create`,
    /// `nodegroup-delete`, `asg-instances-terminate`.
    pub kind: String,
    /// Units of work (node replacement batches for a node group update; 1 otherwise).
    pub units: u32,
    /// When it was issued.
    pub at: tokio::time::Instant,
}

impl Issued {
    /// Work of `kind` with `units` of work, issued now.
    pub fn now(kind: impl Into<String>, units: u32) -> Issued {
        Issued {
            kind: kind.into(),
            units: units.max(1),
            at: tokio::time::Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_starts_after_three_durations_one_step_before_the_short_end_per_unit() {
        let d = UpdateDurations::default();
        let s = Duration::from_secs;
        d.record("control-plane", s(500));
        d.record("control-plane", s(480));
        assert_eq!(d.paced_poll("control-plane", 1, s(5)), None);
        d.record("control-plane", s(900));
        assert_eq!(d.low("control-plane"), Some(s(480)));
        assert_eq!(d.paced_poll("control-plane", 1, s(5)), Some(s(475)));
        assert_eq!(d.paced_poll("nodegroup-batch", 4, s(5)), None);
        for _ in 0..3 {
            d.record("nodegroup-batch", s(300));
        }
        assert_eq!(d.paced_poll("nodegroup-batch", 4, s(5)), Some(s(1195)));
        // The 10th percentile of twenty: the third shortest.
        for i in 1..=20 {
            d.record("addon coredns", s(i));
        }
        assert_eq!(d.low("addon coredns"), Some(s(3)));
        // Only the most recent durations count.
        for _ in 0..KEEP {
            d.record("control-plane", s(60));
        }
        assert_eq!(d.low("control-plane"), Some(s(60)));
    }
}
