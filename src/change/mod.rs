//! Changing rows in place: deletes, updates and merges, on copy-on-write tables and on
//! tables with deletion vectors.
//!
//! ```text
//! predicate or source keys ─▶ candidate files (pruned by partition and statistics)
//!          ─▶ probe: which candidates really hold a matching row
//!          ─▶ copy-on-write: rewrite those files without / with changed rows
//!             deletion vectors: mark the rows deleted, write only their new versions
//!          ─▶ one commit (remove + add), planned again on the newest version after a conflict
//! ```
//!
//! | module | what it holds |
//! |---|---|
//! | [`dml`] | [`Table::delete`](crate::Table::delete) and [`Table::update`](crate::Table::update) |
//! | [`merge`] | [`Merge`](merge::Merge): merges, upserts and SCD type 2 by key; the source, its key index, the clauses, pruning, the file tasks |
//! | [`feed`] | the change data feed: `_change_data/` files and `cdc` actions of every change; which operation writes what |
//! | `tasks` | one tokio task per candidate file, several in flight, for every change |
//! | [`deletion_vectors`] | writing deletion-vector files and re-adding marked files with their descriptors |
//!
//! Words: a *candidate* is a file that may hold a match; a file is *rewritten* (its
//! unchanged rows copied to a new file) or *marked* (its changed rows' positions put in
//! its deletion vector); rows are *inserted*, *updated*, *deleted*, *copied* or
//! *unchanged*. Builds on `table`, `read` and `write`'s sink.

pub mod deletion_vectors;
pub mod dml;
pub mod feed;
pub mod merge;
pub(crate) mod tasks;

pub use dml::{ChangeOptions, ChangeReport, DeleteReport, UpdateReport};
pub use merge::{
    DEFAULT_SOURCE_MEMORY_LIMIT, MatchedAction, Merge, MergeReport, NotMatchedAction, NotMatchedBySourceAction,
    Scd2Options,
};
