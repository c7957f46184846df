//! Tiering's S3 calls against the S3 test server: a file's class, a change of class
//! in place (its bytes unchanged), an archived file refused by a plain GET until a
//! restore, and stores without classes.

use std::collections::HashMap;

use object_store::ObjectStoreExt as _;
use sediment::maintain::tiering::{ObjectClasses, RestoreState, StorageClass};

use crate::common::{s3_endpoint, s3_uri};

#[tokio::test]
async fn a_file_changes_class_in_place_and_an_archived_one_needs_a_restore() {
    let uri = s3_uri("tier-calls");
    let store = sediment::table::storage::store_at(&uri, HashMap::new()).unwrap();
    let path = "day=2024-05-01/part-0.parquet";
    let bytes = bytes::Bytes::from(vec![7u8; 4096]);
    store.put(&object_store::path::Path::from(path), bytes.clone().into()).await.unwrap();

    // Explicit storage options, as a storage profile gives them.
    let options: HashMap<String, String> = [
        ("aws_endpoint".to_string(), s3_endpoint()),
        ("aws_region".to_string(), "us-east-1".to_string()),
        ("aws_access_key_id".to_string(), "testing".to_string()),
        ("aws_secret_access_key".to_string(), "testing".to_string()),
    ]
    .into();
    let classes = ObjectClasses::for_table(&uri, &options).await.unwrap().expect("an S3 table has classes");
    assert_eq!(classes.class_of(path).await.unwrap(), StorageClass::Standard);
    classes.set_class(path, 4096, StorageClass::StandardIa).await.unwrap();
    assert_eq!(classes.class_of(path).await.unwrap(), StorageClass::StandardIa);
    let read = store.get(&object_store::path::Path::from(path)).await.unwrap().bytes().await.unwrap();
    assert_eq!(read, bytes, "a change of class keeps the bytes");

    // An archive class: a plain GET fails until a restore (moto completes it at once).
    classes.set_class(path, 4096, StorageClass::Glacier).await.unwrap();
    assert_eq!(classes.head(path).await.unwrap(), (StorageClass::Glacier, RestoreState::Archived));
    let err = store.get(&object_store::path::Path::from(path)).await.unwrap_err().to_string();
    assert!(err.contains("InvalidObjectState") || err.contains("403"), "{err}");
    classes.restore(path, 2).await.unwrap();
    assert!(matches!(classes.head(path).await.unwrap().1, RestoreState::Restored { .. }));
    let read = store.get(&object_store::path::Path::from(path)).await.unwrap().bytes().await.unwrap();
    assert_eq!(read, bytes);

    // From the environment alone (AWS_ENDPOINT_URL and the keys the test script sets).
    let from_env = ObjectClasses::for_table(&uri, &HashMap::new()).await.unwrap().unwrap();
    assert_eq!(from_env.class_of(path).await.unwrap(), StorageClass::Glacier);
    // A missing file is not found, naming it.
    let err = from_env.class_of("day=2024-05-01/none.parquet").await.unwrap_err();
    assert_eq!(err.kind(), sediment::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("none.parquet"), "{err}");
}

#[tokio::test]
async fn local_and_memory_tables_have_no_storage_classes() {
    let dir = tempfile::tempdir().unwrap();
    assert!(ObjectClasses::for_table(dir.path().to_str().unwrap(), &HashMap::new()).await.unwrap().is_none());
    assert!(ObjectClasses::for_table("memory://tiering/", &HashMap::new()).await.unwrap().is_none());
}
