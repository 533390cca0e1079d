//! The migration plan, DESIGN.md "Migration, step by step": steps 1–8 in order and the rollback
//! steps used when a migration is cancelled before the drain ends. Who runs each step, its retry
//! policy and resume rule are on [`Step`] (shared with the upgrade plan).

pub use super::{Plan, ResumeMode, RetryPolicy, Runner, Step};

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

impl Step {
    /// Whether this is a migration rollback step.
    pub fn is_rollback(self) -> bool {
        matches!(self, Step::Rollback | Step::DeleteManagedNodegroup)
    }

    /// Whether a migration whose current (unfinished) forward step is this one can still be
    /// rolled back: true up to and including [`Step::Drain`] (DESIGN.md: "abort before step 6
    /// completes = roll back"). Always false for upgrade steps: a control-plane update cannot be
    /// undone.
    pub fn can_roll_back_from(self) -> bool {
        self.plan() == Plan::Migration
            && self
                .index()
                .zip(Step::Drain.index())
                .is_some_and(|(i, drain)| i <= drain)
    }

    /// Whether this migration step may have changed the cluster by the time it is abandoned, so
    /// that the agent's [`Step::Rollback`] is needed (from [`Step::Taint`] on).
    pub fn touches_old_nodes(self) -> bool {
        self.plan() == Plan::Migration
            && self
                .index()
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
    use std::time::Duration;

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
        for s in super::super::UPGRADE {
            assert!(!s.can_roll_back_from(), "{s}");
            assert!(!s.touches_old_nodes(), "{s}");
            assert!(!s.is_rollback(), "{s}");
        }
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
