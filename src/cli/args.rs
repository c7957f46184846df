//! Arguments shared by several commands, and the parsers of their values.

use clap::Args;

use crate::{OpenOptions, StorageOptions};

#[derive(Args)]
pub(crate) struct TimeTravel {
    /// Read the table as of this version.
    #[arg(long, conflicts_with_all = ["as_of", "tag"])]
    version: Option<u64>,
    /// Read the version this tag names (`sediment tag list`).
    #[arg(long, conflicts_with = "as_of")]
    tag: Option<String>,
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
    if let Some(tag) = &at.tag {
        open = open.tag(tag.clone());
    }
    open
}

/// A duration such as `90d`, `12h`, `30m` or `45s` (days, hours, minutes, seconds).
pub(crate) fn parse_duration(s: &str) -> Result<chrono::Duration, String> {
    parse_span(s, false)
}

/// A duration that may be zero (`--retain 0s`): a retention, not an interval.
pub(crate) fn parse_retention(s: &str) -> Result<chrono::Duration, String> {
    parse_span(s, true)
}

fn parse_span(s: &str, zero: bool) -> Result<chrono::Duration, String> {
    let what = if zero { "a number" } else { "a positive number" };
    let bad = || format!("invalid duration {s:?}: expected {what} and a unit, as in 90d, 12h, 30m or 45s");
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = s.split_at(unit_at);
    let n: i64 = number.parse().map_err(|_| bad())?;
    if n < 0 || (n == 0 && !zero) {
        return Err(bad());
    }
    match unit {
        "d" => chrono::Duration::try_days(n),
        "h" => chrono::Duration::try_hours(n),
        "m" => chrono::Duration::try_minutes(n),
        "s" => chrono::Duration::try_seconds(n),
        _ => None,
    }
    .ok_or_else(bad)
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

#[cfg(test)]
mod tests {
    #[test]
    fn durations_need_a_positive_number_and_a_unit() {
        assert_eq!(super::parse_duration("90d").unwrap(), chrono::Duration::days(90));
        assert_eq!(super::parse_duration("30m").unwrap(), chrono::Duration::minutes(30));
        for bad in ["", "d", "-3d", "0h", "10", "5w", "1.5d"] {
            assert!(super::parse_duration(bad).is_err(), "{bad}");
        }
    }
}
