//! The ground floor: a Delta table at a location and one version of it.
//!
//! Every other wing (`read`, `write`, `change`, `maintain`) builds on these; nothing
//! here imports from them.
//!
//! | module | what it holds |
//! |---|---|
//! | [`open`] | [`Table`]: opening, time travel by version or timestamp, the live file list ([`DataFile`]) |
//! | [`storage`] | table URIs (paths, `file://`, `memory://`, `s3://`) and storage options |
//! | [`features`] | which protocol features Sediment honours; refusals name the feature |
//! | [`schema`] | [`SchemaFitter`](schema::SchemaFitter): fitting batches to a table schema |
//! | [`commit`] | one commit with Sediment's `commitInfo`, on the snapshot it returns |
//! | [`conflict`] | the one retry policy of every writer, and the error of one that lost for good |
//! | [`clock`] | the injected clock retention, vacuum and expiry read "now" from |
//! | [`log`] | the files each commit added, removed and wrote as change data, and when |
//! | [`paths`] | log paths and deletion-vector files as store paths |
//! | [`history`] | the commits of a table, newest first |
//! | [`tags`] | named versions kept with the table under `_sediment/tags/` (create, list, delete, open by tag) |
//! | [`log_files`] | [`LogView`](log_files::LogView): a version's live files read from the log alone, for planning at scale |
//! | [`info`] | what a snapshot holds, its health and the orphan files beside it |
//!
//! Words: a *table* is a Delta table at a location; a *version* is one snapshot of it;
//! a *commit* is one log entry; a *data file* is one Parquet file a version references.
//!
//! ```no_run
//! # async fn example() -> sediment::Result<()> {
//! use sediment::{OpenOptions, Table};
//! let table = Table::open("s3://lake/bronze/events").await?;
//! let v3 = Table::open_with("s3://lake/bronze/events", OpenOptions::new().version(3)).await?;
//! assert!(v3.version() <= table.version());
//! # Ok(()) }
//! ```

pub mod clock;
pub mod commit;
pub mod conflict;
pub mod features;
pub mod history;
pub mod info;
pub mod log;
pub mod log_cache;
pub mod log_files;
pub mod open;
pub mod paths;
pub mod schema;
pub mod storage;
pub mod tags;

pub use open::{DataFile, OpenOptions, Table};
