//! Sediment's integration tests: one binary, a module per scenario.
//!
//! They run against a real S3-compatible server (moto, started by `scripts/test.sh`,
//! which exports `SEDIMENT_TEST_S3_ENDPOINT` and the `AWS_*` variables) and against
//! the real Delta tables in `../shared/conformance/`.

mod catalog;
mod change_feed;
mod cli;
mod common;
mod compaction;
mod concurrency;
mod conflicts;
mod conformance;
mod constraints;
mod crash;
mod daemons;
mod delete;
mod deletion_vectors;
mod expire;
mod faults;
mod interop;
mod merge;
mod merge_model;
mod pipelines;
mod raw_log;
mod s3_table;
mod service;
mod table_writer;
mod tags;
mod tiering;
mod vacuum;
