//! Executing a merge: one target file at a time, then the inserts.
//!
//! A candidate file is first *probed*: only its key columns are read and looked up in
//! the source's key index. A file without a matching key is left alone. Otherwise it
//! is read whole, each batch joined with its matching source rows, the clauses
//! applied in order, and the result streamed into new files. Output is held back
//! (up to [`HOLD_BACK_BYTES`]) until a row really changes, so a file whose matched
//! rows are all identical to the source is neither written nor removed.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use deltalake::arrow::compute::kernels::boolean::{and, not, or};
use deltalake::arrow::compute::kernels::cmp::distinct;
use deltalake::arrow::compute::kernels::zip::zip;
use deltalake::arrow::compute::{cast, filter_record_batch, is_not_null, take_record_batch};
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::Add;
use deltalake::parquet::arrow::arrow_reader::ArrowReaderMetadata;
use deltalake::parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sediment_compactor::reader::StoreFileReader;

use super::clauses::{Action, Compiled, CompiledClause, condition_mask};
use super::source::MergeSource;
use crate::change::feed::{ChangeFeed, ChangeType};
use crate::error::{Error, Result};
use crate::table::Table;
use crate::table::schema::SchemaMode;
use crate::table::storage::IoSettings;
use crate::write::sink::FileSink;

/// Unchanged output of one file held in memory before it is written anyway.
const HOLD_BACK_BYTES: usize = 64 * 1024 * 1024;

/// Source rows joined and inserted per step.
const INSERT_CHUNK: usize = 65_536;

/// What a merge needs to process files, shared by the tasks.
pub(crate) struct MergeJob {
    pub table: Table,
    /// The table's store, bounded and counted by the merge's limiter: every data file
    /// the merge reads goes through it.
    pub store: Arc<dyn deltalake::ObjectStore>,
    pub io: IoSettings,
    pub source: Arc<MergeSource>,
    pub compiled: Compiled,
    pub target_file_size: u64,
    /// Mark changed rows of files without a deletion vector deleted (and write their
    /// new versions to new files) instead of rewriting the files.
    pub deletion_vectors: bool,
    /// The merge's new rows (new versions of marked rows, inserts): the file tasks
    /// write the new versions of a partition's files into one sink for that partition
    /// (a file per partition, not one per touched file), inserts go to a sink of
    /// their own (the same one on an unpartitioned table). Sinks are made on their
    /// first row; a partition's is closed once its last file is marked, the others
    /// together at the end (in parallel). Shared with the jobs of a merge's key ranges.
    pub new_rows: NewRows,
    /// Where changed, deleted and inserted rows go, on tables whose change data feed
    /// is active. Shared with the jobs of a merge's key ranges.
    pub feed: Option<Arc<ChangeFeed>>,
}

/// See [`MergeJob::new_rows`].
pub(crate) type NewRows = Arc<std::sync::Mutex<NewRowSinks>>;

/// The sinks of a merge's new rows.
#[derive(Default)]
pub(crate) struct NewRowSinks {
    /// Open sinks by partition (`""`: inserts, or the whole of an unpartitioned table).
    open: HashMap<String, Arc<tokio::sync::Mutex<FileSink>>>,
    /// Sinks closed early (their partition's files were all done), closing.
    closing: Vec<tokio::task::JoinHandle<Result<Vec<Add>>>>,
}

/// A target file's fate.
pub(crate) enum Outcome {
    Untouched,
    Removed,
    Rewritten(Vec<Add>),
    /// The file stays, with these row positions deleted (the new versions of its
    /// updated rows are among the merge's new rows).
    Marked {
        positions: Vec<u64>,
    },
}

/// What happened to one target file.
pub(crate) struct FileResult {
    pub add: Add,
    pub outcome: Outcome,
    /// Source rows that matched a row of this file.
    pub matched_sources: Vec<u32>,
    /// Source rows to insert because a matched clause said so (SCD type 2).
    pub reinsert: Vec<u32>,
    pub rows_updated: u64,
    pub rows_unchanged: u64,
    pub rows_deleted: u64,
    pub rows_copied: u64,
}

impl FileResult {
    fn untouched(add: Add) -> Self {
        Self {
            add,
            outcome: Outcome::Untouched,
            matched_sources: Vec::new(),
            reinsert: Vec::new(),
            rows_updated: 0,
            rows_unchanged: 0,
            rows_deleted: 0,
            rows_copied: 0,
        }
    }
}

impl MergeJob {
    /// Merge the source into one target file. `probe`: read the keys first and leave
    /// the file alone when none matches. `rewrite`: whether matched rows may change
    /// (without it, as for an insert-only merge, the probe alone says which source
    /// keys exist).
    pub(crate) async fn merge_file(self: Arc<Self>, add: Add, probe: bool, rewrite: bool) -> Result<FileResult> {
        // Marking rows reads the key columns first itself: no separate probe.
        if rewrite && self.deletion_vectors {
            return self.mark_rows(add).await;
        }
        // A small file is fetched whole once: the probe and the rewrite both read that copy.
        let mut fetched = None;
        if probe || !rewrite {
            let matched = async {
                let reader = match add.deletion_vector {
                    None => Some(self.open_add(&add).await?),
                    Some(_) => None,
                };
                fetched = reader.as_ref().and_then(StoreFileReader::fetched_bytes);
                self.matched_keys(&add, rewrite, reader).await
            }
            .await
            .map_err(|e| e.context(format!("reading {}", add.path)))?;
            if matched.is_empty() || !rewrite {
                let mut result = FileResult::untouched(add);
                result.matched_sources = matched;
                return Ok(result);
            }
        }
        // Only a file without a deletion vector was fetched.
        let reader = match fetched {
            Some(bytes) => Some(StoreFileReader::from_fetched(self.store.clone(), add_path(&add)?, bytes)),
            None => None,
        };
        self.rewrite(add.clone(), reader).await.map_err(|e| e.context(format!("rewriting {}", add.path)))
    }

    /// The rows of `add` with `columns` (all without), in the table's types. A file
    /// without a deletion vector is read straight from its parquet file; one with a
    /// vector through delta-rs's scan, which applies it.
    /// `reader`: the file already opened (a file with a deletion vector ignores it).
    async fn read(
        &self,
        add: &Add,
        columns: Option<&[String]>,
        reader: Option<StoreFileReader>,
    ) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        let schema = match columns {
            Some(columns) => self.table_columns(columns)?,
            None => self.compiled.table_schema.clone(),
        };
        if add.deletion_vector.is_none() {
            return self.read_file(add, schema, reader).await;
        }
        let ctx = SessionContext::new();
        self.table.delta().update_datafusion_session(&ctx.state())?;
        let provider = self.table.delta().table_provider().with_adds([add.clone()]).build().await?;
        let mut frame = ctx.read_table(Arc::new(provider))?;
        if let Some(columns) = columns {
            let names: Vec<&str> = columns.iter().map(String::as_str).collect();
            frame = frame.select_columns(&names)?;
        }
        let stream = frame.execute_stream().await?;
        Ok(stream.map(move |batch| to_table_types(&batch?, &schema)).boxed())
    }

    /// The rows of `add`'s parquet file (its deletion vector not applied) with
    /// `schema`'s columns: the file's columns among them are decoded, partition
    /// columns come from the `add`, columns the file predates are nulls.
    async fn read_file(
        &self,
        add: &Add,
        schema: SchemaRef,
        reader: Option<StoreFileReader>,
    ) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        let reader = match reader {
            Some(reader) => reader,
            None => self.open_add(add).await?,
        };
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
        let file_schema = builder.schema().clone();
        let roots: Vec<usize> = schema.fields().iter().filter_map(|f| file_schema.index_of(f.name()).ok()).collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let builder = builder.with_projection(mask).with_batch_size(8192);
        let add = add.clone();
        let stream = builder.build()?;
        Ok(stream
            .map(move |batch| crate::change::deletion_vectors::with_partition_values(&batch?, &add, &schema))
            .boxed())
    }

    /// The source rows whose keys the file holds, reading only its key columns;
    /// with `first_only`, stop at the first one.
    async fn matched_keys(&self, add: &Add, first_only: bool, reader: Option<StoreFileReader>) -> Result<Vec<u32>> {
        let mut matched = Vec::new();
        let mut stream = self.read(add, Some(&self.source.keys.columns), reader).await?;
        while let Some(batch) = stream.next().await {
            matched.extend(self.source.lookup(&batch?)?.iter().flatten());
            if first_only && !matched.is_empty() {
                break;
            }
        }
        Ok(matched)
    }

    /// A reader of data file `path` (`size` bytes) through the merge's bounded store:
    /// fetched whole now when small, else read by ranges.
    async fn open(&self, path: deltalake::Path, size: u64) -> Result<StoreFileReader> {
        StoreFileReader::open(self.store.clone(), path.clone(), size, &self.io)
            .await
            .map_err(|e| Error::from(e).context(format!("reading data file {path}")))
    }

    /// A reader of the data file of `add`.
    async fn open_add(&self, add: &Add) -> Result<StoreFileReader> {
        self.open(add_path(add)?, add.size.max(0) as u64).await
    }

    /// The table's schema with only `columns`, in that order.
    fn table_columns(&self, columns: &[String]) -> Result<SchemaRef> {
        let schema = &self.compiled.table_schema;
        let indices = columns.iter().map(|c| Ok(schema.index_of(c)?)).collect::<Result<Vec<usize>>>()?;
        Ok(Arc::new(schema.project(&indices)?))
    }

    /// A sink for new files of the table.
    pub(crate) fn sink(&self) -> Result<FileSink> {
        FileSink::new(
            &self.table,
            self.compiled.table_schema.clone(),
            self.table.partition_columns()?,
            SchemaMode::Strict,
            self.target_file_size,
        )
    }

    async fn rewrite(&self, add: Add, reader: Option<StoreFileReader>) -> Result<FileResult> {
        let mut result = FileResult::untouched(add);
        let mut sink = self.sink()?;
        sink.expect_rows(result.add.stats.as_deref().and_then(crate::table::log_files::num_records));
        let mut held: Vec<RecordBatch> = Vec::new();
        let mut held_bytes = 0usize;
        let outcome: Result<()> = async {
            let mut stream = self.read(&result.add, None, reader).await?;
            while let Some(target) = stream.next().await {
                let target = target?;
                let merged = self.merge_rows(&target, &mut result)?;
                self.record_changes(&target, &merged).await?;
                let out = Self::kept_rows(merged, target.num_rows(), &mut result)?;
                if out.num_rows() > 0 {
                    held_bytes += out.get_array_memory_size();
                    held.push(out);
                }
                // Once a row changed (in this batch or an earlier one, even one whose
                // rows were all deleted), everything held and everything after is written.
                let changed = result.rows_updated > 0 || result.rows_deleted > 0;
                if changed || held_bytes > HOLD_BACK_BYTES {
                    for out in held.drain(..) {
                        sink.write(&out).await?;
                    }
                    held_bytes = 0;
                }
            }
            Ok(())
        }
        .await;
        let adds = sink.close(&self.table, outcome).await?;
        if result.rows_updated == 0 && result.rows_deleted == 0 {
            FileSink::abort(&self.table, &adds).await;
            result.rows_copied = 0;
        } else if result.rows_copied == 0 && result.rows_updated == 0 {
            FileSink::abort(&self.table, &adds).await;
            result.outcome = Outcome::Removed;
        } else {
            result.outcome = Outcome::Rewritten(adds);
        }
        Ok(result)
    }

    /// The rows of a merged target batch of `rows` rows to keep, changed or not
    /// (counted in `result`).
    fn kept_rows(merged: MergedRows, rows: usize, result: &mut FileResult) -> Result<RecordBatch> {
        let deleted = merged.deleted.true_count();
        result.rows_deleted += deleted as u64;
        result.rows_copied += (rows - deleted - merged.changed.true_count()) as u64;
        Ok(if deleted > 0 { filter_record_batch(&merged.rows, &not(&merged.deleted)?)? } else { merged.rows })
    }

    /// Write the changes of one merged target batch to the change data feed (when the
    /// table has one): deleted rows, and changed rows before and after.
    async fn record_changes(&self, target: &RecordBatch, merged: &MergedRows) -> Result<()> {
        let Some(feed) = &self.feed else { return Ok(()) };
        if merged.deleted.true_count() > 0 {
            feed.write(&filter_record_batch(target, &merged.deleted)?, ChangeType::Delete).await?;
        }
        if merged.changed.true_count() > 0 {
            feed.write(&filter_record_batch(target, &merged.changed)?, ChangeType::UpdatePreimage).await?;
            feed.write(&filter_record_batch(&merged.rows, &merged.changed)?, ChangeType::UpdatePostimage).await?;
        }
        Ok(())
    }

    /// Apply the clauses to one target batch: every row, with updates applied, and
    /// which rows changed and which are deleted.
    fn merge_rows(&self, target: &RecordBatch, result: &mut FileResult) -> Result<MergedRows> {
        let source_rows = self.source.lookup(target)?;
        let source = self.source.rows.take(&source_rows)?;
        self.merge_joined(target, &source_rows, &source, result)
    }

    /// [`Self::merge_rows`] for rows whose source rows are known: `source_rows` (one
    /// id per target row, null where none matched) and those rows, `source`.
    fn merge_joined(
        &self,
        target: &RecordBatch,
        source_rows: &UInt32Array,
        source: &RecordBatch,
        result: &mut FileResult,
    ) -> Result<MergedRows> {
        let compiled = &self.compiled;
        let rows = target.num_rows();
        let joined = compiled.join(target, source)?;
        let mut matched = is_not_null(source_rows)?;
        if let Some(filter) = &compiled.join_filter {
            matched = and(&matched, &crate::read::predicate::Predicate::mask(filter, &joined)?)?;
        }
        for i in 0..rows {
            if matched.value(i) {
                result.matched_sources.push(source_rows.value(i));
            }
        }
        let mut state = BatchState {
            columns: target.columns().to_vec(),
            deleted: BooleanArray::from(vec![false; rows]),
            changed: BooleanArray::from(vec![false; rows]),
        };
        self.apply_in_order(&compiled.matched, matched.clone(), &mut state, &joined, source_rows, result)?;
        if !compiled.by_source.is_empty() {
            self.apply_in_order(&compiled.by_source, not(&matched)?, &mut state, &joined, source_rows, result)?;
        }
        let rows = RecordBatch::try_new(nullable(&compiled.table_schema), state.columns)?;
        Ok(MergedRows { rows, changed: state.changed, deleted: state.deleted })
    }

    /// The deletion-vector form of a rewrite: read the file in row order, mark the
    /// positions of changed and deleted rows, write the changed rows' new versions.
    async fn mark(&self, add: Add) -> Result<FileResult> {
        let mut result = FileResult::untouched(add);
        let path = deltalake::Path::from_url_path(&result.add.path)
            .map_err(|e| Error::new(crate::ErrorKind::Data, format!("bad data file path {}: {e}", result.add.path)))?;
        let size = result.add.size.max(0) as u64;
        // Fetched once (whole, when small) for both passes.
        let fetched = self.open(path, size).await?;
        let open = || fetched.clone();
        let mut positions: Vec<u64> = Vec::new();
        let partition = partition_key(&result.add);
        // The source row of each matched position, when the keys are read first.
        let mut matched_ids: Vec<u32> = Vec::new();
        let mut total_rows = 0u64;
        // Rows an earlier deletion vector removed are neither matched nor read; the new
        // vector holds them and the newly marked rows.
        let deleted = crate::change::deletion_vectors::deleted_positions(&self.table, &result.add).await?;
        let written: Result<()> = async {
            // The footer is read once: the second pass reuses it (a round trip less per
            // file on object stores).
            let mut reader = open();
            let metadata = ArrowReaderMetadata::load_async(&mut reader, Default::default()).await?;
            let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata.clone());
            total_rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
            // Without not-matched-by-source clauses only rows whose key matches can
            // change: find them from the key columns, then decode just those rows.
            let file_schema = builder.schema().clone();
            let key_roots: Vec<usize> =
                self.source.keys.columns.iter().filter_map(|k| file_schema.index_of(k).ok()).collect();
            // The other columns of the file: the second pass decodes only those (a
            // matched row's keys are its source row's).
            let other_roots: Vec<usize> = (0..file_schema.fields().len())
                .filter(|i| !self.source.keys.columns.iter().any(|k| k == file_schema.field(*i).name()))
                .collect();
            let (selected, stream) = if self.compiled.by_source.is_empty() && !key_roots.is_empty() {
                let mask = ProjectionMask::roots(builder.parquet_schema(), key_roots);
                let mut keys = builder.with_projection(mask).with_batch_size(8192).build()?;
                let mut matched: Vec<u64> = Vec::new();
                let mut offset = 0u64;
                let key_schema = self.table_columns(&self.source.keys.columns)?;
                while let Some(batch) = keys.try_next().await? {
                    let batch =
                        crate::change::deletion_vectors::with_partition_values(&batch, &result.add, &key_schema)?;
                    let found = self.source.lookup(&batch)?;
                    for i in 0..found.len() {
                        let position = offset + i as u64;
                        if found.is_valid(i) && deleted.binary_search(&position).is_err() {
                            matched.push(position);
                            matched_ids.push(found.value(i));
                        }
                    }
                    offset += batch.num_rows() as u64;
                }
                if matched.is_empty() {
                    return Ok(());
                }
                let selection = sediment_compactor::reader::row_selection(&matched, offset);
                let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(open(), metadata);
                let builder = if other_roots.is_empty() {
                    builder
                } else {
                    let mask = ProjectionMask::roots(builder.parquet_schema(), other_roots);
                    builder.with_projection(mask)
                };
                let stream = builder.with_row_selection(selection).with_batch_size(8192).build()?;
                (Some(matched), stream)
            } else {
                let (builder, live) = sediment_compactor::reader::skip_rows(builder, &deleted);
                (live, builder.with_batch_size(8192).build()?)
            };
            let mut stream = stream;
            let mut cursor = 0usize;
            while let Some(batch) = stream.try_next().await? {
                let target = crate::change::deletion_vectors::with_partition_values(
                    &batch,
                    &result.add,
                    &self.compiled.table_schema,
                )?;
                let (target, merged) = if !matched_ids.is_empty() {
                    // Matched rows read after the key pass: their source rows are known
                    // from it, and so are their keys (equal to the source's). (Without
                    // a key pass, `selected` may still hold the rows a vector leaves.)
                    let ids = matched_ids
                        .get(cursor..cursor + target.num_rows())
                        .ok_or_else(|| Error::internal("the reader returned more rows than were selected"))?;
                    let ids = UInt32Array::from(ids.to_vec());
                    let source = self.source.rows.take(&ids)?;
                    let target = self.with_source_keys(&target, &source)?;
                    let merged = self.merge_joined(&target, &ids, &source, &mut result)?;
                    (target, merged)
                } else {
                    let merged = self.merge_rows(&target, &mut result)?;
                    (target, merged)
                };
                self.record_changes(&target, &merged).await?;
                let gone = or(&merged.changed, &merged.deleted)?;
                let position = |i: usize| match &selected {
                    Some(matched) => matched[cursor + i],
                    None => (cursor + i) as u64,
                };
                positions.extend((0..gone.len()).filter(|i| gone.value(*i)).map(position));
                result.rows_deleted += merged.deleted.true_count() as u64;
                let updated = filter_record_batch(&merged.rows, &merged.changed)?;
                if updated.num_rows() > 0 {
                    self.write_new_rows(&partition, &updated).await?;
                }
                cursor += target.num_rows();
            }
            Ok(())
        }
        .await;
        written?;
        if positions.is_empty() {
            // Nothing changed, so nothing was written for this file.
            return Ok(result);
        }
        let positions = crate::change::deletion_vectors::union(&deleted, &positions);
        if positions.len() as u64 == total_rows {
            // Every row changed or went: replace the file outright.
            result.outcome = if result.rows_updated == 0 { Outcome::Removed } else { Outcome::Rewritten(Vec::new()) };
        } else {
            result.outcome = Outcome::Marked { positions };
        }
        Ok(result)
    }

    /// `target` with its key columns set to those of `source` (its matching rows,
    /// one per target row).
    fn with_source_keys(&self, target: &RecordBatch, source: &RecordBatch) -> Result<RecordBatch> {
        let mut columns = target.columns().to_vec();
        for key in &self.source.keys.columns {
            let index = target.schema().index_of(key)?;
            columns[index] = source
                .column_by_name(key)
                .cloned()
                .ok_or_else(|| Error::internal(format!("key column `{key}` missing from the source")))?;
        }
        Ok(RecordBatch::try_new(target.schema(), columns)?)
    }

    /// Apply `clauses` in order to the `remaining` rows: each row fires at most one,
    /// the first whose condition holds.
    fn apply_in_order(
        &self,
        clauses: &[CompiledClause],
        mut remaining: BooleanArray,
        state: &mut BatchState,
        joined: &RecordBatch,
        source_rows: &UInt32Array,
        result: &mut FileResult,
    ) -> Result<()> {
        for clause in clauses {
            if remaining.true_count() == 0 {
                break;
            }
            let fire = and(&remaining, &condition_mask(&clause.condition, joined)?)?;
            if fire.true_count() == 0 {
                continue;
            }
            state.apply(&self.compiled, &clause.action, &fire, joined, result)?;
            if clause.reinsert {
                result.reinsert.extend((0..fire.len()).filter(|i| fire.value(*i)).map(|i| source_rows.value(i)));
            }
            remaining = and(&remaining, &not(&fire)?)?;
        }
        Ok(())
    }

    /// Insert the source rows no target row matched (through the not-matched clauses)
    /// and the rows matched clauses asked to insert, into the merge's new rows.
    /// Returns the rows written.
    pub(crate) async fn insert(&self, unmatched: &[u32], reinsert: &[u32]) -> Result<u64> {
        let mask = |ids: &[u32]| {
            let mut mask = vec![false; self.source.rows.num_rows()];
            for id in ids {
                mask[*id as usize] = true;
            }
            mask
        };
        self.insert_scanned(&mask(unmatched), &mask(reinsert)).await
    }

    /// [`Self::insert`] by row-id masks, reading the source batch by batch (also a
    /// spilled one): the rows set in `unmatched` go through the not-matched clauses,
    /// those set in `reinsert` are inserted as the first clause says.
    pub(crate) async fn insert_scanned(&self, unmatched: &[bool], reinsert: &[bool]) -> Result<u64> {
        if self.compiled.not_matched.is_empty() || !unmatched.iter().chain(reinsert).any(|x| *x) {
            return Ok(0);
        }
        let mut inserted = 0u64;
        for item in self.source.rows.scan()? {
            let (start, batch) = item?;
            for (selected, through_clauses) in [(unmatched, true), (reinsert, false)] {
                let picked: Vec<u32> =
                    (0..batch.num_rows() as u32).filter(|i| selected[(start + i) as usize]).collect();
                for chunk in picked.chunks(INSERT_CHUNK) {
                    let rows = take_record_batch(&batch, &UInt32Array::from(chunk.to_vec()))?;
                    for out in self.insert_rows(&rows, through_clauses)? {
                        inserted += out.num_rows() as u64;
                        self.write_new_rows("", &out).await.map_err(|e| e.context("inserting new rows"))?;
                        if let Some(feed) = &self.feed {
                            feed.write(&out, ChangeType::Insert).await?;
                        }
                    }
                }
            }
        }
        Ok(inserted)
    }

    /// Write `batch` to the merge's new rows for `partition` (see [`Self::new_rows`]).
    async fn write_new_rows(&self, partition: &str, batch: &RecordBatch) -> Result<()> {
        let sink = {
            let mut sinks = self.new_rows.lock().map_err(|_| Error::internal("a merge task panicked"))?;
            match sinks.open.get(partition) {
                Some(sink) => sink.clone(),
                None => {
                    let sink = Arc::new(tokio::sync::Mutex::new(self.sink()?));
                    sinks.open.insert(partition.to_string(), sink.clone());
                    sink
                }
            }
        };
        sink.lock().await.write(batch).await
    }

    /// Delete the merge's new rows written so far (the merge failed).
    pub(crate) async fn abandon_new_rows(&self) {
        let _ = self.close_new_rows(Err(Error::internal("the merge failed"))).await;
    }

    /// Start closing the sink of `partition`'s new rows (no file of it is left to
    /// mark), in the background: its last row groups are encoded while other files
    /// are still read, and its buffers go early. Only for sinks no later step writes.
    pub(crate) fn close_partition(&self, partition: &str) {
        if let Ok(mut sinks) = self.new_rows.lock()
            && let Some(sink) = sinks.open.remove(partition)
        {
            let closing = self.spawn_close(sink, Ok(()));
            sinks.closing.push(closing);
        }
    }

    /// Close `sink` in a task of its own (closing encodes its last row groups).
    fn spawn_close(
        &self,
        sink: Arc<tokio::sync::Mutex<FileSink>>,
        outcome: Result<()>,
    ) -> tokio::task::JoinHandle<Result<Vec<Add>>> {
        let table = self.table.clone();
        tokio::spawn(async move {
            let sink = Arc::try_unwrap(sink).map_err(|_| Error::internal("a merge sink is still in use"))?.into_inner();
            sink.close(&table, outcome).await
        })
    }

    /// Close the merge's new rows after a run whose outcome is `outcome`: the files
    /// written, or, when the run or a close failed, the error (every file is deleted).
    pub(crate) async fn close_new_rows(&self, outcome: Result<()>) -> Result<Vec<Add>> {
        let failed = outcome.is_err();
        let closes: Vec<_> = match self.new_rows.lock() {
            Ok(mut sinks) => {
                let open: Vec<_> = sinks.open.drain().map(|(_, sink)| sink).collect();
                let mut closes: Vec<_> = sinks.closing.drain(..).collect();
                // The open sinks close in parallel.
                closes.extend(open.into_iter().map(|sink| {
                    self.spawn_close(sink, if failed { Err(Error::internal("the merge failed")) } else { Ok(()) })
                }));
                closes
            }
            Err(_) => return Err(Error::internal("a merge task panicked")),
        };
        let mut adds = Vec::new();
        let mut error = outcome.err();
        for closed in futures::future::join_all(closes).await {
            match closed.unwrap_or_else(|e| Err(Error::internal(format!("closing merge output failed: {e}")))) {
                Ok(closed) => adds.extend(closed),
                Err(e) => error = error.or(Some(e)),
            }
        }
        match error {
            None => Ok(adds),
            Some(e) => {
                FileSink::abort(&self.table, &adds).await;
                Err(e)
            }
        }
    }

    /// Mark the rows of `add` that the source changes or deletes, writing the changed
    /// rows' new versions (the deletion-vector form of a rewrite, also used by merges
    /// in key ranges on any table).
    pub(crate) async fn mark_rows(self: Arc<Self>, add: Add) -> Result<FileResult> {
        self.mark(add.clone()).await.map_err(|e| e.context(format!("marking rows of {}", add.path)))
    }

    /// Copy the rows of `add` that are not at `deleted` (ascending positions) into
    /// `sink`; returns how many.
    pub(crate) async fn copy_live_rows(&self, add: &Add, deleted: &[u64], sink: &mut FileSink) -> Result<u64> {
        let path = deltalake::Path::from_url_path(&add.path)
            .map_err(|e| Error::new(crate::ErrorKind::Data, format!("bad data file path {}: {e}", add.path)))?;
        let reader = self.open(path, add.size.max(0) as u64).await?;
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
        let (builder, _) = sediment_compactor::reader::skip_rows(builder, deleted);
        let mut stream = builder.with_batch_size(8192).build()?;
        let mut copied = 0u64;
        while let Some(batch) = stream.try_next().await? {
            let batch =
                crate::change::deletion_vectors::with_partition_values(&batch, add, &self.compiled.table_schema)?;
            copied += batch.num_rows() as u64;
            sink.write(&batch).await?;
        }
        Ok(copied)
    }

    /// The rows to insert for source rows `source`: through the not-matched clauses in
    /// order, or (for reinserts) with the first clause's values unconditionally.
    fn insert_rows(&self, source: &RecordBatch, through_clauses: bool) -> Result<Vec<RecordBatch>> {
        let compiled = &self.compiled;
        let rows = source.num_rows();
        let joined = compiled.join(&compiled.null_target(rows)?, source)?;
        let mut remaining = BooleanArray::from(vec![true; rows]);
        let mut out = Vec::new();
        for clause in &compiled.not_matched {
            let fire = if through_clauses {
                and(&remaining, &condition_mask(&clause.condition, &joined)?)?
            } else {
                remaining.clone()
            };
            if fire.true_count() > 0 {
                let rows = filter_record_batch(&joined, &fire)?;
                let columns = compiled
                    .table_schema
                    .fields()
                    .iter()
                    .zip(&clause.values)
                    .enumerate()
                    .map(|(index, (field, value))| match value {
                        Some(expr) => compiled.value(expr, &rows, index),
                        None => Ok(deltalake::arrow::array::new_null_array(field.data_type(), rows.num_rows())),
                    })
                    .collect::<Result<Vec<ArrayRef>>>()?;
                out.push(RecordBatch::try_new(nullable(&compiled.table_schema), columns)?);
                remaining = and(&remaining, &not(&fire)?)?;
            }
            if !through_clauses {
                break;
            }
        }
        Ok(out)
    }
}

/// The partition of a data file as a key of [`NewRows`] (never `""` for a file of a
/// partitioned table).
pub(crate) fn partition_key(add: &Add) -> String {
    let mut values: Vec<_> = add.partition_values.iter().collect();
    values.sort();
    values.iter().map(|(k, v)| format!("/{k}={}", v.as_deref().unwrap_or("\0"))).collect()
}

/// One target batch after the clauses: every row (updates applied), and masks.
struct MergedRows {
    rows: RecordBatch,
    changed: BooleanArray,
    deleted: BooleanArray,
}

/// The columns of one target batch as clauses change them.
struct BatchState {
    columns: Vec<ArrayRef>,
    deleted: BooleanArray,
    changed: BooleanArray,
}

impl BatchState {
    fn apply(
        &mut self,
        compiled: &Compiled,
        action: &Action,
        fire: &BooleanArray,
        joined: &RecordBatch,
        result: &mut FileResult,
    ) -> Result<()> {
        match action {
            Action::Delete => self.deleted = or(&self.deleted, fire)?,
            Action::Ignore => {}
            Action::Update(assignments) => {
                let mut differs = BooleanArray::from(vec![false; fire.len()]);
                for (index, expr) in assignments {
                    let value = compiled.value(expr, joined, *index)?;
                    let old = &self.columns[*index];
                    // Types without a comparison kernel count as changed.
                    let diff = distinct(old, &value).unwrap_or_else(|_| BooleanArray::from(vec![true; fire.len()]));
                    differs = or(&differs, &and(&diff, fire)?)?;
                    self.columns[*index] = zip(fire, &value, old)?;
                }
                let updated = differs.true_count();
                result.rows_updated += updated as u64;
                result.rows_unchanged += (fire.true_count() - updated) as u64;
                self.changed = or(&self.changed, &differs)?;
            }
        }
        Ok(())
    }
}

/// `schema` with every column nullable (merge output is checked by the sink).
fn nullable(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>()))
}

/// The table's columns present in `batch`, in the table's order and types (scans
/// return partition columns dictionary-encoded and last).
fn to_table_types(batch: &RecordBatch, table_schema: &SchemaRef) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for field in table_schema.fields() {
        let Some(column) = batch.column_by_name(field.name()) else { continue };
        let column = if column.data_type() == field.data_type() {
            column.clone()
        } else {
            cast(column, field.data_type()).map_err(|e| {
                Error::new(
                    crate::ErrorKind::Data,
                    format!(
                        "column `{}` read as {}, expected {}: {e}",
                        field.name(),
                        column.data_type(),
                        field.data_type()
                    ),
                )
            })?
        };
        fields.push(Field::new(field.name(), field.data_type().clone(), true));
        columns.push(column);
    }
    let options = deltalake::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)?)
}

/// The object store path of the data file of `add`.
fn add_path(add: &Add) -> Result<deltalake::Path> {
    deltalake::Path::from_url_path(&add.path)
        .map_err(|e| Error::new(crate::ErrorKind::Data, format!("bad data file path {}: {e}", add.path)))
}
