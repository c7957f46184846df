//! Which jobs a table needs now: a pure function of a view of the table, its policy,
//! what ran before and the time. No I/O, no clock.
//!
//! The rules (defaults in [`sediment_catalog::Policy::builtin`]):
//! - **compact**, when its schedule comes round (the check cadence, bronze every 30 s)
//!   and one of: a partition holds `min_small_files` (10) files below ¾ of the target
//!   size; a file's deletion vector deletes more than `max_deleted_rows_ratio` (5 %)
//!   of its rows; `max_commits_since_compaction` (100) commits since the last
//!   compaction. The scheduler then enqueues only when the planner finds work, so a
//!   trigger never makes an empty job;
//! - **checkpoint**, when `checkpoint.interval` (100) commits follow the last one;
//! - **vacuum**, **expire** and **tier**, when their schedule comes round after the
//!   last job of that kind finished (by the catalog's history, so every daemon agrees).

use chrono::{DateTime, Utc};
use sediment_catalog::{JobKind, Policy};
use serde::Serialize;

use crate::maintain::TableHealth;

/// What the scheduler read of one table.
#[derive(Debug, Clone)]
pub struct TableView<'a> {
    pub policy: &'a Policy,
    /// Health at the policy's target size.
    pub health: &'a TableHealth,
    /// The largest share of rows a deletion vector deletes in any one file.
    pub max_deleted_ratio: f64,
    pub version: u64,
    pub last_checkpoint: Option<u64>,
    /// Commits since the last compaction (all commits, when none ran).
    pub commits_since_compaction: u64,
}

/// When each kind last ran or was checked.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// When this daemon last checked the compaction triggers.
    pub compaction_checked: Option<DateTime<Utc>>,
    pub vacuum_finished: Option<DateTime<Utc>>,
    pub expire_finished: Option<DateTime<Utc>>,
    pub tier_finished: Option<DateTime<Utc>>,
}

/// A job a table needs, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Due {
    pub kind: JobKind,
    pub reason: String,
}

/// The jobs `view` needs at `now`.
pub fn due(view: &TableView<'_>, history: &History, now: DateTime<Utc>) -> Vec<Due> {
    let mut out = Vec::new();
    let policy = view.policy;
    let c = &policy.compaction;
    if c.enabled
        && c.schedule.next_after(history.compaction_checked, now) <= now
        && let Some(reason) = compaction_reason(view)
    {
        out.push(Due { kind: JobKind::Compact, reason });
    }
    if policy.checkpoint.enabled {
        let since = match view.last_checkpoint {
            Some(v) => view.version.saturating_sub(v),
            None => view.version + 1,
        };
        if since >= policy.checkpoint.interval && view.version > 0 {
            out.push(Due { kind: JobKind::Checkpoint, reason: format!("{since} commits since the last checkpoint") });
        }
    }
    if policy.vacuum.enabled && policy.vacuum.schedule.next_after(history.vacuum_finished, now) <= now {
        out.push(Due { kind: JobKind::Vacuum, reason: "schedule".into() });
    }
    if policy.expire.enabled && policy.expire.schedule.next_after(history.expire_finished, now) <= now {
        out.push(Due { kind: JobKind::Expire, reason: "schedule".into() });
    }
    if policy.tiering.enabled && policy.tiering.schedule.next_after(history.tier_finished, now) <= now {
        out.push(Due { kind: JobKind::Tier, reason: "schedule".into() });
    }
    out
}

/// Why the table needs compacting, if it does.
pub fn compaction_reason(view: &TableView<'_>) -> Option<String> {
    let c = &view.policy.compaction;
    let crowded: Vec<_> = view.health.partitions.iter().filter(|p| p.undersized >= c.min_small_files).collect();
    if let Some(worst) = crowded.iter().max_by_key(|p| p.undersized) {
        return Some(format!(
            "small files: {} partition(s) with at least {} files below 3/4 of the target size (the worst has {})",
            crowded.len(),
            c.min_small_files,
            worst.undersized
        ));
    }
    if view.max_deleted_ratio > c.max_deleted_rows_ratio {
        return Some(format!(
            "deleted rows: a file's deletion vector deletes {:.0}% of its rows (above {:.0}%)",
            view.max_deleted_ratio * 100.0,
            c.max_deleted_rows_ratio * 100.0
        ));
    }
    if view.commits_since_compaction >= c.max_commits_since_compaction {
        return Some(format!("{} commits since the last compaction", view.commits_since_compaction));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use sediment_catalog::Layer;
    use sediment_compactor::health::PartitionHealth;

    fn health(undersized: &[usize]) -> TableHealth {
        let partitions = undersized
            .iter()
            .enumerate()
            .map(|(i, n)| PartitionHealth {
                partition: vec![("p".into(), Some(i.to_string()))],
                files: *n,
                bytes: 0,
                rows: None,
                fragments: *n,
                undersized: *n,
                with_deletion_vectors: 0,
                deleted_rows: 0,
                average_file_size: 0,
                ideal_files: 1,
                score: 0,
            })
            .collect();
        TableHealth {
            target_file_size: 1,
            files: 0,
            bytes: 0,
            rows: None,
            fragments: 0,
            undersized: 0,
            average_file_size: 0,
            score: 0,
            histogram: vec![],
            partitions,
        }
    }

    fn view<'a>(policy: &'a Policy, health: &'a TableHealth) -> TableView<'a> {
        TableView {
            policy,
            health,
            max_deleted_ratio: 0.0,
            version: 5,
            last_checkpoint: None,
            commits_since_compaction: 3,
        }
    }

    fn kinds(due: &[Due]) -> Vec<JobKind> {
        due.iter().map(|d| d.kind).collect()
    }

    #[test]
    fn small_files_per_partition_trigger_compaction() {
        let policy = Policy::builtin(Layer::Bronze);
        let now = Utc::now();
        let done = History { vacuum_finished: Some(now), ..Default::default() };
        let healthy = health(&[9, 9, 9]);
        assert!(kinds(&due(&view(&policy, &healthy), &done, now)).is_empty(), "27 small files, none crowded");
        let crowded = health(&[2, 20]);
        let d = due(&view(&policy, &crowded), &done, now);
        assert_eq!(kinds(&d), [JobKind::Compact]);
        assert!(d[0].reason.contains("the worst has 20"), "{}", d[0].reason);
        // Not before the check cadence comes round again.
        let checked = History { compaction_checked: Some(now), ..done.clone() };
        assert!(due(&view(&policy, &crowded), &checked, now).is_empty());
        let later = now + chrono::Duration::seconds(31);
        assert_eq!(kinds(&due(&view(&policy, &crowded), &checked, later)), [JobKind::Compact]);
    }

    #[test]
    fn deleted_rows_and_commit_counts_trigger_compaction() {
        let policy = Policy::builtin(Layer::Silver);
        let now = Utc::now();
        let done = History { vacuum_finished: Some(now), ..Default::default() };
        let h = health(&[1]);
        let mut v = view(&policy, &h);
        v.max_deleted_ratio = 0.2;
        assert!(compaction_reason(&v).unwrap().contains("20%"));
        v.max_deleted_ratio = 0.0;
        v.commits_since_compaction = 100;
        assert!(compaction_reason(&v).unwrap().contains("100 commits"));
        assert_eq!(kinds(&due(&v, &done, now)), [JobKind::Compact]);
    }

    #[test]
    fn checkpoints_vacuum_and_expire() {
        let mut policy = Policy::builtin(Layer::Gold);
        policy.expire.enabled = true;
        policy.expire.older_than = Some(std::time::Duration::from_secs(86_400));
        let now = Utc::now();
        let h = health(&[]);
        let mut v = view(&policy, &h);
        v.version = 250;
        v.last_checkpoint = Some(200);
        let never = History::default();
        assert_eq!(kinds(&due(&v, &never, now)), [JobKind::Vacuum, JobKind::Expire]);
        v.last_checkpoint = Some(150);
        assert_eq!(kinds(&due(&v, &never, now)), [JobKind::Checkpoint, JobKind::Vacuum, JobKind::Expire]);
        let recent = History {
            vacuum_finished: Some(now - chrono::Duration::hours(1)),
            expire_finished: Some(now - chrono::Duration::hours(25)),
            ..Default::default()
        };
        assert_eq!(kinds(&due(&v, &recent, now)), [JobKind::Checkpoint, JobKind::Expire]);
    }

    #[test]
    fn tiering_runs_on_its_schedule_when_enabled() {
        let mut policy = Policy::builtin(Layer::Bronze);
        let now = Utc::now();
        let h = health(&[]);
        let tiers =
            |policy: &Policy, history: &History| kinds(&due(&view(policy, &h), history, now)).contains(&JobKind::Tier);
        assert!(!tiers(&policy, &History::default()), "off by default");
        policy.tiering.enabled = true;
        policy.tiering.steps = sediment_catalog::tiering::TierSteps::parse("30d:STANDARD_IA").unwrap();
        assert!(tiers(&policy, &History::default()));
        let recent = History { tier_finished: Some(now - chrono::Duration::hours(1)), ..Default::default() };
        assert!(!tiers(&policy, &recent), "the daily schedule has not come round");
        let yesterday = History { tier_finished: Some(now - chrono::Duration::hours(25)), ..Default::default() };
        assert!(tiers(&policy, &yesterday));
    }
}
