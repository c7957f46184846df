//! Parquet settings of the files Sediment writes, with a per-column choice of
//! dictionary encoding.
//!
//! Parquet writers start every column dictionary-encoded and fall back to plain
//! encoding once the dictionary passes its page limit (1 MiB). For a column of
//! (nearly) unique values, such as ids, timestamps or free text, that means hashing
//! and interning every value until the fallback, or for the whole row group when the
//! group is small, only to write a dictionary as large as the data. Profiles of
//! compaction and merges put a fifth of the CPU time there.
//!
//! So before a file is written, each top-level column of its first batch is sampled
//! (up to [`SAMPLE_ROWS`] rows): from the number of distinct values `d` among the `n`
//! sampled rows that are not null (nulls are no dictionary entries; counted as one
//! value, a column of unique values with some nulls would look repetitive), the
//! number of distinct values of the column is estimated by solving
//! `d = D (1 - e^(-n/D))` (values drawn uniformly from `D`). When `D` times the
//! values' average width would overflow the dictionary page limit, the dictionary
//! would be abandoned anyway, and the column is written plain from the start. Columns
//! with few distinct values (status codes, dates, amounts with a small range) keep
//! their dictionary.
//!
//! When the writer knows how many rows the file will hold (a compaction's bin, a
//! merge's rewrite of a file), a dictionary must also pay for itself: with `r` values
//! in the file, `D (1 - e^(-r/D))` of them distinct, the dictionary and its bit-packed
//! indices must come to at most [`DICTIONARY_GAIN`] of the plain values' bytes. A
//! timestamp of one-second resolution over a day keeps its dictionary in a file of
//! 300,000 rows (0.54 of plain) and not in one of 100,000 (0.84): there it costs the
//! writer its hashing and memory for a file no smaller once compressed.
//!
//! Data pages are cut at [`DATA_PAGE_BYTES`] (64 KiB, where parquet-rs and
//! parquet-mr cut at 1 MiB or 20,000 rows). A parquet-rs column writer keeps a zstd
//! context of its own from its first page to the end of its row group, sized by the
//! pages it compresses: about 1.0 MB at level 3 for a 160 KB page (20,000 eight-byte
//! values), 0.66 MB for 64 KiB (measured with zstd-safe). A file being written holds
//! one per column, and a merge or an append into many partitions writes several
//! files at once: W2's peak fell 3.4 MiB with this limit, its files grew 0.1%. The
//! page index gets finer too, so a point lookup decodes less.

use std::collections::HashSet;

use deltalake::arrow::array::{Array, RecordBatch};
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{
    DEFAULT_DICTIONARY_PAGE_SIZE_LIMIT, EnabledStatistics, WriterProperties, WriterPropertiesBuilder,
};
use deltalake::parquet::schema::types::ColumnPath;

/// Rows sampled per column to choose its encoding.
pub const SAMPLE_ROWS: usize = 8192;

/// Fewer sampled rows than this and the column keeps parquet's default.
const MIN_SAMPLE_ROWS: usize = 1024;

/// A dictionary is kept for a file of known rows when it and its indices come to at
/// most this share of the plain values' bytes.
pub const DICTIONARY_GAIN: f64 = 0.8;

/// Data pages are cut once their encoded values reach this size (see the module notes).
pub const DATA_PAGE_BYTES: usize = 64 * 1024;

/// Parquet settings of every data file Sediment writes (appends, merges, compaction
/// outputs): zstd level 3, page statistics, pages of at most [`DATA_PAGE_BYTES`], row
/// groups of at most [`row_group_bytes`].
pub fn writer_properties(target_file_size: u64) -> WriterProperties {
    base(target_file_size).build()
}

/// [`writer_properties`] with dictionary encoding turned off for the columns of
/// `sample` whose estimated distinct values would overflow the dictionary page.
pub fn writer_properties_for(target_file_size: u64, sample: &RecordBatch) -> WriterProperties {
    writer_properties_for_rows(target_file_size, sample, None)
}

/// [`writer_properties_for`] for a file expected to hold `rows` rows: a dictionary is
/// also turned off where it would not make the column smaller (see the module notes).
pub fn writer_properties_for_rows(target_file_size: u64, sample: &RecordBatch, rows: Option<u64>) -> WriterProperties {
    let mut builder = base(target_file_size);
    for column in plain_columns_for(sample, rows) {
        builder = builder.set_column_dictionary_enabled(ColumnPath::new(vec![column]), false);
    }
    builder.build()
}

fn base(target_file_size: u64) -> WriterPropertiesBuilder {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(std::env::var("SEDIMENT_ZSTD_LEVEL").ok().and_then(|v| v.parse().ok()).unwrap_or(3))
                .expect("level 3 is valid"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_size_limit(DATA_PAGE_BYTES)
        .set_max_row_group_bytes(Some(row_group_bytes(target_file_size)))
}

/// Row groups of at most `target / 8` encoded bytes, between 64 KiB and 16 MiB.
pub fn row_group_bytes(target_file_size: u64) -> usize {
    (target_file_size / 8).clamp(64 * 1024, 16 * 1024 * 1024) as usize
}

/// The top-level columns of `sample` better written without a dictionary.
pub fn plain_columns(sample: &RecordBatch) -> Vec<String> {
    plain_columns_for(sample, None)
}

/// [`plain_columns`] for a file expected to hold `file_rows` rows.
pub fn plain_columns_for(sample: &RecordBatch, file_rows: Option<u64>) -> Vec<String> {
    let rows = sample.num_rows().min(SAMPLE_ROWS);
    if rows < MIN_SAMPLE_ROWS {
        return Vec::new();
    }
    let schema = sample.schema();
    let mut plain = Vec::new();
    for (field, column) in schema.fields().iter().zip(sample.columns()) {
        if field.data_type().is_nested() || matches!(field.data_type(), DataType::Boolean | DataType::Null) {
            continue;
        }
        let column = column.slice(0, rows);
        // Nulls are not values of the dictionary: only the others are counted.
        let values = column.len() - column.null_count();
        if values < MIN_SAMPLE_ROWS {
            continue;
        }
        let Ok(converter) = RowConverter::new(vec![SortField::new(column.data_type().clone())]) else { continue };
        let Ok(encoded) = converter.convert_columns(std::slice::from_ref(&column)) else { continue };
        let mut distinct: HashSet<&[u8], ahash::RandomState> =
            HashSet::with_capacity_and_hasher(values, ahash::RandomState::new());
        let mut bytes = 0usize;
        for i in (0..encoded.num_rows()).filter(|i| column.is_valid(*i)) {
            let value: &[u8] = encoded.row(i).data();
            bytes += value.len();
            distinct.insert(value);
        }
        // The row format adds a byte or so per value; close enough for a width.
        let width = (bytes as f64 / values as f64).max(1.0);
        let estimated = estimate_distinct(values, distinct.len());
        let overflows = estimated * width > DEFAULT_DICTIONARY_PAGE_SIZE_LIMIT as f64;
        let pays = file_rows.is_none_or(|file_rows| {
            // The file's values: its rows at the sample's share of non-null values.
            let r = file_rows as f64 * values as f64 / rows as f64;
            dictionary_share(r, estimated, width) <= DICTIONARY_GAIN
        });
        if overflows || !pays {
            plain.push(field.name().clone());
        }
    }
    plain
}

/// The bytes of a dictionary and its bit-packed indices for `r` values of `width`
/// bytes drawn from `distinct`, as a share of the bytes of the values written plain.
pub fn dictionary_share(r: f64, distinct: f64, width: f64) -> f64 {
    if r < 1.0 {
        return 0.0;
    }
    if !distinct.is_finite() {
        return f64::INFINITY;
    }
    let entries = distinct * (1.0 - (-r / distinct).exp());
    let index_bits = entries.max(2.0).log2().ceil();
    entries / r + index_bits / (8.0 * width.max(1.0))
}

/// The number of distinct values `D` of a column from which `n` uniform draws show
/// `d` distinct ones: the root of `D (1 - e^(-n/D)) = d` (infinite when `d = n`).
pub fn estimate_distinct(n: usize, d: usize) -> f64 {
    if d >= n {
        return f64::INFINITY;
    }
    let (n, d) = (n as f64, d as f64);
    let seen = |big_d: f64| big_d * (1.0 - (-n / big_d).exp());
    // `seen` grows with D from d (at D = d, it is a little below d) towards n.
    let (mut lo, mut hi) = (d, d.max(1.0));
    while seen(hi) < d {
        hi *= 2.0;
        if hi > 1e15 {
            return f64::INFINITY;
        }
    }
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if seen(mid) < d { lo = mid } else { hi = mid }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{ArrayRef, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn data_pages_are_cut_at_64_kib() {
        use deltalake::parquet::arrow::ArrowWriter;
        use deltalake::parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..100_000));
        let batch = RecordBatch::try_from_iter([("id", ids)]).unwrap();
        let mut out = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut out, batch.schema(), Some(writer_properties_for(128 << 20, &batch))).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let metadata = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(&bytes::Bytes::from(out))
            .unwrap();
        let pages = metadata.offset_index().unwrap()[0][0].page_locations();
        // 800,000 bytes of ids: 8,192 values (64 KiB) a page, where parquet-rs would
        // cut at 20,000 rows.
        assert_eq!(pages.len(), 13);
        assert_eq!(pages[1].first_row_index, 8192);
    }

    #[test]
    fn estimates_known_cardinalities() {
        // 8,192 draws from 100,000 values show about 7,863 distinct ones.
        let estimate = estimate_distinct(8192, 7863);
        assert!((90_000.0..110_000.0).contains(&estimate), "{estimate}");
        assert!(estimate_distinct(8192, 8192).is_infinite());
        let estimate = estimate_distinct(8192, 5);
        assert!((5.0..6.0).contains(&estimate), "{estimate}");
    }

    #[test]
    fn a_dictionary_is_kept_for_a_file_only_where_it_pays() {
        // One-second timestamps of a day: they pay in a large file, not in a small one.
        assert!(dictionary_share(300_000.0, 86_400.0, 9.0) < 0.6);
        assert!(dictionary_share(100_000.0, 86_400.0, 9.0) > DICTIONARY_GAIN);
        // Five statuses pay in any file.
        assert!(dictionary_share(1_000.0, 5.0, 6.0) < 0.1);
        assert!(dictionary_share(10.0, f64::INFINITY, 9.0).is_infinite());
        let n = 8192i64;
        // Seconds of a day drawn at random: about 7,800 distinct among 8,192.
        let draw = |i: i64| {
            let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % 86_400
        };
        let seconds: ArrayRef = Arc::new(Int64Array::from_iter_values((0..n).map(|i| draw(i) as i64)));
        let status: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|i| ["a", "b", "c"][i as usize % 3])));
        let batch = RecordBatch::try_from_iter([("at", seconds), ("status", status)]).unwrap();
        assert!(plain_columns(&batch).is_empty(), "no file size given: the overflow rule only");
        assert!(plain_columns_for(&batch, Some(300_000)).is_empty());
        assert_eq!(plain_columns_for(&batch, Some(100_000)), ["at"]);
        let properties = writer_properties_for_rows(128 << 20, &batch, Some(100_000));
        assert!(!properties.dictionary_enabled(&ColumnPath::new(vec!["at".into()])));
        assert!(properties.dictionary_enabled(&ColumnPath::new(vec!["status".into()])));
    }

    #[test]
    fn unique_columns_go_plain_and_repetitive_ones_keep_their_dictionary() {
        let n = 8192i64;
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..n));
        let small_range: ArrayRef = Arc::new(Int64Array::from_iter_values((0..n).map(|i| (i * 7919) % 1000)));
        let status: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|i| ["a", "b", "c"][i as usize % 3])));
        let batch =
            RecordBatch::try_from_iter([("id", ids), ("small_range", small_range), ("status", status)]).unwrap();
        assert_eq!(plain_columns(&batch), ["id"]);
        let properties = writer_properties_for(128 << 20, &batch);
        assert!(!properties.dictionary_enabled(&ColumnPath::new(vec!["id".into()])));
        assert!(properties.dictionary_enabled(&ColumnPath::new(vec!["status".into()])));
        // Too few rows to judge: parquet's default.
        assert!(plain_columns(&batch.slice(0, 100)).is_empty());
        // Unique values with a quarter of nulls are still unique values.
        let sparse: ArrayRef = Arc::new(StringArray::from_iter((0..n).map(|i| (i % 4 != 0).then(|| format!("v{i}")))));
        let batch = RecordBatch::try_from_iter([("sparse", sparse)]).unwrap();
        assert_eq!(plain_columns(&batch), ["sparse"]);
    }
}
