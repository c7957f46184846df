//! Which Delta protocol features Sediment reads and writes.
//!
//! Reading goes through delta-rs, so every reader feature delta-rs supports is
//! readable (deletion vectors, column mapping, timestamp without time zone, v2
//! checkpoints, variant). Writing is stricter: Sediment writes data files itself and
//! only writes to tables whose writer features it honours. CHECK constraints
//! (`checkConstraints`) are enforced on every row it writes (`write::constraints`). A
//! feature that is merely *declared* but has nothing to enforce (no invariant or
//! generated column in the schema) does not stop a write; one that would have to be
//! enforced and is not does, and the error names it.

use deltalake::kernel::StructType;
use deltalake::kernel::transaction::PROTOCOL;
use deltalake::table::state::DeltaTableState;

use crate::error::{Error, Result};

/// Writer features Sediment honours when it adds or removes whole data files.
const WRITABLE_FEATURES: &[&str] = &[
    "appendOnly",
    "invariants",
    "checkConstraints",
    "changeDataFeed",
    "generatedColumns",
    "timestampNtz",
    "deletionVectors",
    "v2Checkpoint",
    "vacuumProtocolCheck",
    "checkpointProtection",
    "domainMetadata",
];

/// Reader features delta-rs reads correctly.
/// `vacuumProtocolCheck` asks nothing of readers, only that vacuum checks the protocol.
const READABLE_FEATURES: &[&str] = &[
    "columnMapping",
    "deletionVectors",
    "timestampNtz",
    "v2Checkpoint",
    "variantType",
    "variantType-preview",
    "vacuumProtocolCheck",
];

/// Check that `table` (named by `uri`) can be read. Errors name the unsupported feature.
pub fn check_readable(uri: &str, state: &DeltaTableState) -> Result<()> {
    check_protocol_readable(uri, state.protocol())
}

/// [`check_readable`] of a table's protocol action.
pub fn check_protocol_readable(uri: &str, protocol: &deltalake::kernel::Protocol) -> Result<()> {
    let version = protocol.min_reader_version();
    if version > 3 {
        return Err(Error::unsupported(format!("cannot read table {uri}: reader version {version} is newer than 3")));
    }
    if version == 3
        && let Some(features) = protocol.reader_features()
        && let Some(feature) = features.iter().find(|f| !READABLE_FEATURES.contains(&f.as_ref()))
    {
        return Err(Error::unsupported(format!(
            "cannot read table {uri}: reader feature {:?} is not supported",
            feature.as_ref()
        )));
    }
    Ok(())
}

/// Check, before a vacuum deletes anything, that Sediment knows every reader and
/// writer feature of `table` (as `vacuumProtocolCheck` asks): a feature it does not
/// know could reference files it would not see. Unlike writing, declared features
/// with something to enforce (constraints, generated columns) do not matter here.
pub fn check_vacuumable(uri: &str, state: &DeltaTableState) -> Result<()> {
    check_protocol_vacuumable(uri, state.protocol())
}

/// [`check_vacuumable`] of a table's protocol action.
pub fn check_protocol_vacuumable(uri: &str, protocol: &deltalake::kernel::Protocol) -> Result<()> {
    check_protocol_readable(uri, protocol)
        .map_err(|e| Error::unsupported(e.message().replacen("cannot read", "cannot vacuum", 1)))?;
    if protocol.min_writer_version() > 7 {
        return Err(Error::unsupported(format!(
            "cannot vacuum table {uri}: writer version {} is newer than 7",
            protocol.min_writer_version()
        )));
    }
    if let Some(feature) = protocol.writer_features().and_then(|f| {
        f.iter().find(|f| !WRITABLE_FEATURES.contains(&f.as_ref()) && !READABLE_FEATURES.contains(&f.as_ref())).cloned()
    }) {
        return Err(Error::unsupported(format!(
            "cannot vacuum table {uri}: writer feature {:?} is not supported",
            feature.as_ref()
        )));
    }
    Ok(())
}

/// Check that Sediment can write to `table`, naming the first feature it cannot honour.
pub fn check_writable(uri: &str, state: &DeltaTableState) -> Result<()> {
    let protocol = state.protocol();
    let refuse = |what: String| Err(Error::unsupported(format!("cannot write to table {uri}: {what}")));
    if protocol.min_writer_version() > 7 {
        return refuse(format!("writer version {} is newer than 7", protocol.min_writer_version()));
    }
    if let Some(features) = protocol.writer_features() {
        for feature in features {
            let name = feature.as_ref();
            if !WRITABLE_FEATURES.contains(&name) {
                return refuse(format!("writer feature {name:?} is not supported"));
            }
        }
    }
    let legacy = protocol.writer_features().is_none();
    let declares = |feature: &str, legacy_version: i32| {
        protocol
            .writer_features()
            .map(|f| f.iter().any(|x| x.as_ref() == feature))
            .unwrap_or(legacy && protocol.min_writer_version() >= legacy_version)
    };
    let config = state.metadata().configuration();
    let mapping = config.get("delta.columnMapping.mode").map(String::as_str).unwrap_or("none");
    if mapping != "none" {
        return refuse(format!("column mapping mode {mapping:?} is not supported"));
    }
    let schema = state.schema();
    for column in state.metadata().partition_columns() {
        if let Some(field) = schema.field(column)
            && field.data_type() == &deltalake::kernel::DataType::BINARY
        {
            return refuse(format!(
                "binary partition column `{column}`: its partition values are not encoded the same way by all readers"
            ));
        }
    }
    if declares("invariants", 2) && schema_has_metadata(&schema, "delta.invariants") {
        return refuse("column invariants (writer feature \"invariants\") are not enforced".into());
    }
    if declares("generatedColumns", 4) && schema_has_metadata(&schema, "delta.generationExpression") {
        return refuse("generated columns (writer feature \"generatedColumns\") are not computed".into());
    }
    if schema_has_metadata(&schema, "delta.identity.start") {
        return refuse("identity columns (writer feature \"identityColumns\") are not supported".into());
    }
    if config.get("delta.enableRowTracking").is_some_and(|v| v == "true") {
        return refuse("row tracking (writer feature \"rowTracking\") is not supported".into());
    }
    PROTOCOL.can_write_to(state).map_err(|e| Error::unsupported(format!("cannot write to table {uri}: {e}")))
}

/// The protocol of a new table with `properties`: the oldest that supports every
/// feature they turn on. Deletion vectors need reader 3 / writer 7 with table
/// features (then every writer feature in use is listed: `deletionVectors`, and
/// `changeDataFeed` and `appendOnly` when their properties are on, `checkConstraints`
/// with a `delta.constraints.*` property); the change data feed alone needs writer 4,
/// CHECK constraints writer 3; otherwise 1/2.
pub(crate) fn protocol_for_new_table(properties: &[(String, String)]) -> serde_json::Value {
    let on = |key: &str| properties.iter().any(|(k, v)| k == key && v.eq_ignore_ascii_case("true"));
    let feed = on("delta.enableChangeDataFeed");
    let constraints = properties.iter().any(|(k, _)| k.starts_with("delta.constraints."));
    if on("delta.enableDeletionVectors") {
        let mut writer = vec!["deletionVectors"];
        if feed {
            writer.push("changeDataFeed");
        }
        if on("delta.appendOnly") {
            writer.push("appendOnly");
        }
        if constraints {
            writer.push("checkConstraints");
        }
        serde_json::json!({
            "minReaderVersion": 3,
            "minWriterVersion": 7,
            "readerFeatures": ["deletionVectors"],
            "writerFeatures": writer
        })
    } else if feed {
        serde_json::json!({"minReaderVersion": 1, "minWriterVersion": 4})
    } else if constraints {
        serde_json::json!({"minReaderVersion": 1, "minWriterVersion": 3})
    } else {
        serde_json::json!({"minReaderVersion": 1, "minWriterVersion": 2})
    }
}

/// Whether the table refuses anything but appends (`delta.appendOnly = true`).
pub fn is_append_only(state: &DeltaTableState) -> bool {
    state.metadata().configuration().get("delta.appendOnly").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn schema_has_metadata(schema: &StructType, key: &str) -> bool {
    // The schema's JSON form carries every (nested) field's metadata.
    serde_json::to_string(schema).map(|json| json.contains(&format!("\"{key}\""))).unwrap_or(false)
}

/// Whether changes may mark rows deleted with deletion vectors instead of rewriting
/// files: the table declares the `deletionVectors` writer feature and
/// `delta.enableDeletionVectors = true`.
pub fn deletion_vectors_enabled(state: &DeltaTableState) -> bool {
    let declared = state
        .protocol()
        .writer_features()
        .is_some_and(|features| features.iter().any(|f| f.as_ref() == "deletionVectors"));
    let enabled = state
        .metadata()
        .configuration()
        .get("delta.enableDeletionVectors")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    declared && enabled
}

#[cfg(test)]
mod tests {
    use super::protocol_for_new_table;

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn new_tables_get_the_oldest_protocol_their_properties_need() {
        assert_eq!(protocol_for_new_table(&[])["minWriterVersion"], 2);
        let feed = protocol_for_new_table(&props(&[("delta.enableChangeDataFeed", "true")]));
        assert_eq!((feed["minReaderVersion"].clone(), feed["minWriterVersion"].clone()), (1.into(), 4.into()));
        let both = protocol_for_new_table(&props(&[
            ("delta.enableDeletionVectors", "true"),
            ("delta.enableChangeDataFeed", "TRUE"),
            ("delta.appendOnly", "true"),
        ]));
        assert_eq!(both["minWriterVersion"], 7);
        assert_eq!(both["writerFeatures"], serde_json::json!(["deletionVectors", "changeDataFeed", "appendOnly"]));
        let off = protocol_for_new_table(&props(&[("delta.enableChangeDataFeed", "false")]));
        assert_eq!(off["minWriterVersion"], 2);
    }
}
