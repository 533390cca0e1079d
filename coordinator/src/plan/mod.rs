//! Step plans: the ordered steps of an operation, who runs each, how each is retried, and how
//! each is picked up again after the coordinator restarts.
//!
//! There are two plans ([`Plan`]): a migration ([`MIGRATION`], DESIGN.md "Migration, step by
//! step") and a one-minor Kubernetes upgrade ([`UPGRADE`], "Upgrade, step by step"). Their steps
//! share one [`Step`] enum, so the operation state machine, the store and the engine handle one
//! type; every step belongs to exactly one plan ([`Step::plan`]).

pub mod migration;
pub mod upgrade;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use migration::MIGRATION;
pub use upgrade::UPGRADE;

/// Who runs a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Runner {
    /// The coordinator itself, against the EKS and Auto Scaling APIs.
    Coordinator,
    /// The in-cluster agent, sent a `RunStep` over its stream.
    Agent,
}

/// How an in-flight step is picked up again after a coordinator restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResumeMode {
    /// Send the same `RunStep` with the same attempt: the agent deduplicates by
    /// (operation, step, attempt) and either keeps running it or re-sends its result.
    ResendSameAttempt,
    /// The step was started but its end was not recorded: look at the world first (does the
    /// node group exist? is the ASG at 0? is a version update already in progress?) and only
    /// issue what is still missing.
    Recheck,
}

/// Which kind of work an operation does: the plan its steps come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Plan {
    /// Move every workload from a self-managed node group to a new managed one ([`MIGRATION`]).
    Migration,
    /// Upgrade Kubernetes by one minor: control plane, managed node groups, add-ons
    /// ([`UPGRADE`]). Hops over several minors are several operations.
    Upgrade,
}

impl Plan {
    /// The forward steps, in order.
    pub fn steps(self) -> &'static [Step] {
        match self {
            Plan::Migration => &MIGRATION,
            Plan::Upgrade => &UPGRADE,
        }
    }

    /// The first step.
    pub fn first(self) -> Step {
        self.steps()[0]
    }

    /// Lower-case name for messages: `migration`, `upgrade`.
    pub fn name(self) -> &'static str {
        match self {
            Plan::Migration => "migration",
            Plan::Upgrade => "upgrade",
        }
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One step of a migration (forward or rollback) or of an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Step {
    /// Migration 1. Create the managed node group from the template (coordinator, EKS).
    CreateManagedNodegroup,
    /// Migration 2. The new group's nodes are Ready and schedulable (agent).
    WaitNodesReady,
    /// Migration 3. Old nodes get `NoSchedule` (agent).
    Taint,
    /// Migration 4. Deployments on old nodes scaled up by the surge; originals recorded (agent).
    SurgeScale,
    /// Migration 5. Every surged Deployment has its ready replicas on new nodes (agent).
    VerifyReady,
    /// Migration 6. Old nodes cordoned and drained through the Eviction API (agent).
    Drain,
    /// Migration 7. The self-managed group's ASG scaled to 0, then the group deleted
    /// (coordinator); only after the drain reported no evictable pods left on it.
    RemoveSelfManagedNodegroup,
    /// Migration 8. Replicas and HPA `minReplicas` back to what was recorded (agent).
    RestoreScale,
    /// Migration rollback: untaint, uncordon, restore scale (agent).
    Rollback,
    /// Migration rollback, when asked: delete the new managed group (coordinator).
    DeleteManagedNodegroup,
    /// Upgrade 1a. The agent's inventory (`RunStep` Inventory): kubelet versions per node group,
    /// self-managed groups, PodDisruptionBudgets that allow no disruption (agent, read-only).
    Inventory,
    /// Upgrade 1b. Preflight against EKS and the inventory just taken: versions, insights,
    /// blockers (coordinator, read-only). Blockers fail the operation before anything changes.
    Preflight,
    /// Upgrade 2. UpdateClusterVersion, polled with DescribeUpdate to Successful or Failed
    /// (coordinator). Cannot be rolled back.
    UpgradeControlPlane,
    /// Upgrade 3. UpdateNodegroupVersion per managed group, one after another, each polled to
    /// done (coordinator).
    UpgradeNodegroups,
    /// Upgrade 4. Every managed add-on to the default version for the new minor (coordinator).
    UpgradeAddons,
    /// Upgrade 5. Every kubelet at the target minor, every Deployment available (agent).
    Postflight,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// How a step is retried after a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_backoff: Duration,
    /// Upper bound on any wait.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The wait after attempt `attempt` (1-based) failed: `initial_backoff * 2^(attempt-1)`,
    /// capped at `max_backoff`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(20);
        self.initial_backoff
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// Whether another attempt is allowed after attempt `attempt` failed.
    pub fn allows_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

impl Step {
    /// The plan this step belongs to (the migration's rollback steps belong to
    /// [`Plan::Migration`]).
    pub fn plan(self) -> Plan {
        match self {
            Step::CreateManagedNodegroup
            | Step::WaitNodesReady
            | Step::Taint
            | Step::SurgeScale
            | Step::VerifyReady
            | Step::Drain
            | Step::RemoveSelfManagedNodegroup
            | Step::RestoreScale
            | Step::Rollback
            | Step::DeleteManagedNodegroup => Plan::Migration,
            Step::Inventory
            | Step::Preflight
            | Step::UpgradeControlPlane
            | Step::UpgradeNodegroups
            | Step::UpgradeAddons
            | Step::Postflight => Plan::Upgrade,
        }
    }

    /// Who runs this step.
    pub fn runner(self) -> Runner {
        match self {
            Step::CreateManagedNodegroup
            | Step::RemoveSelfManagedNodegroup
            | Step::DeleteManagedNodegroup
            | Step::Preflight
            | Step::UpgradeControlPlane
            | Step::UpgradeNodegroups
            | Step::UpgradeAddons => Runner::Coordinator,
            Step::WaitNodesReady
            | Step::Taint
            | Step::SurgeScale
            | Step::VerifyReady
            | Step::Drain
            | Step::RestoreScale
            | Step::Rollback
            | Step::Inventory
            | Step::Postflight => Runner::Agent,
        }
    }

    /// How this step is picked up again after a restart. Every step is idempotent; coordinator
    /// steps are re-checked rather than re-issued blindly.
    pub fn resume_mode(self) -> ResumeMode {
        match self.runner() {
            Runner::Coordinator => ResumeMode::Recheck,
            Runner::Agent => ResumeMode::ResendSameAttempt,
        }
    }

    /// Retry policy of this step.
    pub fn retry_policy(self) -> RetryPolicy {
        let p = |max_attempts, initial: u64, max: u64| RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_secs(initial),
            max_backoff: Duration::from_secs(max),
        };
        match self {
            Step::CreateManagedNodegroup => p(3, 30, 300),
            Step::WaitNodesReady => p(5, 30, 300),
            Step::Taint => p(5, 10, 120),
            Step::SurgeScale => p(5, 10, 120),
            Step::VerifyReady => p(5, 30, 300),
            Step::Drain => p(5, 60, 600),
            Step::RemoveSelfManagedNodegroup => p(5, 30, 300),
            // The end state must be restored: try hard.
            Step::RestoreScale => p(10, 10, 300),
            Step::Rollback => p(10, 10, 300),
            Step::DeleteManagedNodegroup => p(5, 30, 300),
            // Read-only: cheap to repeat.
            Step::Inventory => p(5, 10, 120),
            // Blockers are not retryable; this covers throttling and transport errors.
            Step::Preflight => p(5, 15, 300),
            // A version update takes minutes to tens of minutes; a retry re-checks what EKS
            // already has in progress before issuing anything.
            Step::UpgradeControlPlane => p(4, 60, 900),
            Step::UpgradeNodegroups => p(4, 60, 900),
            Step::UpgradeAddons => p(5, 30, 600),
            // Pods settle after the node replacement: give them time.
            Step::Postflight => p(6, 30, 300),
        }
    }

    /// Position in its plan's forward steps (`None` for the migration's rollback steps).
    pub fn index(self) -> Option<usize> {
        self.plan().steps().iter().position(|s| *s == self)
    }

    /// The forward step after this one in its plan (`None` after the last and for rollback
    /// steps).
    pub fn next(self) -> Option<Step> {
        self.index().and_then(|i| self.plan().steps().get(i + 1).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_is_in_one_plan_once() {
        let all = [
            Step::CreateManagedNodegroup,
            Step::WaitNodesReady,
            Step::Taint,
            Step::SurgeScale,
            Step::VerifyReady,
            Step::Drain,
            Step::RemoveSelfManagedNodegroup,
            Step::RestoreScale,
            Step::Rollback,
            Step::DeleteManagedNodegroup,
            Step::Inventory,
            Step::Preflight,
            Step::UpgradeControlPlane,
            Step::UpgradeNodegroups,
            Step::UpgradeAddons,
            Step::Postflight,
        ];
        for s in all {
            let in_plans = [Plan::Migration, Plan::Upgrade]
                .iter()
                .filter(|p| p.steps().contains(&s))
                .count();
            let rollback = matches!(s, Step::Rollback | Step::DeleteManagedNodegroup);
            assert_eq!(in_plans, usize::from(!rollback), "{s}");
            if !rollback {
                assert!(s.plan().steps().contains(&s), "{s}");
            }
            assert!(s.retry_policy().max_attempts >= 1);
        }
        assert_eq!(Plan::Migration.first(), Step::CreateManagedNodegroup);
        assert_eq!(Plan::Upgrade.first(), Step::Inventory);
        let json = serde_json::to_string(&Plan::Upgrade).unwrap();
        assert_eq!(json, r#""Upgrade""#);
    }
}
