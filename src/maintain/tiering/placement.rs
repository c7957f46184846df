//! Where rewritten data goes: a merge, delete or update that rewrites a file in a
//! cold class (infrequent access or colder) writes the new version into that class,
//! so a partition that was tiered stays tiered. New files are written in STANDARD
//! and moved with a server-side copy in place before the commit that adds them, their
//! `add`s tagged with the class ([`CLASS_TAG`]); a table without cold files costs
//! nothing here.

use std::collections::{BTreeMap, HashMap};

use deltalake::kernel::{Add, Remove};

use super::archive::class_in_tags;
use super::{CLASS_TAG, ObjectClasses, StorageClass};
use crate::error::{Error, Result};
use crate::table::Table;

type PartitionValues = BTreeMap<String, Option<String>>;

/// For each of `written`, the coldest cold class among the files a merge rewrote
/// (`removes`) or marked (`marked`) in its partition (`None`: no cold file was
/// rewritten there). A merge writes a partition's new rows together, so they follow
/// the partition's rewritten files.
pub(crate) fn classes_by_partition(removes: &[Remove], marked: &[&Add], written: &[Add]) -> Vec<Option<StorageClass>> {
    let mut coldest: HashMap<PartitionValues, StorageClass> = HashMap::new();
    let sources = removes
        .iter()
        .map(|r| (class_in_tags(r.tags.as_ref()), r.partition_values.clone().unwrap_or_default()))
        .chain(marked.iter().map(|a| (class_in_tags(a.tags.as_ref()), a.partition_values.clone())));
    for (class, partition) in sources {
        if class.is_cold() {
            let entry = coldest.entry(partition.into_iter().collect()).or_insert(class);
            *entry = (*entry).max(class);
        }
    }
    if coldest.is_empty() {
        return vec![None; written.len()];
    }
    written
        .iter()
        .map(|add| coldest.get(&add.partition_values.clone().into_iter().collect::<PartitionValues>()).copied())
        .collect()
}

/// Move each of `written` with a class in `classes` (parallel to it) into that class
/// and tag its `add`.
pub(crate) async fn place(table: &Table, written: &mut [Add], classes: &[Option<StorageClass>]) -> Result<()> {
    if classes.iter().all(Option::is_none) {
        return Ok(());
    }
    let objects = ObjectClasses::for_table(table.uri(), table.storage_options())
        .await?
        .ok_or_else(|| Error::invalid(format!("table {} records storage classes but is not on S3", table.uri())))?;
    for (add, class) in written.iter_mut().zip(classes) {
        let Some(class) = *class else { continue };
        objects
            .set_class(&add.path, add.size.max(0) as u64, class)
            .await
            .map_err(|e| e.context(format!("writing the new version of a {class} file of table {}", table.uri())))?;
        add.tags.get_or_insert_with(HashMap::new).insert(CLASS_TAG.to_string(), Some(class.as_str().to_string()));
    }
    Ok(())
}
