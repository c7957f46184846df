//! One retry policy and one conflict classification for every writer: appends and
//! overwrites, deletes and updates, merges, compaction commits.
//!
//! A *conflict* is a commit that lost to another writer in a way delta-rs's conflict
//! checker could not rebase (the other writer removed a file this one read or
//! removes, added files its predicate should have read, changed the metadata or the
//! protocol, or committed the same application transaction). The writer then plans
//! again on the newest version, after a back-off with full jitter, as long as its
//! [`RetrySettings`] allow: a number of attempts *and* a time since the operation
//! started, whichever runs out first. Commits that another writer merely beat to a
//! version number are rebased inside delta-rs and are not conflicts here.
//!
//! [`describe`] turns delta-rs's commit errors into one plain sentence (no chain of
//! "Transaction failed: Failed to commit transaction: ..."), and [`is_conflict`] is
//! the one classification every writer uses.

use std::time::{Duration, Instant};

use deltalake::DeltaTableError;
use deltalake::kernel::transaction::{CommitConflictError, TransactionError};
use serde::{Deserialize, Serialize};

/// How often, and for how long, an operation that lost a race plans again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts at most, the first included.
    pub max_attempts: usize,
    /// No new attempt starts this long after the operation began.
    pub max_elapsed: Duration,
    /// The first back-off's upper bound; each further one doubles it.
    pub initial_backoff: Duration,
    /// The largest back-off.
    pub max_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 30,
            max_elapsed: Duration::from_secs(180),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetrySettings {
    /// Refuse settings that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("retry max_attempts must be at least 1".into());
        }
        if self.initial_backoff > self.max_backoff {
            return Err(format!(
                "retry initial_backoff ({:?}) is larger than max_backoff ({:?})",
                self.initial_backoff, self.max_backoff
            ));
        }
        Ok(())
    }

    /// The wait before retry number `retry` (1 for the first): a uniformly random
    /// time up to `initial_backoff * 2^(retry - 1)`, capped at `max_backoff` (full
    /// jitter, so racing writers spread out). `seed` varies it between callers.
    pub fn backoff(&self, retry: u32, seed: u64) -> Duration {
        let cap = self
            .initial_backoff
            .saturating_mul(1u32.checked_shl(retry.saturating_sub(1).min(20)).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        let nanos = cap.as_nanos() as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(splitmix(seed ^ u64::from(retry).wrapping_mul(0x9E37_79B9_7F4A_7C15)) % (nanos + 1))
    }
}

/// The attempts of one operation against its [`RetrySettings`].
#[derive(Debug)]
pub struct RetryBudget {
    settings: RetrySettings,
    started: Instant,
    attempts: usize,
    seed: u64,
}

impl RetryBudget {
    /// A budget starting now, its first attempt under way.
    pub fn new(settings: &RetrySettings) -> Self {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
                ^ (std::process::id() as u64).rotate_left(32);
        Self { settings: settings.clone(), started: Instant::now(), attempts: 1, seed }
    }

    /// Attempts made so far (the one under way included).
    pub fn attempts(&self) -> usize {
        self.attempts
    }

    /// Retries made so far.
    pub fn retries(&self) -> usize {
        self.attempts - 1
    }

    /// Time since the operation started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// After a lost race: wait out the back-off and count a new attempt (`true`), or
    /// `false` when the attempts or the time are spent (the wait included).
    pub async fn retry(&mut self) -> bool {
        if self.attempts >= self.settings.max_attempts {
            return false;
        }
        let wait = self.settings.backoff(self.attempts as u32, self.seed);
        if self.started.elapsed() + wait >= self.settings.max_elapsed {
            return false;
        }
        tokio::time::sleep(wait).await;
        self.attempts += 1;
        true
    }

    /// "N attempts over T s", for messages.
    pub fn summary(&self) -> String {
        format!("{} attempts over {:.1} s", self.attempts, self.elapsed().as_secs_f64())
    }
}

/// Whether a commit error is a lost race that planning again on the newest version
/// can get past.
pub fn is_conflict(err: &DeltaTableError) -> bool {
    match err {
        DeltaTableError::VersionAlreadyExists(_) | DeltaTableError::VersionMismatch(..) => true,
        DeltaTableError::Transaction { source } => transaction_conflict(source),
        _ => false,
    }
}

fn transaction_conflict(err: &TransactionError) -> bool {
    match err {
        TransactionError::VersionAlreadyExists(_) | TransactionError::MaxCommitAttempts(_) => true,
        TransactionError::CommitConflict(conflict) => !matches!(
            conflict,
            CommitConflictError::UnsupportedReaderVersion(_)
                | CommitConflictError::UnsupportedWriterVersion(_)
                | CommitConflictError::CorruptedState { .. }
        ),
        _ => false,
    }
}

/// One plain sentence for a commit error (lowercase, no chain of wrappers).
pub fn describe(err: &DeltaTableError) -> String {
    match err {
        DeltaTableError::Transaction { source } => describe_transaction(source),
        DeltaTableError::VersionAlreadyExists(v) => format!("version {v} was committed by another writer first"),
        other => other.to_string(),
    }
}

fn describe_transaction(err: &TransactionError) -> String {
    match err {
        TransactionError::VersionAlreadyExists(v) => format!("version {v} was committed by another writer first"),
        TransactionError::MaxCommitAttempts(n) => {
            format!("another writer committed first {} time(s) in a row", (*n).max(0) + 1)
        }
        TransactionError::CommitConflict(conflict) => match conflict {
            CommitConflictError::ConcurrentAppend => {
                "another writer added files that this operation's predicate should have read".into()
            }
            CommitConflictError::ConcurrentDeleteRead => "another writer removed files this operation read".into(),
            CommitConflictError::ConcurrentDeleteDelete => {
                "another writer removed files this operation also removes".into()
            }
            CommitConflictError::MetadataChanged => "another writer changed the table's metadata".into(),
            CommitConflictError::ConcurrentTransaction => {
                "another writer committed the same application transaction".into()
            }
            CommitConflictError::ProtocolChanged(what) => {
                format!("another writer changed the table's protocol: {what}")
            }
            other => format!("commit conflict: {other}"),
        },
        other => other.to_string(),
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_below_a_doubling_cap() {
        let settings = RetrySettings::default();
        for retry in 1..12 {
            let cap = (settings.initial_backoff * 2u32.pow(retry - 1)).min(settings.max_backoff);
            let waits: Vec<Duration> = (0..50).map(|seed| settings.backoff(retry, seed)).collect();
            assert!(waits.iter().all(|w| *w <= cap), "retry {retry}: {waits:?}");
            assert!(waits.iter().any(|w| *w != waits[0]), "jittered: {waits:?}");
        }
        assert!(settings.backoff(200, 1) <= settings.max_backoff);
    }

    #[tokio::test]
    async fn a_budget_ends_at_its_attempts_or_its_time() {
        let quick = RetrySettings {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..Default::default()
        };
        let mut budget = RetryBudget::new(&quick);
        assert!(budget.retry().await && budget.retry().await);
        assert!(!budget.retry().await, "three attempts");
        assert_eq!((budget.attempts(), budget.retries()), (3, 2));

        let short = RetrySettings { max_elapsed: Duration::ZERO, ..Default::default() };
        assert!(!RetryBudget::new(&short).retry().await, "no time left");
        assert!(RetrySettings { max_attempts: 0, ..Default::default() }.validate().is_err());
    }

    #[test]
    fn commit_errors_read_as_one_sentence() {
        let err = DeltaTableError::Transaction { source: TransactionError::MaxCommitAttempts(0) };
        assert!(is_conflict(&err));
        assert_eq!(describe(&err), "another writer committed first 1 time(s) in a row");
        let err = DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(CommitConflictError::ConcurrentDeleteRead),
        };
        assert!(is_conflict(&err));
        assert!(!describe(&err).contains("Transaction failed"));
        let err = DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(CommitConflictError::UnsupportedWriterVersion(9)),
        };
        assert!(!is_conflict(&err));
    }
}
