//! Policies: what the service does to a table, and when.
//!
//! A [`Policy`] is data (serde, human durations and sizes such as `"15m"` and
//! `"128MiB"`). Each layer has a built-in default ([`LayerPolicies::builtin`]); the
//! settings file overrides a layer's default field by field, and a table's own
//! overrides (kept in the catalog as JSON) override its layer's, field by field again
//! ([`Policy::with_overrides`]). Every policy is validated when it is formed, so a
//! typo or a bad value is refused naming the field, when the config or the table is
//! loaded, not when a job runs.
//!
//! ```
//! use sediment_catalog::{Layer, LayerPolicies};
//! let layers = LayerPolicies::builtin();
//! let overrides = serde_json::json!({ "vacuum": { "retention": "3d" } });
//! let policy = layers.get(Layer::Bronze).with_overrides(&overrides).unwrap();
//! assert_eq!(policy.vacuum.retention, std::time::Duration::from_secs(3 * 86_400));
//! assert_eq!(policy.compaction, layers.get(Layer::Bronze).compaction);
//! ```
//!
//! Triggers of a compaction (checked each time the schedule comes round, per
//! partition): a partition with at least `min_small_files` files below ¾ of the
//! target size, a file whose deletion vector deletes more than
//! `max_deleted_rows_ratio` of its rows, or `max_commits_since_compaction` data
//! commits since the table's last compaction.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{CatalogError, Result};
use crate::model::Layer;

/// When a kind of maintenance is considered: every interval, or on a cron expression
/// (`{ every = "15m" }` or `{ cron = "0 3 * * *" }`, five or six fields, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// At most once per interval.
    Every(#[serde(with = "humantime_serde")] Duration),
    /// At the times a cron expression names.
    Cron(String),
}

impl Schedule {
    /// Whether it is well formed.
    pub fn validate(&self, field: &str) -> Result<()> {
        match self {
            Schedule::Every(d) if d.is_zero() => Err(CatalogError::invalid(format!("{field}: an interval of zero"))),
            Schedule::Every(_) => Ok(()),
            Schedule::Cron(expr) => expr
                .parse::<croner::Cron>()
                .map(|_| ())
                .map_err(|e| CatalogError::invalid(format!("{field}: cron expression {expr:?}: {e}"))),
        }
    }

    /// The first time it is due after `last` (the last run; `None`: never ran, so now).
    pub fn next_after(
        &self,
        last: Option<chrono::DateTime<chrono::Utc>>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> chrono::DateTime<chrono::Utc> {
        let Some(last) = last else { return now };
        match self {
            Schedule::Every(d) => last + chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::MAX),
            Schedule::Cron(expr) => expr
                .parse::<croner::Cron>()
                .ok()
                .and_then(|cron| cron.find_next_occurrence(&last, false).ok())
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC),
        }
    }
}

/// Small-file compaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactionPolicy {
    pub enabled: bool,
    /// Size the rewritten files aim for.
    pub target_file_size: ByteSize,
    /// Trigger: a partition with this many files below ¾ of the target size.
    pub min_small_files: usize,
    /// Trigger: a file whose deletion vector deletes more than this share of its rows.
    pub max_deleted_rows_ratio: f64,
    /// Trigger: this many data commits since the last compaction.
    pub max_commits_since_compaction: u64,
    /// Budget per run: rewrite at most about this many bytes, so a huge table's backlog
    /// is worked off in bounded jobs that leave room for the other tables.
    pub max_bytes_per_run: ByteSize,
    /// How often the triggers are checked.
    pub schedule: Schedule,
}

/// Checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointPolicy {
    pub enabled: bool,
    /// Write one when this many commits follow the last checkpoint.
    pub interval: u64,
}

/// Vacuum: data files no kept version needs, and old log entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VacuumPolicy {
    pub enabled: bool,
    /// Keep what the versions of this long ago need (time travel window).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Keep log entries this long (older ones go once a checkpoint covers them).
    #[serde(with = "humantime_serde")]
    pub log_retention: Duration,
    /// Also list storage for files no version references (orphans of failed writers).
    pub full: bool,
    pub schedule: Schedule,
}

/// Partition expiry: rows older than a horizon removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpirePolicy {
    pub enabled: bool,
    /// The horizon; required when enabled.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub older_than: Option<Duration>,
    /// The column to age rows by (default: the first date-like partition column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub schedule: Schedule,
}

/// Storage tiering: partitions moved to colder S3 classes as they age.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TieringPolicy {
    pub enabled: bool,
    /// Older and colder as they go, e.g. `[{ older_than = "30d", storage_class = "STANDARD_IA" }]`.
    #[serde(default)]
    pub steps: crate::tiering::TierSteps,
    /// The partition column partitions age by (default: the first date-like one;
    /// an unpartitioned table's files age from when they were added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub schedule: Schedule,
}

/// Everything the service does to one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub compaction: CompactionPolicy,
    pub checkpoint: CheckpointPolicy,
    pub vacuum: VacuumPolicy,
    pub expire: ExpirePolicy,
    pub tiering: TieringPolicy,
}

const MIB: u64 = 1024 * 1024;
const DAY: Duration = Duration::from_secs(86_400);

impl Policy {
    /// The built-in policy of a layer: bronze is checked often (writers fragment it
    /// fastest), gold keeps a longer time-travel window (dashboards' "as of" queries).
    pub fn builtin(layer: Layer) -> Policy {
        let (every, retention) = match layer {
            Layer::Bronze => (Duration::from_secs(30), 7 * DAY),
            Layer::Silver => (Duration::from_secs(120), 7 * DAY),
            Layer::Gold => (Duration::from_secs(300), 30 * DAY),
        };
        Policy {
            compaction: CompactionPolicy {
                enabled: true,
                target_file_size: ByteSize::b(128 * MIB),
                min_small_files: 10,
                max_deleted_rows_ratio: 0.05,
                max_commits_since_compaction: 100,
                max_bytes_per_run: ByteSize::b(10 * 1024 * MIB),
                schedule: Schedule::Every(every),
            },
            checkpoint: CheckpointPolicy { enabled: true, interval: 100 },
            vacuum: VacuumPolicy {
                enabled: true,
                retention,
                log_retention: 30 * DAY,
                full: false,
                schedule: Schedule::Every(DAY),
            },
            expire: ExpirePolicy { enabled: false, older_than: None, column: None, schedule: Schedule::Every(DAY) },
            tiering: TieringPolicy {
                enabled: false,
                steps: Default::default(),
                column: None,
                schedule: Schedule::Every(DAY),
            },
        }
    }

    /// This policy with `overrides` (a JSON object of the same shape, any subset of
    /// fields) laid over it, validated. `field` prefixes error messages.
    pub fn with_overrides(&self, overrides: &Value) -> Result<Policy> {
        self.with_overrides_named(overrides, "policy")
    }

    pub(crate) fn with_overrides_named(&self, overrides: &Value, what: &str) -> Result<Policy> {
        if overrides.is_null() {
            return Ok(self.clone());
        }
        if !overrides.is_object() {
            return Err(CatalogError::invalid(format!(
                "{what}: expected an object of policy fields, found {overrides}"
            )));
        }
        let mut merged = serde_json::to_value(self).map_err(|e| CatalogError::invalid(format!("{what}: {e}")))?;
        merge(&mut merged, overrides);
        let policy: Policy = serde_path_to_error(merged).map_err(|e| CatalogError::invalid(format!("{what}.{e}")))?;
        policy.validate().map_err(|e| CatalogError::invalid(format!("{what}.{e}")))?;
        Ok(policy)
    }

    /// Refuse values that cannot work, naming the field.
    pub fn validate(&self) -> Result<()> {
        let c = &self.compaction;
        if c.target_file_size.as_u64() < MIB {
            return Err(CatalogError::invalid(format!(
                "compaction.target_file_size: at least 1MiB, found {}",
                c.target_file_size
            )));
        }
        if c.min_small_files < 2 {
            return Err(CatalogError::invalid(format!(
                "compaction.min_small_files: at least 2, found {}",
                c.min_small_files
            )));
        }
        if !(c.max_deleted_rows_ratio > 0.0 && c.max_deleted_rows_ratio <= 1.0) {
            return Err(CatalogError::invalid(format!(
                "compaction.max_deleted_rows_ratio: between 0 (exclusive) and 1, found {}",
                c.max_deleted_rows_ratio
            )));
        }
        if c.max_commits_since_compaction == 0 {
            return Err(CatalogError::invalid("compaction.max_commits_since_compaction: at least 1, found 0"));
        }
        if c.max_bytes_per_run.as_u64() < c.target_file_size.as_u64() {
            return Err(CatalogError::invalid(format!(
                "compaction.max_bytes_per_run: at least the target file size ({}), found {}",
                c.target_file_size, c.max_bytes_per_run
            )));
        }
        c.schedule.validate("compaction.schedule")?;
        if self.checkpoint.interval == 0 {
            return Err(CatalogError::invalid("checkpoint.interval: at least 1, found 0"));
        }
        self.vacuum.schedule.validate("vacuum.schedule")?;
        self.expire.schedule.validate("expire.schedule")?;
        if self.expire.enabled && self.expire.older_than.is_none_or(|d| d.is_zero()) {
            return Err(CatalogError::invalid("expire.older_than: required (and above zero) when expire is enabled"));
        }
        self.tiering.schedule.validate("tiering.schedule")?;
        self.tiering.steps.validate("tiering")?;
        if self.tiering.enabled && self.tiering.steps.is_empty() {
            return Err(CatalogError::invalid("tiering.steps: at least one step when tiering is enabled"));
        }
        Ok(())
    }
}

/// The default policy of each layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerPolicies {
    pub bronze: Policy,
    pub silver: Policy,
    pub gold: Policy,
}

impl LayerPolicies {
    /// The built-in defaults.
    pub fn builtin() -> Self {
        Self {
            bronze: Policy::builtin(Layer::Bronze),
            silver: Policy::builtin(Layer::Silver),
            gold: Policy::builtin(Layer::Gold),
        }
    }

    /// The built-in defaults with each layer's overrides (from the settings file) laid over.
    pub fn with_overrides(bronze: &Value, silver: &Value, gold: &Value) -> Result<Self> {
        Ok(Self {
            bronze: Policy::builtin(Layer::Bronze).with_overrides_named(bronze, "policies.bronze")?,
            silver: Policy::builtin(Layer::Silver).with_overrides_named(silver, "policies.silver")?,
            gold: Policy::builtin(Layer::Gold).with_overrides_named(gold, "policies.gold")?,
        })
    }

    /// A layer's default.
    pub fn get(&self, layer: Layer) -> &Policy {
        match layer {
            Layer::Bronze => &self.bronze,
            Layer::Silver => &self.silver,
            Layer::Gold => &self.gold,
        }
    }
}

/// Lay `over` onto `base`: objects merge key by key, anything else replaces. A
/// schedule is one value (`{ every = .. }` replaces `{ cron = .. }`), not merged.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(key) {
                    Some(slot) if slot.is_object() && value.is_object() && key != "schedule" => merge(slot, value),
                    _ => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// Deserialize a policy, naming the field that failed (`compaction.target_file_size: ...`).
fn serde_path_to_error(value: Value) -> std::result::Result<Policy, String> {
    // Try section by section so the error names the section; serde's own message names
    // the field inside it.
    if let Value::Object(map) = &value {
        for (section, inner) in map {
            let result = match section.as_str() {
                "compaction" => CompactionPolicy::deserialize(inner).map(|_| ()),
                "checkpoint" => CheckpointPolicy::deserialize(inner).map(|_| ()),
                "vacuum" => VacuumPolicy::deserialize(inner).map(|_| ()),
                "expire" => ExpirePolicy::deserialize(inner).map(|_| ()),
                "tiering" => TieringPolicy::deserialize(inner).map(|_| ()),
                other => {
                    return Err(format!(
                        "{other}: unknown policy section (expected compaction, checkpoint, vacuum, expire or tiering)"
                    ));
                }
            };
            result.map_err(|e| format!("{section}: {e}"))?;
        }
    }
    Policy::deserialize(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn overrides_apply_field_by_field() {
        let base = Policy::builtin(Layer::Silver);
        let p = base
            .with_overrides(&json!({"compaction": {"target_file_size": "64MiB", "schedule": {"cron": "0 3 * * *"}}}))
            .unwrap();
        assert_eq!(p.compaction.target_file_size, ByteSize::mib(64));
        assert_eq!(p.compaction.schedule, Schedule::Cron("0 3 * * *".into()));
        assert_eq!(p.compaction.min_small_files, base.compaction.min_small_files);
        assert_eq!(p.vacuum, base.vacuum);
    }

    #[test]
    fn bad_overrides_name_the_field() {
        let base = Policy::builtin(Layer::Gold);
        let err = base.with_overrides(&json!({"vacuum": {"retention": "7 fortnights"}})).unwrap_err();
        assert!(err.to_string().contains("policy.vacuum"), "{err}");
        let err = base.with_overrides(&json!({"compaction": {"target_size": "1GiB"}})).unwrap_err();
        assert!(err.to_string().contains("target_size"), "{err}");
        let err = base.with_overrides(&json!({"optimize": {}})).unwrap_err();
        assert!(err.to_string().contains("optimize: unknown policy section"), "{err}");
        let err = base.with_overrides(&json!({"tiering": {"enabled": true}})).unwrap_err();
        assert!(err.to_string().contains("tiering.steps"), "{err}");
        let steps = json!([{"older_than": "90d", "storage_class": "GLACIER_IR"}, {"older_than": "30d", "storage_class": "STANDARD_IA"}]);
        let err = base.with_overrides(&json!({"tiering": {"enabled": true, "steps": steps}})).unwrap_err();
        assert!(err.to_string().contains("tiering.steps[1].older_than"), "{err}");
        let steps = json!([{"older_than": "30d", "storage_class": "TAPE"}]);
        let err = base.with_overrides(&json!({"tiering": {"steps": steps}})).unwrap_err();
        assert!(err.to_string().contains("TAPE"), "{err}");
        let steps = json!([{"older_than": "30d", "storage_class": "standard_ia"}]);
        let tiered = base.with_overrides(&json!({"tiering": {"enabled": true, "steps": steps}})).unwrap();
        assert_eq!(tiered.tiering.steps.0[0].storage_class, crate::tiering::StorageClass::StandardIa);
        let err = base.with_overrides(&json!({"compaction": {"schedule": {"cron": "every day"}}})).unwrap_err();
        assert!(err.to_string().contains("compaction.schedule"), "{err}");
        let err = base.with_overrides(&json!({"expire": {"enabled": true}})).unwrap_err();
        assert!(err.to_string().contains("expire.older_than"), "{err}");
        assert!(base.with_overrides(&json!(["x"])).is_err());
    }

    #[test]
    fn schedules_come_round() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-05-01T10:00:00Z").unwrap().to_utc();
        let every = Schedule::Every(Duration::from_secs(900));
        assert_eq!(every.next_after(None, now), now);
        assert_eq!(every.next_after(Some(now), now), now + chrono::Duration::minutes(15));
        let cron = Schedule::Cron("0 3 * * *".into());
        let next = cron.next_after(Some(now), now);
        assert_eq!(next.to_rfc3339(), "2026-05-02T03:00:00+00:00");
    }

    #[test]
    fn builtin_policies_are_valid_and_round_trip() {
        for layer in [Layer::Bronze, Layer::Silver, Layer::Gold] {
            let p = Policy::builtin(layer);
            p.validate().unwrap();
            let json = serde_json::to_value(&p).unwrap();
            assert_eq!(serde_json::from_value::<Policy>(json).unwrap(), p);
        }
    }
}
