//! Reconnect delays: exponential backoff with full jitter (a uniformly random delay between zero
//! and `min(cap, initial × 2^failures)`), reset after a healthy session, so a thousand agents
//! that lose the coordinator at once do not come back in lockstep.

use std::time::Duration;

use rand::Rng;

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The ceiling of the first delay.
    pub initial: Duration,
    /// The largest ceiling (default 30 s).
    pub max: Duration,
    /// A session that stayed up this long was healthy: the next failure starts from `initial`.
    pub healthy_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(30),
        }
    }
}

/// The delays of one agent's reconnects.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
}

impl Backoff {
    /// No failures yet.
    pub fn new(config: BackoffConfig) -> Backoff {
        Backoff { config, failures: 0 }
    }

    /// The ceiling of the next delay: `min(max, initial × 2^failures)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.config
            .initial
            .checked_mul(factor)
            .unwrap_or(self.config.max)
            .min(self.config.max)
    }

    /// The next delay, drawn uniformly from `[0, ceiling]` with `rng`; counts one failure.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.random_range(0..=millis))
    }

    /// Records how long the session that just ended lasted: past `healthy_after`, the next delay
    /// starts again from `initial`.
    pub fn session_ended(&mut self, lasted: Duration) {
        if lasted >= self.config.healthy_after {
            self.failures = 0;
        }
    }

    /// Failures counted since the last healthy session.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn config() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::new(config());
        let mut rng = StdRng::seed_from_u64(7);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay(&mut rng);
        }
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]
        );
        // Far past the cap nothing overflows.
        for _ in 0..100 {
            b.next_delay(&mut rng);
        }
        assert_eq!(b.ceiling(), Duration::from_secs(30));
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut b = Backoff::new(config());
            for _ in 0..4 {
                b.next_delay(&mut rng);
            }
            let ceiling = b.ceiling();
            let d = b.next_delay(&mut rng);
            assert!(d <= ceiling, "{d:?} > {ceiling:?}");
            seen.insert(d.as_millis() / 1000);
        }
        // Full jitter spreads the fifth delay over [0, 8 s]: every whole second below 8 is hit.
        assert!((0..8).all(|s| seen.contains(&s)), "{seen:?}");
    }

    #[test]
    fn a_healthy_session_resets_and_a_short_one_does_not() {
        let mut b = Backoff::new(config());
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..5 {
            b.next_delay(&mut rng);
        }
        b.session_ended(Duration::from_secs(2));
        assert_eq!(b.failures(), 5);
        b.session_ended(Duration::from_secs(31));
        assert_eq!(b.failures(), 0);
        assert_eq!(b.ceiling(), Duration::from_millis(500));
    }
}
