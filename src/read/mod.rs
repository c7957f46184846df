//! Reading a table: predicates, scan planning and the scan itself.
//!
//! ```text
//! filter (SQL) ─▶ Predicate (parsed against the schema)
//! snapshot ─▶ partition pruning (exact) ─▶ statistics skipping ─▶ ScanPlan (files kept)
//!          ─▶ DataFusion over delta-rs's provider, through a BoundedStore ─▶ batches + ScanReport
//! ```
//!
//! | module | what it holds |
//! |---|---|
//! | [`changes`] | [`Table::changes`](crate::Table::changes): the change data feed over a range of versions |
//! | [`predicate`] | SQL boolean expressions: parsing, exact partition matching, evaluation on rows and on file statistics |
//! | [`scan`] | [`ScanBuilder`](scan::ScanBuilder), planning, the batch stream and its [`ScanReport`](scan::ScanReport) |
//!
//! Words: a *predicate* is a boolean expression; *pruning* drops files by partition
//! values, *skipping* by statistics; a *scan plan* is the files kept; a *scan report*
//! says what each step kept and the bytes read. Builds on `table` only; the `write`,
//! `change` and `maintain` wings use predicates and scan plans.

pub mod changes;
pub mod predicate;
pub mod scan;

pub use changes::{CHANGE_COLUMNS, Changes};
pub use predicate::Predicate;
pub use scan::{Scan, ScanBuilder, ScanPlan, ScanReport};
