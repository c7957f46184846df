//! Writing deletion vectors: rows of a data file marked deleted without rewriting it.
//!
//! One `deletion_vector_<uuid>.bin` at the table root holds the vectors of every file
//! one commit marks, in Delta's `RoaringBitmapArray` format (written by the kernel's
//! `StreamingDeletionVectorWriter`, with its size prefixes and CRCs). Each marked file
//! is then removed and added again with a `u` (UUID-relative) descriptor pointing into
//! that file. Only tables that enable deletion vectors get them
//! ([`crate::features::deletion_vectors_enabled`]).

use deltalake::DeltaTableError;
use deltalake::kernel::Add;
use object_store::ObjectStoreExt as _;

use crate::error::{Error, Result};
use crate::table::Table;

/// Write one deletion-vector file holding a vector per marked file; return it (path
/// and size) and each marked file's `add` before and after.
pub(crate) async fn write(
    table: &Table,
    marked: Vec<(Add, Vec<u64>)>,
) -> Result<(Option<(deltalake::Path, u64)>, Vec<(Add, Add)>)> {
    use delta_kernel::actions::deletion_vector_writer::{KernelDeletionVector, StreamingDeletionVectorWriter};
    if marked.is_empty() {
        return Ok((None, Vec::new()));
    }
    let uuid = uuid::Uuid::new_v4();
    let mut buffer = Vec::new();
    let mut writer = StreamingDeletionVectorWriter::new(&mut buffer);
    let mut descriptors = Vec::with_capacity(marked.len());
    for (add, positions) in &marked {
        let mut dv = KernelDeletionVector::new();
        dv.add_deleted_row_indexes(positions.iter().copied());
        let written =
            writer.write_deletion_vector(dv).map_err(|e| Error::internal(format!("writing a deletion vector: {e}")))?;
        descriptors.push((add, written));
    }
    writer.finalize().map_err(|e| Error::internal(format!("writing a deletion vector: {e}")))?;
    let path = deltalake::Path::from(format!("deletion_vector_{uuid}.bin"));
    let size = buffer.len() as u64;
    table.object_store().put(&path, buffer.into()).await.map_err(|e| Error::from(DeltaTableError::from(e)))?;
    let encoded = z85::encode(uuid.as_bytes());
    let now = chrono::Utc::now().timestamp_millis();
    let remarked = descriptors
        .into_iter()
        .map(|(add, written)| {
            let mut new = add.clone();
            new.deletion_vector = Some(deltalake::kernel::DeletionVectorDescriptor {
                storage_type: deltalake::kernel::StorageType::UuidRelativePath,
                path_or_inline_dv: encoded.clone(),
                offset: Some(written.offset),
                size_in_bytes: written.size_in_bytes,
                cardinality: written.cardinality,
            });
            new.data_change = true;
            new.modification_time = now;
            (add.clone(), new)
        })
        .collect();
    Ok((Some((path, size)), remarked))
}
