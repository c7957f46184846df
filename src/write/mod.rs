//! Writing a table: appends and overwrites, the file sink, the streaming writer and
//! the input files the CLI reads.
//!
//! ```text
//! batches ─▶ SchemaFitter ─▶ FileSink (partition split, zstd Parquet, statistics) ─▶ add actions
//!         ─▶ commit: commitInfo + [protocol, metaData] + [remove...] + add...
//!         ─▶ put-if-absent of _delta_log/<version>.json (If-None-Match on S3)
//! ```
//!
//! | module | what it holds |
//! |---|---|
//! | [`append`] | [`Table::write`](crate::Table::write): appends and overwrites (`replace_where`), re-planned on conflict |
//! | [`sink`] | [`FileSink`](sink::FileSink): batches in, data files and their `add` actions out |
//! | [`table_writer`] | [`TableWriter`](table_writer::TableWriter): buffers small batches, commits by size or age |
//! | [`constraints`] | Delta CHECK constraints: checked on every row the sink writes; [`Table::add_constraint`](crate::Table::add_constraint), `drop_constraint` |
//! | [`input`] | Parquet, CSV and NDJSON input files read as record batches |
//!
//! Words: a *write* turns batches into files and commits them; a *sink* writes files
//! nobody sees until a commit references them; a *buffer* is what a `TableWriter`
//! holds between commits. Builds on `table` (and `read`'s predicates for
//! `replace_where`); `change` and `maintain` write through the sink.

pub mod append;
pub mod constraints;
pub mod input;
pub(crate) mod sink;
pub mod table_writer;

pub use append::{WriteMode, WriteOptions, WriteReport};
pub use constraints::{AddConstraintReport, Constraint};
pub use sink::{DEFAULT_TARGET_FILE_SIZE, writer_properties, writer_properties_for};
pub use table_writer::{TableWriter, TableWriterSettings};
