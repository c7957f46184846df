//! The `sediment` command line. Every verb is a library call; this file parses
//! arguments, installs logging and renders results.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sediment::arrow::array::RecordBatch;
use sediment::arrow::util::pretty::pretty_format_batches;
use sediment::{MatchedAction, OpenOptions, SchemaMode, StorageOptions, Table, WriteMode, WriteOptions};

#[derive(Parser)]
#[command(name = "sediment", version, about = "Keep Delta Lake tables healthy: write, scan, time travel, inspect.")]
struct Cli {
    /// Print results as JSON (for scripts).
    #[arg(long, global = true)]
    json: bool,
    /// A storage option such as aws_endpoint=http://127.0.0.1:9000 (repeatable).
    #[arg(long = "storage-option", value_name = "KEY=VALUE", global = true, value_parser = parse_key_value)]
    storage_options: Vec<(String, String)>,
    /// Log more (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append (or overwrite) Parquet, CSV or NDJSON files into a table, creating it when missing.
    Append(AppendArgs),
    /// Read a table, optionally at an older version.
    Scan(ScanArgs),
    /// List the table's commits, newest first.
    History {
        /// Table location: a path, file://, memory:// or s3://bucket/prefix.
        uri: String,
        /// At most this many commits.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Describe a table: version, files, bytes, rows, partitions, file sizes.
    Info {
        /// Table location.
        uri: String,
        #[command(flatten)]
        at: TimeTravel,
    },
    /// Delete the rows matching a predicate, rewriting only the files that hold them.
    Delete {
        /// Table location.
        uri: String,
        /// Rows to delete: a SQL boolean expression.
        #[arg(long = "where", value_name = "EXPR")]
        predicate: String,
    },
    /// Set columns of the rows matching a predicate, rewriting only the files that hold them.
    Update {
        /// Table location.
        uri: String,
        /// An assignment COLUMN=EXPR (repeatable); EXPR is SQL over the row's old values.
        #[arg(long = "set", value_name = "COLUMN=EXPR", required = true, value_parser = parse_key_value)]
        assignments: Vec<(String, String)>,
        /// Rows to update: a SQL boolean expression.
        #[arg(long = "where", value_name = "EXPR")]
        predicate: String,
    },
    /// Merge (upsert) Parquet, CSV or NDJSON files into a table by key: update the rows
    /// whose keys exist, insert the others. Only files holding a matched key are rewritten.
    Merge(MergeArgs),
    /// Show which files a predicate selects: in the snapshot, after partition pruning,
    /// after statistics skipping.
    Explain {
        /// Table location.
        uri: String,
        /// A SQL boolean expression.
        #[arg(long = "where", value_name = "EXPR")]
        predicate: String,
        #[command(flatten)]
        at: TimeTravel,
    },
    /// Compact small files into files near the target size, partition by partition.
    Compact(CompactArgs),
    /// Write a bronze events table the way a streaming writer would, then inspect it.
    Demo {
        /// Where to put the demo tables.
        #[arg(long, default_value = "sediment-demo")]
        dir: PathBuf,
        /// How many small appends to make.
        #[arg(long, default_value_t = 40)]
        appends: usize,
        /// Rows per append.
        #[arg(long, default_value_t = 2_500)]
        rows_per_append: usize,
    },
}

#[derive(Args)]
struct AppendArgs {
    /// Table location.
    uri: String,
    /// Input files (.parquet, .csv, .ndjson/.jsonl/.json).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Partition columns of a new table, comma separated.
    #[arg(long, value_delimiter = ',')]
    partition_by: Vec<String>,
    /// append adds rows; overwrite replaces them (all, or those matching --where).
    #[arg(long, value_enum, default_value = "append")]
    mode: ModeArg,
    /// With --mode overwrite: replace only partitions matching this predicate.
    #[arg(long = "where", value_name = "EXPR")]
    predicate: Option<String>,
    /// strict refuses columns the table lacks; merge adds them.
    #[arg(long, value_enum, default_value = "strict")]
    schema_mode: SchemaModeArg,
    /// Cut data files at about this size.
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    target_size: u64,
    /// A property of a new table, KEY=VALUE (repeatable), e.g.
    /// delta.enableDeletionVectors=true or delta.appendOnly=true.
    #[arg(long = "table-property", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    table_properties: Vec<(String, String)>,
}

#[derive(Args)]
struct MergeArgs {
    /// Table location.
    uri: String,
    /// Source files (.parquet, .csv, .ndjson/.jsonl/.json), read into memory.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Key columns, comma separated: a source row matches the target rows with equal keys.
    #[arg(long, value_delimiter = ',', required = true)]
    key: Vec<String>,
    /// Keep, per key, only the source row with the largest value of this column;
    /// without it a duplicated key is an error.
    #[arg(long)]
    dedupe_by: Option<String>,
    /// What to do with target rows that have a matching source row.
    #[arg(long, value_enum, default_value = "update")]
    when_matched: WhenMatchedArg,
    /// Delete matched rows where this SQL condition holds (over source.* and target.*),
    /// before --when-matched applies.
    #[arg(long, value_name = "EXPR")]
    delete_when: Option<String>,
    /// Do not insert source rows that match no target row.
    #[arg(long)]
    no_insert: bool,
    /// Exactly-once loading: an application id, recorded with --batch-version.
    #[arg(long, requires = "batch_version")]
    app_id: Option<String>,
    /// The batch's version for --app-id; a batch at or below the recorded version is skipped.
    #[arg(long, requires = "app_id")]
    batch_version: Option<i64>,
    /// Check the source and show which files the merge would open; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Source rows held in memory at most; a larger source is spilled to a local file
    /// and merged in key ranges of this size.
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    source_memory_limit: u64,
    /// Directory for the spill file of a source past its memory limit (default: the
    /// temporary directory, TMPDIR).
    #[arg(long, env = "SEDIMENT_SPILL_DIR")]
    spill_dir: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum WhenMatchedArg {
    Update,
    Delete,
    Ignore,
}

#[derive(Args)]
struct CompactArgs {
    /// Table location.
    uri: String,
    /// Target file size (default: the table's delta.targetFileSize, else 128MiB).
    #[arg(long, value_parser = parse_size)]
    target_size: Option<u64>,
    /// Only partitions matching this predicate over partition columns.
    #[arg(long = "where", value_name = "EXPR")]
    predicate: Option<String>,
    /// Fewest files worth rewriting together.
    #[arg(long, default_value_t = 2)]
    min_input_files: usize,
    /// Rewrite at most about this many bytes in this run.
    #[arg(long, value_parser = parse_size)]
    max_bytes: Option<u64>,
    /// Rewrite files whose deletion vectors delete more than this share of their rows
    /// (0 to 1; default 0.05).
    #[arg(long, value_name = "RATIO")]
    max_deleted_rows_ratio: Option<f64>,
    /// Sort rows in rewritten files by these columns.
    #[arg(long, value_delimiter = ',', conflicts_with = "zorder_by")]
    sort_by: Vec<String>,
    /// Z-order rows in rewritten files by these columns (two or more).
    #[arg(long, value_delimiter = ',')]
    zorder_by: Vec<String>,
    /// Print the plan and stop.
    #[arg(long)]
    dry_run: bool,
    /// Bins rewritten in parallel, at most.
    #[arg(long)]
    max_concurrent_bins: Option<usize>,
    /// Memory the bins in flight may use.
    #[arg(long, value_parser = parse_size)]
    memory_budget: Option<u64>,
    /// Copy row groups undecoded when all of a bin's are at least this large (default 8MiB).
    #[arg(long, value_parser = parse_size, conflicts_with = "always_decode")]
    copy_row_groups_above: Option<u64>,
    /// Never copy row groups undecoded: decode and encode every bin.
    #[arg(long)]
    always_decode: bool,
}

#[derive(Args)]
struct TimeTravel {
    /// Read the table as of this version.
    #[arg(long, conflicts_with = "as_of")]
    version: Option<u64>,
    /// Read the table as of this time (RFC 3339, or YYYY-MM-DD[ HH:MM:SS] in UTC).
    #[arg(long, value_parser = parse_timestamp)]
    as_of: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Args)]
struct ScanArgs {
    /// Table location.
    uri: String,
    #[command(flatten)]
    at: TimeTravel,
    /// Columns to return, comma separated.
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    /// Rows to return: a SQL boolean expression.
    #[arg(long = "where", value_name = "EXPR")]
    predicate: Option<String>,
    /// At most this many rows.
    #[arg(long)]
    limit: Option<usize>,
    /// Output format (default: table, or ndjson with --json).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Write to this file instead of standard output (required for parquet).
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Append,
    Overwrite,
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaModeArg {
    Strict,
    Merge,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum FormatArg {
    Table,
    Csv,
    Ndjson,
    Parquet,
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`sediment scan ... | head`) like other Unix tools.
    #[cfg(unix)]
    // SAFETY: restoring the default SIGPIPE disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    install_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = err
                .chain()
                .find_map(|e| e.downcast_ref::<sediment::Error>())
                .map(|e| e.kind().exit_code())
                .unwrap_or(1);
            eprintln!("error: {err:#}");
            ExitCode::from(code as u8)
        }
    }
}

fn install_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,sediment=info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let options: StorageOptions = cli.storage_options.iter().cloned().collect();
    match cli.command {
        Command::Append(args) => append(args, options, cli.json).await,
        Command::Scan(args) => scan(args, options, cli.json).await,
        Command::History { uri, limit } => history(&uri, limit, options, cli.json).await,
        Command::Info { uri, at } => info(&uri, &at, options, cli.json).await,
        Command::Compact(args) => compact(args, options, cli.json).await,
        Command::Delete { uri, predicate } => delete(&uri, &predicate, &[], options, cli.json).await,
        Command::Update { uri, assignments, predicate } => {
            let assignments: Vec<(&str, &str)> = assignments.iter().map(|(c, e)| (c.as_str(), e.as_str())).collect();
            delete(&uri, &predicate, &assignments, options, cli.json).await
        }
        Command::Merge(args) => merge(args, options, cli.json).await,
        Command::Explain { uri, predicate, at } => explain(&uri, &predicate, &at, options, cli.json).await,
        Command::Demo { dir, appends, rows_per_append } => demo(dir, appends, rows_per_append, cli.json).await,
    }
}

fn open_options(options: StorageOptions, at: &TimeTravel) -> OpenOptions {
    let mut open = OpenOptions::new().storage_options(options);
    if let Some(v) = at.version {
        open = open.version(v);
    }
    if let Some(ts) = at.as_of {
        open = open.as_of(ts);
    }
    open
}

async fn append(args: AppendArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    // Open every file first: a missing or malformed file fails before anything is written.
    let mut sources = Vec::new();
    for path in &args.files {
        sources.push(sediment::source::open_source_file(path)?);
    }
    let mut table = Table::open_or_new(&args.uri, options).await?;
    let write_options = WriteOptions {
        mode: match args.mode {
            ModeArg::Append => WriteMode::Append,
            ModeArg::Overwrite => WriteMode::Overwrite,
        },
        partition_by: args.partition_by,
        replace_where: args.predicate,
        schema_mode: match args.schema_mode {
            SchemaModeArg::Strict => SchemaMode::Strict,
            SchemaModeArg::Merge => SchemaMode::Merge,
        },
        target_file_size: args.target_size,
        table_properties: args.table_properties,
        ..WriteOptions::default()
    };
    let progress = progress_bar(args.files.len() as u64, "files");
    let bar = progress.clone();
    let batches = futures::stream::iter(sources.into_iter().flat_map(move |source| {
        let bar = bar.clone();
        source.batches.chain(std::iter::from_fn(move || {
            bar.inc(1);
            None
        }))
    }));
    let report = table.write_stream(batches, write_options).await?;
    progress.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        match report.version {
            Some(v) => println!(
                "{} version {v}: {} rows in {} files ({}), {} files removed, {} ms",
                if report.created { "created table at" } else { "committed" },
                report.rows_written,
                report.files_added,
                human_bytes(report.bytes_written),
                report.files_removed,
                report.duration_ms
            ),
            None => println!("nothing to commit: the input had no rows"),
        }
    }
    Ok(())
}

async fn scan(args: ScanArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let format = args.format.unwrap_or(if json { FormatArg::Ndjson } else { FormatArg::Table });
    if format == FormatArg::Parquet && args.output.is_none() {
        anyhow::bail!(sediment::Error::invalid("--format parquet needs --output PATH"));
    }
    let table = Table::open_with(&args.uri, open_options(options, &args.at)).await?;
    let mut builder = table.scan();
    if !args.columns.is_empty() {
        builder = builder.columns(args.columns.clone());
    }
    if let Some(p) = &args.predicate {
        builder = builder.filter(p.clone());
    }
    if let Some(n) = args.limit {
        builder = builder.limit(n);
    }
    let mut scan = builder.execute().await?;
    let schema = scan.schema();
    let mut out: Box<dyn Write + Send> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    match format {
        FormatArg::Table => {
            let mut batches: Vec<RecordBatch> = Vec::new();
            while let Some(batch) = scan.next().await {
                batches.push(batch?);
            }
            if batches.is_empty() {
                batches.push(RecordBatch::new_empty(schema.clone()));
            }
            writeln!(out, "{}", pretty_format_batches(&batches)?)?;
        }
        FormatArg::Csv => {
            let mut writer = arrow_csv::WriterBuilder::new().with_header(true).build(&mut out);
            let mut wrote = false;
            while let Some(batch) = scan.next().await {
                writer.write(&batch?)?;
                wrote = true;
            }
            if !wrote {
                writer.write(&RecordBatch::new_empty(schema.clone()))?;
            }
        }
        FormatArg::Ndjson => {
            let mut writer = arrow_json::LineDelimitedWriter::new(&mut out);
            while let Some(batch) = scan.next().await {
                writer.write(&batch?)?;
            }
            writer.finish()?;
        }
        FormatArg::Parquet => {
            let mut writer = sediment::deltalake::parquet::arrow::ArrowWriter::try_new(
                &mut out,
                schema.clone(),
                Some(sediment::writer_properties(sediment::DEFAULT_TARGET_FILE_SIZE)),
            )?;
            while let Some(batch) = scan.next().await {
                writer.write(&batch?)?;
            }
            writer.close()?;
        }
    }
    out.flush()?;
    drop(out);
    let report = scan.report();
    if json {
        eprintln!("{}", serde_json::to_string(&report)?);
    } else {
        eprintln!(
            "version {}: {} rows; files {} in snapshot, {} after partition pruning, {} after stats skipping; {} read",
            report.version,
            report.rows_returned,
            report.files_in_snapshot,
            report.files_after_partition_pruning,
            report.files_after_stats_skipping,
            human_bytes(report.bytes_read)
        );
    }
    Ok(())
}

async fn history(uri: &str, limit: usize, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let table = Table::open_with(uri, OpenOptions::new().storage_options(options)).await?;
    let entries = table.history(Some(limit)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    println!("{:>8}  {:<24}  {:<18}  {:<22}  metrics", "version", "time (UTC)", "operation", "engine");
    for e in entries {
        let time = e
            .timestamp
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        let metrics = match &e.metrics {
            serde_json::Value::Object(m) => m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        println!(
            "{:>8}  {:<24}  {:<18}  {:<22}  {}",
            e.version,
            time,
            e.operation.unwrap_or_default(),
            e.engine.unwrap_or_default(),
            metrics
        );
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct InfoOutput {
    #[serde(flatten)]
    info: sediment::TableInfo,
    orphan_files: Vec<sediment::info::OrphanFile>,
}

async fn info(uri: &str, at: &TimeTravel, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let table = Table::open_with(uri, open_options(options, at)).await?;
    let info = table.info()?;
    let orphan_files = table.orphan_files().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&InfoOutput { info, orphan_files })?);
    } else {
        print_info(&info);
        if !orphan_files.is_empty() {
            let bytes: u64 = orphan_files.iter().map(|o| o.size).sum();
            println!(
                "orphans      {} data files ({}) referenced by no version: left by writers that died before committing, or still being written",
                orphan_files.len(),
                human_bytes(bytes)
            );
        }
    }
    Ok(())
}

/// `delete` (no assignments) and `update`.
async fn delete(
    uri: &str,
    predicate: &str,
    assignments: &[(&str, &str)],
    options: StorageOptions,
    json: bool,
) -> anyhow::Result<()> {
    let mut table = Table::open_with(uri, OpenOptions::new().storage_options(options)).await?;
    let report = if assignments.is_empty() {
        table.delete(predicate).await?
    } else {
        table.update(predicate, assignments).await?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    match report.version {
        Some(v) => println!(
            "committed version {v}: {} rows deleted, {} updated; files: {} considered, {} pruned, {} read, {} removed, {} rewritten, {} marked with deletion vectors ({} rows copied, {} written); {} retries, {} ms",
            report.rows_deleted,
            report.rows_updated,
            report.files_considered,
            report.files_pruned,
            report.files_read,
            report.files_removed,
            report.files_rewritten,
            report.files_marked,
            report.rows_copied,
            human_bytes(report.bytes_written),
            report.retries,
            report.duration_ms
        ),
        None => println!(
            "no row matches: nothing committed ({} files considered, {} pruned, {} read)",
            report.files_considered, report.files_pruned, report.files_read
        ),
    }
    Ok(())
}

async fn merge(args: MergeArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    // The files are read once, batch by batch, while the merge indexes its source and
    // before it writes anything: a missing or malformed file fails it with nothing written.
    let batches = sediment::source::read_files(&args.files)?;
    let mut table = Table::open_with(&args.uri, OpenOptions::new().storage_options(options)).await?;
    let mut merge = table.merge_from(batches).on(args.key);
    if let Some(column) = args.dedupe_by {
        merge = merge.dedupe_by(column);
    }
    if let Some(condition) = args.delete_when {
        merge = merge.when_matched_if(condition, MatchedAction::Delete);
    }
    merge = merge.when_matched(match args.when_matched {
        WhenMatchedArg::Update => MatchedAction::UpdateAll,
        WhenMatchedArg::Delete => MatchedAction::Delete,
        WhenMatchedArg::Ignore => MatchedAction::Ignore,
    });
    if !args.no_insert {
        merge = merge.when_not_matched_insert_all();
    }
    merge = merge.source_memory_limit(Some(args.source_memory_limit as usize));
    if let Some(directory) = args.spill_dir {
        merge = merge.spill_directory(directory);
    }
    if let (Some(app), Some(version)) = (args.app_id, args.batch_version) {
        merge = merge.app_transaction(app, version);
    }
    if args.dry_run {
        let plan = merge.plan()?;
        if json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            println!(
                "version {}: {} source rows ({} duplicates dropped); files: {} considered, {} pruned by key statistics and partitions, {} to probe",
                plan.version,
                plan.source_rows,
                plan.source_duplicates_dropped,
                plan.files_considered,
                plan.files_pruned,
                plan.candidates.len()
            );
            for path in &plan.candidates {
                println!("  {path}");
            }
        }
        return Ok(());
    }
    let report = merge.execute().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let files = format!(
        "files: {} considered, {} pruned, {} read, {} rewritten, {} marked with deletion vectors, {} removed, {} added ({})",
        report.files_considered,
        report.files_pruned,
        report.files_read,
        report.files_rewritten,
        report.files_marked,
        report.files_removed,
        report.files_added,
        human_bytes(report.bytes_written)
    );
    let rows = format!(
        "rows: {} inserted, {} updated, {} deleted, {} copied, {} matched but unchanged",
        report.rows_inserted, report.rows_updated, report.rows_deleted, report.rows_copied, report.rows_unchanged
    );
    match report.version {
        _ if report.replayed => println!("batch already committed for this application: nothing to do"),
        Some(v) => println!(
            "committed version {v}\n  {rows}\n  {files}\n  {} retries, {} ms",
            report.retries, report.duration_ms
        ),
        None => println!("nothing changed: nothing committed\n  {rows}\n  {files}"),
    }
    if report.source_duplicates_dropped > 0 {
        println!("  {} duplicate source rows dropped (kept the latest per key)", report.source_duplicates_dropped);
    }
    if report.key_ranges > 1 {
        println!(
            "  the source outgrew --source-memory-limit: spilled to a local file, merged in {} key ranges",
            report.key_ranges
        );
    }
    Ok(())
}

async fn explain(
    uri: &str,
    predicate: &str,
    at: &TimeTravel,
    options: StorageOptions,
    json: bool,
) -> anyhow::Result<()> {
    let table = Table::open_with(uri, open_options(options, at)).await?;
    let plan = table.plan_scan(Some(predicate))?;
    if json {
        let files: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"report": plan.report, "files": files}))?);
        return Ok(());
    }
    let r = &plan.report;
    println!("table {} at version {}, where {predicate}", table.uri(), r.version);
    println!("  files in snapshot            {:>8}", r.files_in_snapshot);
    println!("  after partition pruning      {:>8}", r.files_after_partition_pruning);
    println!(
        "  after statistics skipping    {:>8}  ({})",
        r.files_after_stats_skipping,
        human_bytes(r.bytes_in_selected_files)
    );
    Ok(())
}

#[derive(serde::Serialize)]
struct CompactOutput<'a> {
    plan: &'a sediment::CompactionPlan,
    report: Option<&'a sediment::CompactionReport>,
}

async fn compact(args: CompactArgs, options: StorageOptions, json: bool) -> anyhow::Result<()> {
    let mut table = Table::open_with(&args.uri, OpenOptions::new().storage_options(options)).await?;
    let mut compact_options = sediment::CompactOptions {
        target_file_size: args.target_size,
        min_input_files: Some(args.min_input_files),
        max_bytes: args.max_bytes,
        max_deleted_rows_ratio: args.max_deleted_rows_ratio,
        filter: args.predicate.clone(),
        clustering: if !args.sort_by.is_empty() {
            Some(sediment::Clustering::SortBy { columns: args.sort_by.clone() })
        } else if !args.zorder_by.is_empty() {
            Some(sediment::Clustering::ZOrder { columns: args.zorder_by.clone() })
        } else {
            None
        },
        ..Default::default()
    };
    if let Some(n) = args.max_concurrent_bins {
        compact_options.executor.max_concurrent_bins = n;
    }
    if let Some(bytes) = args.memory_budget {
        compact_options.executor.memory_budget = bytes;
    }
    if let Some(bytes) = args.copy_row_groups_above {
        compact_options.executor.copy_row_groups_above = Some(bytes);
    }
    if args.always_decode {
        compact_options.executor.copy_row_groups_above = None;
    }
    if std::env::var("SEDIMENT_FAULT").as_deref() == Ok("crash-before-commit") {
        // Fault injection for tests: die the way a killed process does, after the
        // data files are written and before the commit.
        compact_options.before_commit = Some(std::sync::Arc::new(|| std::process::abort()));
    }
    let plan = table.compaction_plan(&compact_options)?;
    let before = table.info()?;
    if !json {
        print_plan(&table, &plan, &before);
    }
    if plan.is_empty() || args.dry_run {
        if json {
            println!("{}", serde_json::to_string_pretty(&CompactOutput { plan: &plan, report: None })?);
        }
        return Ok(());
    }
    let progress = progress_bar(plan.bins().count() as u64, "bins");
    let bar = progress.clone();
    compact_options.progress = Some(std::sync::Arc::new(move |done, _total, _bytes| bar.set_position(done as u64)));
    let report = table.execute_compaction(&plan, compact_options).await?;
    progress.finish_and_clear();
    let after = table.info()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&CompactOutput { plan: &plan, report: Some(&report) })?);
        return Ok(());
    }
    println!(
        "files        {} -> {} ({} -> {}), health {} -> {}",
        before.files,
        after.files,
        human_bytes(before.bytes),
        human_bytes(after.bytes),
        before.health.score,
        after.health.score
    );
    println!(
        "rewrote      {} files into {} in {} bins; read {}, wrote {}, write amplification {:.2}",
        report.files_removed,
        report.files_added,
        report.bins_committed,
        human_bytes(report.bytes_read),
        human_bytes(report.bytes_written),
        report.write_amplification()
    );
    if report.bins_copied > 0 {
        println!("copied       {} of the bins by copying their row groups undecoded", report.bins_copied);
    }
    println!(
        "commits      {:?} in {} ms; {} conflicts re-planned",
        report.versions, report.duration_ms, report.commit_conflicts
    );
    for abandoned in &report.abandoned {
        println!(
            "given up     {} ({} files): {}",
            partition_label(&abandoned.partition),
            abandoned.inputs,
            abandoned.reason
        );
    }
    Ok(())
}

fn print_plan(table: &Table, plan: &sediment::CompactionPlan, info: &sediment::TableInfo) {
    if plan.is_empty() {
        println!(
            "table {} at version {} is healthy: nothing to compact (health {}/100, {} files, target {})",
            table.uri(),
            info.version,
            info.health.score,
            info.files,
            human_bytes(plan.target_file_size)
        );
        return;
    }
    println!("plan for {} at version {} (target {}):", table.uri(), info.version, human_bytes(plan.target_file_size));
    for partition in &plan.partitions {
        let inputs: usize = partition.bins.iter().map(|b| b.inputs.len()).sum();
        let bytes: u64 = partition.bins.iter().map(|b| b.input_bytes).sum();
        let label =
            if partition.partition.is_empty() { "(table)".to_string() } else { partition_label(&partition.partition) };
        println!(
            "  {:<40} health {:>3}  {:>6} files -> {:<4} ({})",
            label,
            partition.score,
            inputs,
            partition.bins.len(),
            human_bytes(bytes)
        );
    }
    println!(
        "  total: {} files in {} partitions -> {} files ({})",
        plan.input_files(),
        plan.partitions.len(),
        plan.bins().count(),
        human_bytes(plan.input_bytes())
    );
    if plan.files_with_deletes > 0 {
        let deleted: u64 = plan.bins().flat_map(|b| &b.inputs).map(|f| f.deleted_rows).sum();
        println!(
            "  deletion vectors: {} of these files have them; their {} deleted rows are dropped",
            plan.files_with_deletes, deleted
        );
    }
    if plan.deferred_bins > 0 {
        println!("  deferred: {} bins beyond --max-bytes, for a later run", plan.deferred_bins);
    }
}

fn print_info(info: &sediment::TableInfo) {
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

async fn demo(dir: PathBuf, appends: usize, rows_per_append: usize, json: bool) -> anyhow::Result<()> {
    let events_path = dir.join("bronze").join("events");
    let uri = events_path.to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, StorageOptions::new()).await?;
    let first_id = match table.info() {
        Ok(info) => info.rows.unwrap_or(0) as i64,
        Err(_) => 0,
    };
    if !json {
        println!("== 1. a streaming writer appends {appends} small batches of {rows_per_append} events to {uri}");
    }
    let progress = progress_bar(appends as u64, "appends");
    let mut first_version = None;
    for i in 0..appends {
        let batch = sediment::demo::events_batch(first_id + (i * rows_per_append) as i64, rows_per_append);
        let report = table.write([batch], WriteOptions::append().partition_by(["event_date"])).await?;
        first_version = first_version.or(report.version);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let info = table.info()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("\n== 2. the table now: many commits, many small files");
    print_info(&info);
    let old_version = first_version.unwrap_or(0);
    let old = Table::open_with(&uri, OpenOptions::new().version(old_version)).await?;
    let old_info = old.info()?;
    println!("\n== 3. time travel: version {old_version} (after the first append of this run)");
    println!("rows then    {}", old_info.rows.unwrap_or(0));
    println!("rows now     {}", info.rows.unwrap_or(0));
    let before_compaction = table.version().unwrap_or_default();
    let report = table.compact(sediment::CompactOptions::default()).await?;
    let compacted = table.info()?;
    println!("\n== 4. compaction: small files rewritten into files near the target, partition by partition");
    println!(
        "files        {} -> {} in {} commit(s), health {} -> {}; version {before_compaction} still reads the old files",
        info.files,
        compacted.files,
        report.versions.len(),
        info.health.score,
        compacted.health.score
    );
    let (batches, scan) =
        table.scan().filter("event_date = '2024-05-03' AND event_type = 'purchase'").execute().await?.collect().await?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    println!(
        "\n== 5. a pruned scan: {rows} purchases on 2024-05-03, reading {} of {} files ({})",
        scan.files_after_stats_skipping,
        scan.files_in_snapshot,
        human_bytes(scan.bytes_read)
    );
    let bin = "sediment";
    println!("\n== next");
    println!("  {bin} info {uri}");
    println!("  {bin} history {uri} --limit 5");
    println!("  {bin} compact {uri} --dry-run");
    println!("  {bin} scan {uri} --where \"event_type = 'refund'\" --columns event_id,user_id,amount --limit 10");
    println!("  {bin} scan {uri} --version {old_version} --format csv --limit 5");
    Ok(())
}

fn progress_bar(len: u64, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {unit} {{elapsed}}"))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn bucket_label(min: u64, max: u64) -> String {
    let show = |b: u64| bytesize::ByteSize(b).display().iec_short().to_string().replace(' ', "");
    match (min, max) {
        (0, m) => format!("<{}", show(m)),
        (m, u64::MAX) => format!(">={}", show(m)),
        (a, b) => format!("{}-{}", show(a), show(b)),
    }
}

fn partition_label(partition: &sediment::compaction::PartitionKey) -> String {
    partition.iter().map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("null"))).collect::<Vec<_>>().join("/")
}

fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("empty key in {s:?}"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = s.parse().map_err(|e| format!("invalid size {s:?}: {e}"))?;
    if size.as_u64() == 0 {
        return Err(format!("size must be positive, got {s:?}"));
    }
    Ok(size.as_u64())
}

fn parse_timestamp(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, format) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    Err(format!("invalid timestamp {s:?}: expected RFC 3339 or YYYY-MM-DD[ HH:MM:SS] (UTC)"))
}
