//! The migration plan, DESIGN.md "Migration, step by step": steps 1–8 in order, who runs each
//! (coordinator against EKS, or the in-cluster agent), and the rollback steps used when a
//! migration is cancelled before the drain ends.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// node group exist? is the ASG at 0?) and only issue what is still missing.
    Recheck,
}

/// One step of a migration, forward or rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Step {
    /// 1. Create the managed node group from the template (coordinator, EKS).
    CreateManagedNodegroup,
    /// 2. The new group's nodes are Ready and schedulable (agent).
    WaitNodesReady,
    /// 3. Old nodes get `NoSchedule` (agent).
    Taint,
    /// 4. Deployments on old nodes scaled up by the surge; originals recorded (agent).
    SurgeScale,
    /// 5. Every surged Deployment has its ready replicas on new nodes (agent).
    VerifyReady,
    /// 6. Old nodes cordoned and drained through the Eviction API (agent).
    Drain,
    /// 7. The self-managed group's ASG scaled to 0, then the group deleted (coordinator); only
    ///    after the drain reported no evictable pods left on it.
    RemoveSelfManagedNodegroup,
    /// 8. Replicas and HPA `minReplicas` back to what was recorded (agent).
    RestoreScale,
    /// Rollback: untaint, uncordon, restore scale (agent).
    Rollback,
    /// Rollback, when asked: delete the new managed group (coordinator).
    DeleteManagedNodegroup,
}

/// The forward steps of a migration, in order.
pub const MIGRATION: [Step; 8] = [
    Step::CreateManagedNodegroup,
    Step::WaitNodesReady,
    Step::Taint,
    Step::SurgeScale,
    Step::VerifyReady,
    Step::Drain,
    Step::RemoveSelfManagedNodegroup,
    Step::RestoreScale,
];

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

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl Step {
    /// Who runs this step.
    pub fn runner(self) -> Runner {
        match self {
            Step::CreateManagedNodegroup
            | Step::RemoveSelfManagedNodegroup
            | Step::DeleteManagedNodegroup => Runner::Coordinator,
            Step::WaitNodesReady
            | Step::Taint
            | Step::SurgeScale
            | Step::VerifyReady
            | Step::Drain
            | Step::RestoreScale
            | Step::Rollback => Runner::Agent,
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
        }
    }

    /// Position in [`MIGRATION`] (`None` for rollback steps).
    pub fn index(self) -> Option<usize> {
        MIGRATION.iter().position(|s| *s == self)
    }

    /// The forward step after this one (`None` after the last and for rollback steps).
    pub fn next(self) -> Option<Step> {
        self.index().and_then(|i| MIGRATION.get(i + 1).copied())
    }

    /// Whether this is a rollback step.
    pub fn is_rollback(self) -> bool {
        matches!(self, Step::Rollback | Step::DeleteManagedNodegroup)
    }

    /// Whether a migration whose current (unfinished) forward step is this one can still be
    /// rolled back: true up to and including [`Step::Drain`] (DESIGN.md: "abort before step 6
    /// completes = roll back").
    pub fn can_roll_back_from(self) -> bool {
        self.index()
            .zip(Step::Drain.index())
            .is_some_and(|(i, drain)| i <= drain)
    }

    /// Whether this step may have changed the cluster by the time it is abandoned, so that the
    /// agent's [`Step::Rollback`] is needed (from [`Step::Taint`] on).
    pub fn touches_old_nodes(self) -> bool {
        self.index()
            .zip(Step::Taint.index())
            .is_some_and(|(i, taint)| i >= taint)
    }

    /// The rollback steps for a migration abandoned while `from` was the current step.
    pub fn rollback_plan(from: Step, delete_new_group: bool) -> Vec<Step> {
        let mut plan = Vec::new();
        if from.touches_old_nodes() {
            plan.push(Step::Rollback);
        }
        if delete_new_group {
            plan.push(Step::DeleteManagedNodegroup);
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_runners_follow_design() {
        let runners: Vec<Runner> = MIGRATION.iter().map(|s| s.runner()).collect();
        use Runner::*;
        assert_eq!(
            runners,
            [Coordinator, Agent, Agent, Agent, Agent, Agent, Coordinator, Agent]
        );
        for (i, s) in MIGRATION.iter().enumerate() {
            assert_eq!(s.index(), Some(i));
            assert!(!s.is_rollback());
        }
        assert_eq!(Step::RestoreScale.next(), None);
        assert_eq!(Step::VerifyReady.next(), Some(Step::Drain));
        assert_eq!(Step::Rollback.next(), None);
    }

    #[test]
    fn coordinator_steps_recheck_agent_steps_resend() {
        assert_eq!(Step::CreateManagedNodegroup.resume_mode(), ResumeMode::Recheck);
        assert_eq!(
            Step::RemoveSelfManagedNodegroup.resume_mode(),
            ResumeMode::Recheck
        );
        assert_eq!(Step::DeleteManagedNodegroup.resume_mode(), ResumeMode::Recheck);
        assert_eq!(Step::Drain.resume_mode(), ResumeMode::ResendSameAttempt);
        assert_eq!(Step::Rollback.resume_mode(), ResumeMode::ResendSameAttempt);
    }

    #[test]
    fn rollback_allowed_until_drain_ends() {
        let allowed: Vec<bool> = MIGRATION.iter().map(|s| s.can_roll_back_from()).collect();
        assert_eq!(allowed, [true, true, true, true, true, true, false, false]);
        assert!(!Step::Rollback.can_roll_back_from());
    }

    #[test]
    fn rollback_plan() {
        assert!(Step::rollback_plan(Step::CreateManagedNodegroup, false).is_empty());
        assert_eq!(
            Step::rollback_plan(Step::WaitNodesReady, true),
            [Step::DeleteManagedNodegroup]
        );
        assert_eq!(Step::rollback_plan(Step::Taint, false), [Step::Rollback]);
        assert_eq!(
            Step::rollback_plan(Step::Drain, true),
            [Step::Rollback, Step::DeleteManagedNodegroup]
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = Step::Drain.retry_policy();
        assert_eq!(p.backoff(1), Duration::from_secs(60));
        assert_eq!(p.backoff(2), Duration::from_secs(120));
        assert_eq!(p.backoff(3), Duration::from_secs(240));
        assert_eq!(p.backoff(5), Duration::from_secs(600));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(600));
        assert!(p.allows_after(4));
        assert!(!p.allows_after(5));
        for s in MIGRATION {
            assert!(s.retry_policy().max_attempts >= 1);
        }
    }
}
