//! Reading data files from an object store as an async Parquet source.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use deltalake::DeltaTable;
use deltalake::kernel::DeletionVectorDescriptor;
use deltalake::parquet::arrow::ParquetRecordBatchStreamBuilder;
use deltalake::parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
use deltalake::parquet::arrow::async_reader::AsyncFileReader;
use deltalake::parquet::errors::{ParquetError, Result};
use deltalake::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::io::IoSettings;

/// Open the data file `key` (its path in the log, `size` bytes) for a compaction bin:
/// from its early fetch when one was started, else through [`StoreFileReader::open`]
/// with its share of the byte budget reserved first. A failed early fetch is this
/// read's failure.
pub(crate) async fn open_input_file(
    early: &crate::io::EarlyFetches,
    store: &Arc<dyn ObjectStore>,
    limiter: &Arc<crate::io::IoLimiter>,
    io: &IoSettings,
    key: &str,
    size: u64,
) -> crate::error::Result<(StoreFileReader, crate::io::BytesPermit)> {
    use crate::error::CompactionError;
    let path = Path::from_url_path(key).map_err(|e| CompactionError::Data(format!("bad data file path {key}: {e}")))?;
    match early.take(key).await {
        Some(Ok((bytes, budget))) => Ok((StoreFileReader::from_fetched(store.clone(), path, bytes), budget)),
        Some(Err(e)) => Err(CompactionError::Storage(format!("reading {key}: {e}"))),
        None => {
            let budget = limiter.reserve_bytes(io.bytes_to_open(size)).await;
            let reader = StoreFileReader::open(store.clone(), path, size, io)
                .await
                .map_err(|e| CompactionError::reading(key, e))?;
            Ok((reader, budget))
        }
    }
}

/// One Parquet file in an object store, of known size, read by ranges, or fetched
/// whole in one GET ([`StoreFileReader::open`]) and then read from memory (a clone
/// shares the fetched bytes).
#[derive(Clone)]
pub struct StoreFileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    /// Bytes read from the end of the file for its footer.
    footer_read: u64,
    /// The whole file, once fetched.
    fetched: Option<Bytes>,
}

impl StoreFileReader {
    /// A reader of `path` (`size` bytes) in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64) -> Self {
        Self { store, path, size, footer_read: 64 * 1024, fetched: None }
    }

    /// A reader of `path` (`size` bytes) under the I/O settings: a file at most
    /// `read_whole_files_below` (and within the byte budget) is fetched whole now, in one GET (footer, metadata and
    /// data from memory after that); a larger one reads its footer later, in one
    /// suffix read of `footer_read` bytes in the common case.
    pub async fn open(store: Arc<dyn ObjectStore>, path: Path, size: u64, settings: &IoSettings) -> Result<Self> {
        let mut reader = Self { footer_read: settings.footer_read.max(8), ..Self::new(store, path, size) };
        if settings.reads_whole(size) {
            reader.fetched =
                Some(reader.store.get(&reader.path).await.map_err(external)?.bytes().await.map_err(external)?);
        }
        Ok(reader)
    }

    /// A reader of `path` whose whole content `bytes` is already fetched.
    pub fn from_fetched(store: Arc<dyn ObjectStore>, path: Path, bytes: Bytes) -> Self {
        Self { fetched: Some(bytes.clone()), ..Self::new(store, path, bytes.len() as u64) }
    }

    /// The whole file when [`StoreFileReader::open`] fetched it (a cheap handle on the
    /// same bytes), so a second pass over the file needs no GET.
    pub fn fetched_bytes(&self) -> Option<Bytes> {
        self.fetched.clone()
    }

    /// The bytes `range` of the fetched file, or `None` when it was not fetched.
    fn slice(&self, range: &Range<u64>) -> Option<Result<Bytes>> {
        let bytes = self.fetched.as_ref()?;
        Some(if range.end as usize <= bytes.len() && range.start <= range.end {
            Ok(bytes.slice(range.start as usize..range.end as usize))
        } else {
            Err(ParquetError::EOF(format!("range {range:?} is beyond the {} bytes of {}", bytes.len(), self.path)))
        })
    }
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for StoreFileReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes>> {
        if let Some(bytes) = self.slice(&range) {
            return futures::future::ready(bytes).boxed();
        }
        async move { self.store.get_range(&self.path, range).await.map_err(external) }.boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>>> {
        if self.fetched.is_some() {
            let slices = ranges.iter().map(|r| self.slice(r).expect("the file was fetched")).collect();
            return futures::future::ready(slices).boxed();
        }
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(external) }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>>> {
        async move {
            // The page indexes only when the read asks for them.
            let reader = match options {
                Some(o) => ParquetMetaDataReader::new()
                    .with_column_index_policy(o.column_index_policy())
                    .with_offset_index_policy(o.offset_index_policy()),
                None => ParquetMetaDataReader::new(),
            };
            if let Some(bytes) = &self.fetched {
                return Ok(Arc::new(reader.parse_and_finish(bytes)?));
            }
            let (size, hint) = (self.size, self.footer_read as usize);
            // One request for the footer in the common case.
            let metadata = reader.with_prefetch_hint(Some(hint)).load_and_finish(self, size).await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// Reading a data file's deletion vector failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the deletion vector of {path}: {message}")]
pub struct DeletionVectorError {
    /// The data file.
    pub path: String,
    message: String,
}

/// The row positions deletion vector `dv` of data file `path` marks deleted, in
/// ascending order.
pub async fn deleted_positions(
    table: &DeltaTable,
    path: &str,
    dv: &DeletionVectorDescriptor,
) -> std::result::Result<Vec<u64>, DeletionVectorError> {
    let fail = |message: String| DeletionVectorError { path: path.to_string(), message };
    let descriptor = delta_kernel::actions::deletion_vector::DeletionVectorDescriptor::try_from(dv.clone())
        .map_err(|e| fail(format!("bad descriptor: {e}")))?;
    let engine = table.log_store().engine(None);
    let root = table.table_url().clone();
    // The kernel reads synchronously (through its own executor): off the runtime's threads.
    tokio::task::spawn_blocking(move || descriptor.read(engine.storage_handler(), &root))
        .await
        .map_err(|e| fail(format!("the reading task failed: {e}")))?
        .map(|bitmap| bitmap.into_iter().collect())
        .map_err(|e| fail(e.to_string()))
}

/// `builder` set to read only the rows not at `deleted` (ascending positions, as a
/// deletion vector gives them), and the positions it then reads, in order; unchanged,
/// with `None`, when nothing is deleted.
pub fn skip_rows<T>(
    builder: ParquetRecordBatchStreamBuilder<T>,
    deleted: &[u64],
) -> (ParquetRecordBatchStreamBuilder<T>, Option<Vec<u64>>) {
    if deleted.is_empty() {
        return (builder, None);
    }
    let total = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let live = live_positions(deleted, total);
    let selection = row_selection(&live, total);
    (builder.with_row_selection(selection), Some(live))
}

/// The positions `0..rows` not in `deleted` (ascending), i.e. a file's live rows.
pub fn live_positions(deleted: &[u64], rows: u64) -> Vec<u64> {
    let mut gone = deleted.iter().peekable();
    (0..rows)
        .filter(|p| {
            while gone.next_if(|d| **d < *p).is_some() {}
            gone.next_if_eq(&p).is_none()
        })
        .collect()
}

/// A parquet row selection of the sorted row `positions` of a file of `rows` rows.
pub fn row_selection(positions: &[u64], rows: u64) -> RowSelection {
    let mut selectors = Vec::new();
    let mut next = 0u64;
    let mut i = 0;
    while i < positions.len() {
        let start = positions[i];
        let mut end = start + 1;
        i += 1;
        while i < positions.len() && positions[i] == end {
            end += 1;
            i += 1;
        }
        if start > next {
            selectors.push(RowSelector::skip((start - next) as usize));
        }
        selectors.push(RowSelector::select((end - start) as usize));
        next = end;
    }
    if rows > next {
        selectors.push(RowSelector::skip((rows - next) as usize));
    }
    RowSelection::from(selectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_positions_skip_the_deleted_ones() {
        assert_eq!(super::live_positions(&[0, 2, 3, 9], 6), vec![1, 4, 5]);
        assert_eq!(super::live_positions(&[], 3), vec![0, 1, 2]);
        assert!(super::live_positions(&[0, 1], 2).is_empty());
    }

    #[test]
    fn row_selections_select_runs_and_skip_gaps() {
        let selection = row_selection(&[0, 1, 2, 5, 9], 12);
        let expected = RowSelection::from(vec![
            RowSelector::select(3),
            RowSelector::skip(2),
            RowSelector::select(1),
            RowSelector::skip(3),
            RowSelector::select(1),
            RowSelector::skip(2),
        ]);
        assert_eq!(selection, expected);
        assert_eq!(selection.row_count(), 5);
        assert_eq!(row_selection(&[3], 4), RowSelection::from(vec![RowSelector::skip(3), RowSelector::select(1)]));
    }
}
