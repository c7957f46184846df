//! Tags: named versions kept with the table, on the S3 server.

use std::process::Command;

use sediment::{ErrorKind, OpenOptions, Table, WriteOptions};

use crate::common::{append_events, s3_uri, table_rows};

#[tokio::test]
async fn tags_name_versions_and_open_them() {
    let uri = s3_uri("tags");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_events(&mut table, 0, 100).await;
    let v0_rows = table_rows(&table).await;
    append_events(&mut table, 100, 100).await;

    let tag = table.create_tag("before-backfill", 0, None, Some("audit".into())).await.unwrap();
    assert_eq!((tag.version, tag.note.as_deref()), (0, Some("audit")));
    let at = Table::open_with(&uri, OpenOptions::new().tag("before-backfill")).await.unwrap();
    assert_eq!(at.version(), Some(0));
    assert_eq!(table_rows(&at).await, v0_rows);

    // One name, one tag: the second creator is refused by name.
    let err = table.create_tag("before-backfill", 1, None, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("already exists") && err.to_string().contains("version 0"), "{err}");
    // Bad names, versions and expiries.
    for name in ["a/b", "with space", ""] {
        let err = table.create_tag(name, 0, None, None).await.unwrap_err();
        assert!(err.to_string().contains("invalid tag name"), "{name}: {err}");
    }
    let err = table.create_tag("future", 9, None, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("newest version is 1"), "{err}");
    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    assert!(table.create_tag("stale", 1, Some(past), None).await.is_err());

    let later = chrono::Utc::now() + chrono::Duration::days(90);
    table.create_tag("q3", 1, Some(later), None).await.unwrap();
    let tags = table.tags().await.unwrap();
    assert_eq!(
        tags.iter().map(|t| (t.name.as_str(), t.version)).collect::<Vec<_>>(),
        [("before-backfill", 0), ("q3", 1)]
    );
    assert!(!tags[1].is_expired(chrono::Utc::now()) && tags[1].is_expired(later + chrono::Duration::seconds(1)));

    // Tags are files under _sediment/tags/: another reader of the table does not see them.
    let (rows, _) = crate::interop::python_read(&uri);
    assert_eq!(rows, 200);

    table.delete_tag("q3").await.unwrap();
    assert_eq!(table.tags().await.unwrap().len(), 1);
    let err = table.delete_tag("q3").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = Table::open_with(&uri, OpenOptions::new().tag("q3")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("no tag \"q3\""), "{err}");
}

/// `sediment tag` and `--tag` on the commands that take a version.
#[tokio::test]
async fn the_cli_creates_lists_uses_and_deletes_tags() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t").to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    table.write([sediment::demo::events_batch(0, 50)], WriteOptions::append()).await.unwrap();
    table.write([sediment::demo::events_batch(50, 50)], WriteOptions::append()).await.unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(crate::cli::sediment_bin()).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) =
        run(&["tag", "create", &uri, "first", "--version", "0", "--expires-in", "90d", "--note", "kept"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("tag first names version 0"), "{out}");
    let (code, _, err) = run(&["tag", "create", &uri, "first"]);
    assert_eq!(code, Some(2), "a taken name is invalid input: {err}");
    let (code, _, err) = run(&["tag", "create", &uri, "x", "--expires-in", "-3d"]);
    assert_eq!(code, Some(2), "{err}");
    let (_, out, _) = run(&["tag", "list", &uri]);
    assert!(out.contains("first") && out.contains("kept"), "{out}");
    let (code, out, err) = run(&["scan", &uri, "--tag", "first", "--format", "csv"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 51, "header and version 0's 50 rows: {out}");
    let (_, out, _) = run(&["history", &uri]);
    assert!(out.lines().any(|l| l.trim_start().starts_with('0') && l.contains("[tags: first]")), "{out}");
    let (_, out, _) = run(&["info", &uri, "--tag", "first"]);
    assert!(out.contains("tags") && out.contains("first (v0)"), "{out}");
    let (code, out, err) = run(&["checkpoint", &uri]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("checkpoint written at version 1"), "{out}");
    assert!(dir.path().join("t/_delta_log/_last_checkpoint").exists());
    let (code, out, err) = run(&["restore", &uri, "--tag", "first"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("restoring version 0"), "{out}");
    let (code, _, err) = run(&["restore", &uri]);
    assert_eq!(code, Some(2), "a restore needs a target: {err}");
    let (code, _, _) = run(&["tag", "delete", &uri, "first"]);
    assert_eq!(code, Some(0));
    let (code, _, err) = run(&["scan", &uri, "--tag", "first"]);
    assert_eq!(code, Some(3), "an unknown tag is not found: {err}");
}

/// Restore by version, tag and through the CLI: the older rows come back in one
/// RESTORE commit, time travel before it still works, and a restore whose files
/// were vacuumed names them and commits nothing.
#[tokio::test]
async fn restore_brings_an_older_version_back_in_one_commit() {
    use sediment::RestoreTarget;
    let uri = s3_uri("restore");
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    append_events(&mut table, 0, 100).await;
    let v0 = table_rows(&table).await;
    append_events(&mut table, 100, 100).await;
    let v1 = table_rows(&table).await;
    table.delete("event_id < 50").await.unwrap();
    table.create_tag("good", 1, None, None).await.unwrap();

    let dry = table.restore(RestoreTarget::Version(0), true).await.unwrap();
    assert_eq!((dry.version, dry.rows_added, dry.rows_removed), (None, 100, 150), "{dry:?}");
    assert_eq!(table.version(), Some(2), "a dry run commits nothing");

    let report = table.restore(RestoreTarget::Version(0), false).await.unwrap();
    assert_eq!(report.version, Some(3), "{report:?}");
    assert_eq!(table_rows(&table).await, v0);
    let history = table.history(Some(1)).await.unwrap();
    assert_eq!(history[0].operation.as_deref(), Some("RESTORE"));
    let report = table.restore(RestoreTarget::Tag("good".into()), false).await.unwrap();
    assert_eq!((report.restored_version, report.version), (1, Some(4)));
    assert_eq!(table_rows(&Table::open(&uri).await.unwrap()).await, v1);
    let again = table.restore(RestoreTarget::Version(1), false).await.unwrap();
    assert_eq!(again.version, None, "already version 1's content: {again:?}");
    let err = table.restore(RestoreTarget::Version(40), false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // A file version 2 had is gone (as after a vacuum): restoring 2 refuses by name.
    let v2 = Table::open_with(&uri, OpenOptions::new().version(2)).await.unwrap();
    let gone =
        v2.files().unwrap().into_iter().find(|f| !table.files().unwrap().iter().any(|c| c.path == f.path)).unwrap();
    let store = table.delta().log_store().object_store(None);
    object_store::ObjectStoreExt::delete(store.as_ref(), &sediment::deltalake::Path::from(gone.path.as_str()))
        .await
        .unwrap();
    let err = table.restore(RestoreTarget::Version(2), false).await.unwrap_err();
    assert!(err.to_string().contains(&gone.path) && err.to_string().contains("nothing was committed"), "{err}");
    assert_eq!(Table::open(&uri).await.unwrap().version(), Some(4));
}

/// A restore to a version whose deletion-vector file is gone refuses and names it.
#[tokio::test]
async fn restore_checks_deletion_vector_files_too() {
    use sediment::RestoreTarget;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dv");
    let uri = path.to_string_lossy().to_string();
    let mut table = Table::open_or_new(&uri, Default::default()).await.unwrap();
    let options = WriteOptions::append().table_property("delta.enableDeletionVectors", "true");
    table.write([sediment::demo::events_batch(0, 100)], options).await.unwrap();
    table.delete("event_id < 10").await.unwrap();
    let marked = table.version().unwrap();
    assert!(table.files().unwrap().iter().any(|f| f.has_deletion_vector));
    let options = sediment::CompactOptions { max_deleted_rows_ratio: Some(0.0), ..Default::default() };
    table.compact(options).await.unwrap();
    assert!(table.files().unwrap().iter().all(|f| !f.has_deletion_vector), "the vector was folded away");
    let vector = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("deletion_vector_"))
        .unwrap();
    std::fs::remove_file(&vector).unwrap();
    let err = table.restore(RestoreTarget::Version(marked), false).await.unwrap_err();
    let name = vector.file_name().unwrap().to_string_lossy().to_string();
    assert!(err.to_string().contains(&name), "{err}");
}
