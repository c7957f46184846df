//! Arguments shared by several commands, and the parsers of their values.

use clap::Args;

use crate::{OpenOptions, StorageOptions};

#[derive(Args)]
pub(crate) struct TimeTravel {
    /// Read the table as of this version.
    #[arg(long, conflicts_with = "as_of")]
    version: Option<u64>,
    /// Read the table as of this time (RFC 3339, or YYYY-MM-DD[ HH:MM:SS] in UTC).
    #[arg(long, value_parser = parse_timestamp)]
    as_of: Option<chrono::DateTime<chrono::Utc>>,
}

pub(crate) fn open_options(options: StorageOptions, at: &TimeTravel) -> OpenOptions {
    let mut open = OpenOptions::new().storage_options(options);
    if let Some(v) = at.version {
        open = open.version(v);
    }
    if let Some(ts) = at.as_of {
        open = open.as_of(ts);
    }
    open
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("empty key in {s:?}"));
    }
    Ok((k.to_string(), v.to_string()))
}

pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = s.parse().map_err(|e| format!("invalid size {s:?}: {e}"))?;
    if size.as_u64() == 0 {
        return Err(format!("size must be positive, got {s:?}"));
    }
    Ok(size.as_u64())
}

pub(crate) fn parse_timestamp(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
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
