//! What a table's storage costs a month, by class and by partition range, and what
//! a tiering policy would save: a pure function of the live files (with the class
//! the log records for each), the prices, and optionally a tiering plan. No request
//! per file: the classes come from the log (`sediment info --check-storage-classes`
//! compares them with the store).
//!
//! A *range* is a month of the partition column the table ages by (`2024-05`), or
//! one partition value of another first partition column, or the whole table when it
//! is unpartitioned. Costs use S3's billing rules: 128 KB minimum per object in the
//! infrequent-access and instant-retrieval classes, 40 KB overhead per archived one.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

pub use sediment_catalog::tiering::StoragePrices;

use super::StorageClass;
use super::planner::{AgeBy, TierFile, TierPlan, parse_instant};

/// Files, bytes and monthly cost of one class.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ClassCost {
    #[schema(value_type = String)]
    pub storage_class: StorageClass,
    pub files: usize,
    pub bytes: u64,
    /// Estimated USD per month.
    pub monthly_usd: f64,
}

/// One partition range's storage.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RangeCost {
    /// `2024-05` (a month of the age column), a partition value, or `all`.
    pub range: String,
    pub partitions: usize,
    pub classes: Vec<ClassCost>,
    pub monthly_usd: f64,
}

/// What the policy would change.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PolicySavings {
    /// The steps, as the CLI writes them.
    pub policy: String,
    pub files_to_move: usize,
    pub bytes_to_move: u64,
    /// The monthly cost once every due file is in its class.
    pub monthly_usd_after: f64,
    pub monthly_savings_usd: f64,
}

/// A table's storage cost.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CostReport {
    pub classes: Vec<ClassCost>,
    pub ranges: Vec<RangeCost>,
    pub monthly_usd: f64,
    #[schema(value_type = Object)]
    pub prices: StoragePrices,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicySavings>,
}

/// The range a file belongs to.
fn range_of(file: &TierFile, by: Option<&AgeBy>) -> String {
    match by {
        Some(AgeBy::Partition(column)) => match file.partition.get(column).cloned().flatten() {
            Some(value) => match parse_instant(&value) {
                Some(t) => t.format("%Y-%m").to_string(),
                None => value,
            },
            None => "null".into(),
        },
        _ => match file.partition.iter().next() {
            Some((_, value)) => value.clone().unwrap_or_else(|| "null".into()),
            None => "all".into(),
        },
    }
}

fn class_costs(files: &[(&TierFile, StorageClass)], prices: &StoragePrices) -> Vec<ClassCost> {
    let mut by_class: BTreeMap<StorageClass, (ClassCost, Vec<f64>)> = BTreeMap::new();
    for (file, class) in files {
        let (entry, costs) = by_class
            .entry(*class)
            .or_insert((ClassCost { storage_class: *class, files: 0, bytes: 0, monthly_usd: 0.0 }, Vec::new()));
        entry.files += 1;
        entry.bytes += file.size;
        costs.push(prices.object_month(*class, file.size));
    }
    by_class
        .into_values()
        .map(|(mut entry, costs)| {
            entry.monthly_usd = sum_in_order(costs);
            entry
        })
        .collect()
}

/// The sum of `values` in ascending order: the same values give the same sum to the
/// last digit whatever order a reader lists the files in (a snapshot and the log view
/// differ).
fn sum_in_order(mut values: Vec<f64>) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values.into_iter().sum()
}

fn total(classes: &[ClassCost]) -> f64 {
    classes.iter().map(|c| c.monthly_usd).sum()
}

/// The cost of `files` at `prices`, by class and by range (`age_by`: how the table's
/// partitions age, when known), and with `plan` what its policy (`policy`, its steps
/// as text) would save.
pub fn cost_report(
    files: &[TierFile],
    age_by: Option<&AgeBy>,
    prices: &StoragePrices,
    plan: Option<(&TierPlan, String)>,
) -> CostReport {
    let now: Vec<(&TierFile, StorageClass)> = files.iter().map(|f| (f, f.storage_class)).collect();
    let classes = class_costs(&now, prices);
    type Range<'a> =
        (Vec<(&'a TierFile, StorageClass)>, std::collections::HashSet<&'a BTreeMap<String, Option<String>>>);
    let mut ranges: BTreeMap<String, Range<'_>> = BTreeMap::new();
    for (file, class) in &now {
        let entry = ranges.entry(range_of(file, age_by)).or_default();
        entry.0.push((file, *class));
        entry.1.insert(&file.partition);
    }
    let ranges = ranges
        .into_iter()
        .map(|(range, (files, partitions))| {
            let classes = class_costs(&files, prices);
            RangeCost { range, partitions: partitions.len(), monthly_usd: total(&classes), classes }
        })
        .collect();
    let monthly_usd = total(&classes);
    let policy = plan.map(|(plan, policy)| {
        let target: HashMap<&str, StorageClass> =
            plan.moves.iter().flat_map(|m| m.files.iter().map(move |f| (f.as_str(), m.storage_class))).collect();
        let after = sum_in_order(
            now.iter()
                .map(|(f, class)| prices.object_month(target.get(f.path.as_str()).copied().unwrap_or(*class), f.size))
                .collect(),
        );
        PolicySavings {
            policy,
            files_to_move: plan.files(),
            bytes_to_move: plan.bytes(),
            monthly_usd_after: after,
            monthly_savings_usd: monthly_usd - after,
        }
    });
    CostReport { classes, ranges, monthly_usd, prices: *prices, policy }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, day: &str, size: u64, class: StorageClass) -> TierFile {
        TierFile {
            path: path.into(),
            size,
            partition: [("day".to_string(), Some(day.to_string()))].into(),
            added_ms: 0,
            storage_class: class,
        }
    }

    #[test]
    fn the_same_files_in_any_order_cost_the_same_to_the_last_digit() {
        // Sizes whose per-file costs do not add up exactly in floating point.
        let files: Vec<TierFile> = (0..200u64)
            .map(|i| file(&format!("f{i:03}"), "2024-05-01", 1 + i * 7919 % 65_537, StorageClass::Standard))
            .collect();
        let mut reversed = files.clone();
        reversed.reverse();
        let prices = StoragePrices::default();
        let forward = serde_json::to_value(cost_report(&files, None, &prices, None)).unwrap();
        let backward = serde_json::to_value(cost_report(&reversed, None, &prices, None)).unwrap();
        assert_eq!(forward, backward);
    }

    #[test]
    fn costs_add_up_by_class_and_range_and_the_policy_saves_what_it_moves() {
        const GB: u64 = 1 << 30;
        let files = vec![
            file("a", "2024-05-01", 10 * GB, StorageClass::Standard),
            file("b", "2024-05-02", 10 * GB, StorageClass::Standard),
            file("c", "2024-06-01", 10 * GB, StorageClass::StandardIa),
        ];
        let prices = StoragePrices::default();
        let by = AgeBy::Partition("day".into());
        let plan = TierPlan {
            age_by: by.clone(),
            moves: vec![super::super::TierMove {
                partition: files[0].partition.clone(),
                age_days: 200,
                storage_class: StorageClass::StandardIa,
                files: vec!["a".into()],
                bytes: 10 * GB,
            }],
            files_in_place: 1,
            files_not_due: 1,
            files_archived: 0,
        };
        let report = cost_report(&files, Some(&by), &prices, Some((&plan, "30d:STANDARD_IA".into())));
        assert!((report.monthly_usd - (20.0 * 0.023 + 10.0 * 0.0125)).abs() < 1e-9, "{report:?}");
        assert_eq!(report.classes.len(), 2);
        let ranges: Vec<(&str, usize)> = report.ranges.iter().map(|r| (r.range.as_str(), r.partitions)).collect();
        assert_eq!(ranges, [("2024-05", 2), ("2024-06", 1)]);
        let saved = report.policy.unwrap().monthly_savings_usd;
        assert!((saved - 10.0 * (0.023 - 0.0125)).abs() < 1e-9, "{saved}");
    }
}
