//! Pacing the polls of EKS updates by what the fleet has seen them take. Once a few updates of a
//! kind have ended, a new one is looked at once early (to catch a quick failure), then not again
//! until 80% of the recent median duration of its kind (per node batch for node groups) has
//! passed; the usual backoff follows. With the default backoff (5 s doubling to 60 s), an
//! 8-minute control-plane update then costs about 7 DescribeUpdate calls instead of 12, a 50-minute
//! node group update about 15 instead of ~55: the API budget that matters across thousands of
//! clusters sharing one account's EKS quota.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Durations kept per kind (the most recent).
const KEEP: usize = 32;
/// Durations seen before pacing starts.
const MIN_SAMPLES: usize = 3;
/// Share of the median duration waited before the paced poll.
const SHARE: f64 = 0.8;

/// Recent durations of EKS updates that ended `Successful`, per kind; shared by every cluster's
/// steps (one per coordinator).
#[derive(Debug, Default)]
pub struct UpdateDurations {
    seen: Mutex<HashMap<String, VecDeque<Duration>>>,
}

impl UpdateDurations {
    /// Notes that an update of `kind` took `per_unit` (its duration over its units of work).
    pub fn record(&self, kind: &str, per_unit: Duration) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let d = seen.entry(kind.to_string()).or_default();
        if d.len() == KEEP {
            d.pop_front();
        }
        d.push_back(per_unit);
    }

    /// The median duration per unit of `kind`, once [`MIN_SAMPLES`] have been seen.
    pub fn median(&self, kind: &str) -> Option<Duration> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let d = seen.get(kind).filter(|d| d.len() >= MIN_SAMPLES)?;
        let mut sorted: Vec<Duration> = d.iter().copied().collect();
        sorted.sort_unstable();
        Some(sorted[sorted.len() / 2])
    }

    /// How long after an update of `kind` with `units` of work was issued to poll it again
    /// (after the early look): 80% of what such updates usually take. `None` until enough are
    /// known.
    pub fn paced_poll(&self, kind: &str, units: u32) -> Option<Duration> {
        self.median(kind)
            .map(|m| m.mul_f64(SHARE * f64::from(units.max(1))))
    }
}

/// An update this step issued, for pacing its polls and learning from its end.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Its kind: `control-plane`, `nodegroup-batch`, `addon <name>`.
    pub kind: String,
    /// Units of work (node replacement batches for a node group; 1 otherwise).
    pub units: u32,
    /// When it was issued.
    pub at: tokio::time::Instant,
}

impl Issued {
    /// An update of `kind` with `units` of work, issued now.
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
    fn pacing_starts_after_three_durations_at_eighty_percent_of_the_median_per_unit() {
        let d = UpdateDurations::default();
        let s = Duration::from_secs;
        d.record("control-plane", s(500));
        d.record("control-plane", s(480));
        assert_eq!(d.paced_poll("control-plane", 1), None);
        d.record("control-plane", s(900));
        assert_eq!(d.median("control-plane"), Some(s(500)));
        assert_eq!(d.paced_poll("control-plane", 1), Some(s(400)));
        assert_eq!(d.paced_poll("nodegroup-batch", 4), None);
        for _ in 0..3 {
            d.record("nodegroup-batch", s(300));
        }
        assert_eq!(d.paced_poll("nodegroup-batch", 4), Some(s(960)));
        // Only the most recent durations count.
        for _ in 0..KEEP {
            d.record("control-plane", s(60));
        }
        assert_eq!(d.median("control-plane"), Some(s(60)));
    }
}
