//! What a writer says when it loses to other writers for good: the operation, how
//! many attempts over how long, and for the last one the version and operation that
//! won and the files both needed.
//!
//! Every writer (appends and overwrites, deletes and updates, merges) plans again
//! under one [`RetrySettings`] ([`sediment_compactor::retry`]); when the budget is
//! spent, [`gave_up`] builds the error from the commits that landed after the last
//! attempt's read version, read from the log (only then: the happy path reads
//! nothing more).

use std::collections::HashSet;

pub use sediment_compactor::retry::{RetryBudget, RetrySettings};

use crate::error::{Error, ErrorKind, Result};
use crate::table::Table;

/// The conflict error of `operation` on `table` (refreshed to the newest version)
/// whose last attempt read `read_version`, needed the files `needed` and failed
/// with `last`.
pub(crate) async fn gave_up(
    table: &Table,
    operation: &str,
    budget: &RetryBudget,
    read_version: Option<u64>,
    needed: &HashSet<String>,
    last: &Error,
) -> Error {
    let winner = match read_version {
        Some(read) => winning_commit(table, read, needed).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the commits that won");
            None
        }),
        None => None,
    };
    let mut message = format!(
        "{operation} on table {} gave up after {}, losing to other writers: {}",
        table.uri(),
        budget.summary(),
        last.message()
    );
    if let Some(winner) = winner {
        message.push_str(&format!("; the last time, {winner}"));
    }
    Error::new(ErrorKind::Conflict, message)
}

/// The first commit after `read_version` that removed a file of `needed`, described;
/// else the newest commit after it.
async fn winning_commit(table: &Table, read_version: u64, needed: &HashSet<String>) -> Result<Option<String>> {
    let Some(newest) = table.version() else { return Ok(None) };
    let log_store = table.delta().log_store();
    let mut last = None;
    for version in read_version + 1..=newest {
        let Some(bytes) = log_store.read_commit_entry(version).await.map_err(Error::delta)? else { continue };
        let mut operation = String::from("an unnamed operation");
        let mut overlap: Vec<String> = Vec::new();
        for line in String::from_utf8_lossy(&bytes).lines() {
            let Ok(action) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if let Some(op) = action.pointer("/commitInfo/operation").and_then(|o| o.as_str()) {
                operation = op.to_string();
            }
            if let Some(path) = action.pointer("/remove/path").and_then(|p| p.as_str()) {
                let path = percent_decoded(path);
                if needed.contains(&path) {
                    overlap.push(path);
                }
            }
        }
        if !overlap.is_empty() {
            return Ok(Some(format!("version {version} ({operation}) removed {}", name_files(&overlap))));
        }
        last = Some(format!("version {version} ({operation}) landed first"));
    }
    Ok(last)
}

/// A few paths, then a count.
fn name_files(paths: &[String]) -> String {
    const SHOWN: usize = 3;
    let shown = paths.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    let noun = if paths.len() == 1 { "file" } else { "files" };
    match paths.len().saturating_sub(SHOWN) {
        0 => format!("{} {noun} this operation needed: {shown}", paths.len()),
        more => format!("{} {noun} this operation needed: {shown} and {more} more", paths.len()),
    }
}

/// A log path as the table's file list spells it.
fn percent_decoded(path: &str) -> String {
    deltalake::Path::from_url_path(path).map(|p| p.to_string()).unwrap_or_else(|_| path.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn files_are_named_then_counted() {
        let paths: Vec<String> = (0..5).map(|i| format!("p{i}.parquet")).collect();
        assert_eq!(
            super::name_files(&paths),
            "5 files this operation needed: p0.parquet, p1.parquet, p2.parquet and 2 more"
        );
        assert_eq!(super::name_files(&paths[..1]), "1 file this operation needed: p0.parquet");
    }
}
