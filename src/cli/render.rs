//! Rendering for people: byte sizes, progress bars, partition labels, the info table.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub(crate) fn print_info(info: &crate::TableInfo) {
    println!("table        {}", info.uri);
    println!("version      {}", info.version);
    println!(
        "files        {} ({} small: below 1/8 of the {} target)",
        info.files,
        info.small_files,
        human_bytes(info.target_file_size)
    );
    println!("bytes        {}", human_bytes(info.bytes));
    match info.rows {
        Some(rows) => println!("rows         {rows}"),
        None => println!("rows         unknown ({} files have no statistics)", info.files_without_stats),
    }
    if info.partition_columns.is_empty() {
        println!("partitions   none (not partitioned)");
    } else {
        println!("partitions   {} by [{}]", info.partitions, info.partition_columns.join(", "));
    }
    if info.files_with_deletion_vectors > 0 {
        println!(
            "deletion vectors in {} files: {} rows deleted but still stored (compaction drops them)",
            info.files_with_deletion_vectors, info.deleted_rows
        );
    }
    let health = &info.health;
    println!(
        "health       score {}/100: {} fragments (< {}), {} undersized (< 3/4 of the target), average file {}",
        health.score,
        health.fragments,
        human_bytes(info.target_file_size / 8),
        health.undersized,
        human_bytes(health.average_file_size)
    );
    if let Some(worst) = health.partitions.first().filter(|p| p.score < 100 && !p.partition.is_empty()) {
        println!("worst        {} ({} files, score {})", partition_label(&worst.partition), worst.files, worst.score);
    }
    println!("file sizes");
    let widest = health.histogram.iter().map(|b| b.files).max().unwrap_or(0).max(1);
    for bucket in &health.histogram {
        let bar = "#".repeat((bucket.files * 40).div_ceil(widest));
        println!("  {:>14} {:>7}  {}", bucket_label(bucket.min_bytes, bucket.max_bytes), bucket.files, bar);
    }
    println!("schema");
    for c in &info.schema {
        println!("  {:<24} {}{}", c.name, c.data_type, if c.nullable { "" } else { " not null" });
    }
}

pub(crate) fn progress_bar(len: u64, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {unit} {{elapsed}}"))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

pub(crate) fn bucket_label(min: u64, max: u64) -> String {
    let show = |b: u64| bytesize::ByteSize(b).display().iec_short().to_string().replace(' ', "");
    match (min, max) {
        (0, m) => format!("<{}", show(m)),
        (m, u64::MAX) => format!(">={}", show(m)),
        (a, b) => format!("{}-{}", show(a), show(b)),
    }
}

pub(crate) fn partition_label(partition: &crate::maintain::compaction::PartitionKey) -> String {
    partition.iter().map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("null"))).collect::<Vec<_>>().join("/")
}

pub(crate) fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

/// `N requests for data files, at most M in flight, X read`: what an operation's
/// reads cost, as merge, delete and update print it.
pub(crate) fn io_line(io: &crate::IoReport) -> String {
    format!(
        "{} requests for data files, at most {} in flight, {} read",
        io.requests,
        io.peak_in_flight,
        human_bytes(io.bytes_read)
    )
}
