//! The tiering planner: a pure function from a snapshot's live files (with the class
//! the log records for each), the policy's steps and "now" to the moves that bring
//! every due partition into its class. No I/O, no clock.
//!
//! - A partition's age comes from its date or timestamp partition value (or a string
//!   partition value holding an ISO date): `now` minus the start of that day or
//!   instant. An unpartitioned table's files age from when they were added.
//! - A file moves only to a colder class than it is in: tiering never warms data up
//!   and never rewrites it (a move is a server-side copy in place).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Serialize;

use super::{StorageClass, TierSteps};
use crate::error::{Error, Result};

/// One live file as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TierFile {
    pub path: String,
    pub size: u64,
    pub partition: BTreeMap<String, Option<String>>,
    /// When it was added (the `add`'s modification time), ms since the epoch.
    pub added_ms: i64,
    /// The class the log records for it (STANDARD when it records none).
    pub storage_class: StorageClass,
}

/// What partitions (or files) age by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "by", content = "column")]
pub enum AgeBy {
    /// The value of this partition column.
    Partition(String),
    /// When each file was added (an unpartitioned table).
    AddTime,
}

/// The files of one partition (or, unpartitioned, of one target class) to move.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierMove {
    /// The partition's values (empty for an unpartitioned table).
    pub partition: BTreeMap<String, Option<String>>,
    /// Whole days of age (the youngest file's, for an unpartitioned table).
    pub age_days: i64,
    pub storage_class: StorageClass,
    pub files: Vec<String>,
    pub bytes: u64,
}

/// What to move where.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierPlan {
    pub age_by: AgeBy,
    pub moves: Vec<TierMove>,
    /// Live files already in (or colder than) the class their age asks for.
    pub files_in_place: usize,
    /// Live files too young for any step.
    pub files_not_due: usize,
    /// Live files in an archive class (GLACIER, DEEP_ARCHIVE) that their age would
    /// move colder still: a copy of an archived object needs a restore first, so
    /// they stay where they are.
    pub files_archived: usize,
}

impl TierPlan {
    /// Files to move.
    pub fn files(&self) -> usize {
        self.moves.iter().map(|m| m.files.len()).sum()
    }

    /// Bytes to move.
    pub fn bytes(&self) -> u64 {
        self.moves.iter().map(|m| m.bytes).sum()
    }
}

/// A partition column and whether its type is a date or a timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionColumn {
    pub name: String,
    pub temporal: bool,
}

/// Which partition column ages the partitions: `column` when given (it must be a
/// partition column whose values are dates or timestamps), else the first temporal
/// partition column, else the first string one whose every value is an ISO date;
/// an unpartitioned table ages by add time.
pub fn age_by(columns: &[PartitionColumn], column: Option<&str>, files: &[TierFile]) -> Result<AgeBy> {
    let all_dates = |name: &str| {
        files
            .iter()
            .all(|f| f.partition.get(name).and_then(|v| v.as_deref()).is_some_and(|v| parse_instant(v).is_some()))
    };
    if let Some(column) = column {
        let Some(c) = columns.iter().find(|c| c.name == column) else {
            return Err(Error::invalid(format!(
                "tiering column {column:?} is not a partition column (partition columns: {})",
                names(columns)
            )));
        };
        if !c.temporal && !all_dates(column) {
            return Err(not_dates(column, files));
        }
        return Ok(AgeBy::Partition(column.to_string()));
    }
    if columns.is_empty() {
        return Ok(AgeBy::AddTime);
    }
    if let Some(c) = columns.iter().find(|c| c.temporal) {
        return Ok(AgeBy::Partition(c.name.clone()));
    }
    if let Some(c) = columns.iter().find(|c| !files.is_empty() && all_dates(&c.name)) {
        return Ok(AgeBy::Partition(c.name.clone()));
    }
    Err(Error::invalid(format!(
        "no partition column of this table is a date or a timestamp (partition columns: {}); \
         an age rule needs one: name it with the policy's column",
        names(columns)
    )))
}

fn names(columns: &[PartitionColumn]) -> String {
    columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
}

fn not_dates(column: &str, files: &[TierFile]) -> Error {
    let sample = files
        .iter()
        .filter_map(|f| f.partition.get(column).cloned().flatten())
        .find(|v| parse_instant(v).is_none())
        .unwrap_or_else(|| "null".into());
    Error::invalid(format!(
        "partition column {column:?} does not hold dates or timestamps (a value: {sample:?}); \
         an age rule needs a date, a timestamp or an ISO date string (YYYY-MM-DD)"
    ))
}

/// A partition value as an instant: `YYYY-MM-DD` (the start of that day, UTC),
/// `YYYY-MM-DD HH:MM:SS[.f]` or RFC 3339.
pub fn parse_instant(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(day) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return day.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(value, format) {
            return Some(t.and_utc());
        }
    }
    None
}

/// The moves that bring every due partition of `files` into its class at `now`.
pub fn plan(files: &[TierFile], age_by: &AgeBy, steps: &TierSteps, now: DateTime<Utc>) -> Result<TierPlan> {
    let mut plan =
        TierPlan { age_by: age_by.clone(), moves: Vec::new(), files_in_place: 0, files_not_due: 0, files_archived: 0 };
    let mut moves: BTreeMap<(BTreeMap<String, Option<String>>, StorageClass), TierMove> = BTreeMap::new();
    for file in files {
        let born = match age_by {
            AgeBy::Partition(column) => {
                let value = file.partition.get(column).cloned().flatten();
                match value.as_deref().and_then(parse_instant) {
                    Some(t) => t,
                    // A null partition value has no age: it stays.
                    None if value.is_none() => {
                        plan.files_not_due += 1;
                        continue;
                    }
                    None => return Err(not_dates(column, std::slice::from_ref(file))),
                }
            }
            AgeBy::AddTime => DateTime::from_timestamp_millis(file.added_ms).unwrap_or(now),
        };
        let age = now - born;
        let Some(class) = steps.class_for(age.to_std().unwrap_or_default()) else {
            plan.files_not_due += 1;
            continue;
        };
        if file.storage_class.coldness() >= class.coldness() {
            plan.files_in_place += 1;
            continue;
        }
        if file.storage_class.needs_restore() {
            plan.files_archived += 1;
            continue;
        }
        let partition = match age_by {
            AgeBy::Partition(_) => file.partition.clone(),
            AgeBy::AddTime => BTreeMap::new(),
        };
        let age_days = age.num_days();
        let entry = moves.entry((partition.clone(), class)).or_insert_with(|| TierMove {
            partition,
            age_days,
            storage_class: class,
            files: Vec::new(),
            bytes: 0,
        });
        entry.age_days = entry.age_days.min(age_days);
        entry.files.push(file.path.clone());
        entry.bytes += file.size;
    }
    plan.moves = moves.into_values().collect();
    for m in &mut plan.moves {
        m.files.sort();
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, day: Option<&str>, class: StorageClass) -> TierFile {
        let mut partition = BTreeMap::new();
        partition.insert("day".to_string(), day.map(str::to_string));
        TierFile { path: path.into(), size: 100, partition, added_ms: 0, storage_class: class }
    }

    fn at(s: &str) -> DateTime<Utc> {
        parse_instant(s).unwrap()
    }

    #[test]
    fn partitions_move_to_the_class_their_age_asks_for_and_never_warm_up() {
        let steps = TierSteps::parse("30d:STANDARD_IA,180d:GLACIER_IR").unwrap();
        let files = vec![
            file("a", Some("2026-11-25"), StorageClass::Standard), // 7 days: not due
            file("b", Some("2026-10-01"), StorageClass::Standard), // 62 days: IA
            file("c", Some("2026-10-01"), StorageClass::StandardIa), // there already
            file("d", Some("2025-12-01"), StorageClass::StandardIa), // 366 days: GLACIER_IR
            file("e", Some("2025-12-01"), StorageClass::DeepArchive), // colder: stays
            file("f", None, StorageClass::Standard),               // null: no age
        ];
        let columns = [PartitionColumn { name: "day".into(), temporal: true }];
        let by = age_by(&columns, None, &files).unwrap();
        let plan = plan(&files, &by, &steps, at("2026-12-02")).unwrap();
        assert_eq!(plan.moves.len(), 2, "{plan:#?}");
        let ia = plan.moves.iter().find(|m| m.storage_class == StorageClass::StandardIa).unwrap();
        assert_eq!((ia.files.clone(), ia.age_days), (vec!["b".to_string()], 62));
        let ir = plan.moves.iter().find(|m| m.storage_class == StorageClass::GlacierIr).unwrap();
        assert_eq!(ir.files, vec!["d".to_string()]);
        assert_eq!((plan.files_in_place, plan.files_not_due), (2, 2));
        // Once moved, nothing is left to do.
        let moved: Vec<TierFile> = files
            .iter()
            .map(|f| match f.path.as_str() {
                "b" => TierFile { storage_class: StorageClass::StandardIa, ..f.clone() },
                "d" => TierFile { storage_class: StorageClass::GlacierIr, ..f.clone() },
                _ => f.clone(),
            })
            .collect();
        assert!(super::plan(&moved, &by, &steps, at("2026-12-02")).unwrap().moves.is_empty());
    }

    #[test]
    fn archived_files_are_not_copied_colder() {
        let steps = TierSteps::parse("30d:GLACIER,365d:DEEP_ARCHIVE").unwrap();
        let files = vec![
            file("a", Some("2024-01-01"), StorageClass::Glacier), // due for DEEP_ARCHIVE, needs a restore first
            file("b", Some("2024-01-01"), StorageClass::Standard),
        ];
        let by = AgeBy::Partition("day".into());
        let plan = plan(&files, &by, &steps, at("2026-12-02")).unwrap();
        assert_eq!(plan.files_archived, 1);
        assert_eq!(plan.moves.len(), 1);
        assert_eq!(
            (plan.moves[0].files.clone(), plan.moves[0].storage_class),
            (vec!["b".to_string()], StorageClass::DeepArchive)
        );
    }

    #[test]
    fn the_age_column_must_hold_dates() {
        let files = vec![file("a", Some("eu-west"), StorageClass::Standard)];
        let string_column = [PartitionColumn { name: "day".into(), temporal: false }];
        let err = age_by(&string_column, Some("day"), &files).unwrap_err().to_string();
        assert!(err.contains("eu-west"), "{err}");
        let err = age_by(&string_column, None, &files).unwrap_err().to_string();
        assert!(err.contains("no partition column"), "{err}");
        let err = age_by(&string_column, Some("region"), &files).unwrap_err().to_string();
        assert!(err.contains("region") && err.contains("not a partition column"), "{err}");
        // ISO date strings in a string column age the partitions.
        let files = vec![file("a", Some("2024-05-01"), StorageClass::Standard)];
        assert_eq!(age_by(&string_column, None, &files).unwrap(), AgeBy::Partition("day".into()));
        assert_eq!(age_by(&[], None, &files).unwrap(), AgeBy::AddTime);
    }

    #[test]
    fn unpartitioned_files_age_from_when_they_were_added() {
        let steps = TierSteps::parse("30d:STANDARD_IA").unwrap();
        let now = at("2026-12-02");
        let old = TierFile {
            path: "old".into(),
            size: 5,
            partition: BTreeMap::new(),
            added_ms: at("2026-09-01").timestamp_millis(),
            storage_class: StorageClass::Standard,
        };
        let new = TierFile { path: "new".into(), added_ms: at("2026-11-30").timestamp_millis(), ..old.clone() };
        let plan = plan(&[old, new], &AgeBy::AddTime, &steps, now).unwrap();
        assert_eq!(plan.moves.len(), 1);
        assert_eq!(plan.moves[0].files, vec!["old".to_string()]);
        assert_eq!(plan.files_not_due, 1);
    }

    #[test]
    fn partition_values_parse_as_days_and_instants() {
        assert_eq!(parse_instant("2024-05-01"), Some(at("2024-05-01T00:00:00Z")));
        assert!(parse_instant("2024-05-01 10:30:00").is_some());
        assert!(parse_instant("2024-05-01 10:30:00.123456").is_some());
        assert!(parse_instant("2024-05-01T10:30:00.000000Z").is_some());
        assert!(parse_instant("May 1").is_none());
    }
}
