//! The upgrade plan, DESIGN.md "Upgrade, step by step": one Kubernetes minor per operation
//! (1.33 → 1.35 is two operations, chained by the rollout layer).
//!
//! 1. `Inventory` (agent) then `Preflight` (coordinator): the agent reports what it sees in the
//!    cluster, the coordinator checks it against EKS (versions, insights, PDBs, capacity) and
//!    fails the operation with every blocker named before anything changes.
//! 2. `UpgradeControlPlane`, 3. `UpgradeNodegroups`, 4. `UpgradeAddons` (coordinator, EKS).
//! 5. `Postflight` (agent): every kubelet at the target minor, every Deployment available.
//!
//! An upgrade has no rollback: EKS cannot take a control plane back a minor. Cancelling stops the
//! operation after the step in flight (see `operation::state`).

pub use super::Step;

/// The steps of a one-minor upgrade, in order.
pub const UPGRADE: [Step; 6] = [
    Step::Inventory,
    Step::Preflight,
    Step::UpgradeControlPlane,
    Step::UpgradeNodegroups,
    Step::UpgradeAddons,
    Step::Postflight,
];

#[cfg(test)]
mod tests {
    use super::super::{Plan, ResumeMode, Runner};
    use super::*;

    #[test]
    fn order_runners_and_resume_follow_design() {
        use Runner::*;
        let runners: Vec<Runner> = UPGRADE.iter().map(|s| s.runner()).collect();
        assert_eq!(
            runners,
            [Agent, Coordinator, Coordinator, Coordinator, Coordinator, Agent]
        );
        for (i, s) in UPGRADE.iter().enumerate() {
            assert_eq!(s.plan(), Plan::Upgrade);
            assert_eq!(s.index(), Some(i));
            let want = if s.runner() == Coordinator {
                ResumeMode::Recheck
            } else {
                ResumeMode::ResendSameAttempt
            };
            assert_eq!(s.resume_mode(), want, "{s}");
        }
        assert_eq!(Step::Inventory.next(), Some(Step::Preflight));
        assert_eq!(Step::UpgradeControlPlane.next(), Some(Step::UpgradeNodegroups));
        assert_eq!(Step::Postflight.next(), None);
    }

    #[test]
    fn retries_are_bounded_and_grow() {
        for s in UPGRADE {
            let p = s.retry_policy();
            assert!((2..=10).contains(&p.max_attempts), "{s}");
            assert!(p.backoff(2) >= p.backoff(1), "{s}");
            assert!(p.backoff(u32::MAX) <= p.max_backoff, "{s}");
        }
    }
}
