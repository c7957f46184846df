//! The S3 calls tiering needs that `object_store` has no API for: an object's storage
//! class (HeadObject), a change of class in place (CopyObject onto itself with the new
//! class, the metadata kept; a multipart copy, UploadPartCopy, above 5 GiB), and
//! restores of archived objects (RestoreObject, and HeadObject's `x-amz-restore`).
//!
//! The client is `aws-sdk-s3`, configured the way the table's object store is: the
//! table's storage options (`aws_endpoint`, `aws_region`, `aws_access_key_id`,
//! `aws_secret_access_key`, `aws_session_token`, `aws_virtual_hosted_style_request`)
//! win over the `AWS_*` environment and the default credential chain (profile,
//! instance metadata). A CopyObject can fail with a 200 status and an error in its
//! body; the SDK reads the body of a 200 and reports such a reply as an error.

use std::collections::HashMap;

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective, RestoreRequest};

use super::StorageClass;
use crate::error::{Error, ErrorKind, Result};

/// Above this size a copy goes in parts (CopyObject's limit is 5 GiB).
pub const SINGLE_COPY_LIMIT: u64 = 5 * 1024 * 1024 * 1024;
/// The part size of a multipart copy.
const COPY_PART: u64 = 512 * 1024 * 1024;

/// Where an archived object's restore stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreState {
    /// Readable as it is (not in an archive class).
    NotArchived,
    /// Archived, no restore asked for.
    Archived,
    /// A restore is running.
    InProgress,
    /// A readable copy exists until the given time (S3's `expiry-date`, as sent).
    Restored { until: Option<String> },
}

/// What a change of class did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOutcome {
    /// The object was copied into the class.
    Copied,
    /// It was in the class already.
    AlreadyThere,
}

/// Storage-class operations on the objects under one table's root.
#[derive(Debug, Clone)]
pub struct ObjectClasses {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// The table's key prefix, ending in `/` (or empty).
    prefix: String,
    /// Objects above this size are copied in parts of `copy_part` bytes.
    single_copy_limit: u64,
    copy_part: u64,
}

fn option<'a>(options: &'a HashMap<String, String>, names: &[&str]) -> Option<&'a str> {
    options.iter().find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n))).map(|(_, v)| v.as_str())
}

fn s3_error(what: String, err: impl std::error::Error + Send + Sync + 'static) -> Error {
    let text = aws_sdk_s3::error::DisplayErrorContext(&err).to_string();
    let kind = if text.contains("NoSuchKey") || text.contains("NotFound") || text.contains("404") {
        ErrorKind::NotFound
    } else if text.contains("InvalidStorageClass") || text.contains("InvalidRequest") {
        ErrorKind::InvalidInput
    } else {
        ErrorKind::Unavailable
    };
    Error::new(kind, format!("{what}: {text}"))
}

/// Whether the table at `uri` is on S3 (local and memory stores have no storage
/// classes). Builds no client.
pub fn has_storage_classes(uri: &str) -> Result<bool> {
    Ok(matches!(crate::table::storage::parse_table_uri(uri, false)?.scheme(), "s3" | "s3a"))
}

impl ObjectClasses {
    /// For a table at `uri`: `None` when it is not on S3 ([`has_storage_classes`]).
    pub async fn for_table(uri: &str, options: &HashMap<String, String>) -> Result<Option<Self>> {
        if !has_storage_classes(uri)? {
            return Ok(None);
        }
        let url = crate::table::storage::parse_table_uri(uri, false)?;
        let bucket = url.host_str().unwrap_or_default().to_string();
        let mut prefix = url.path().trim_start_matches('/').to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = option(options, &["aws_region", "region", "aws_default_region"]) {
            loader = loader.region(aws_config::Region::new(region.to_string()));
        }
        if let (Some(key), Some(secret)) = (
            option(options, &["aws_access_key_id", "access_key_id"]),
            option(options, &["aws_secret_access_key", "secret_access_key"]),
        ) {
            let token = option(options, &["aws_session_token", "session_token", "aws_token", "token"]);
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                key,
                secret,
                token.map(str::to_string),
                None,
                "sediment-storage-options",
            ));
        }
        if let Some(endpoint) = option(options, &["aws_endpoint", "aws_endpoint_url", "endpoint", "endpoint_url"]) {
            loader = loader.endpoint_url(endpoint);
        }
        let shared = loader.load().await;
        let virtual_hosted = option(options, &["aws_virtual_hosted_style_request", "virtual_hosted_style_request"])
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let mut config = aws_sdk_s3::config::Builder::from(&shared).force_path_style(!virtual_hosted);
        if shared.region().is_none() {
            config = config.region(aws_config::Region::new("us-east-1"));
        }
        Ok(Some(Self {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket,
            prefix,
            single_copy_limit: SINGLE_COPY_LIMIT,
            copy_part: COPY_PART,
        }))
    }

    /// Copy objects above `single` bytes in parts of `part` bytes (S3: at most 5 GiB
    /// in one CopyObject, parts of 5 MiB to 5 GiB); for tests of the multipart path.
    pub fn with_copy_limits(mut self, single: u64, part: u64) -> Self {
        self.single_copy_limit = single;
        self.copy_part = part.max(5 * 1024 * 1024);
        self
    }

    fn key(&self, path: &str) -> String {
        format!("{}{}", self.prefix, path.trim_start_matches('/'))
    }

    /// The class `path` (relative to the table root) is stored in.
    pub async fn class_of(&self, path: &str) -> Result<StorageClass> {
        Ok(self.head(path).await?.0)
    }

    /// Its class and where its restore stands.
    pub async fn head(&self, path: &str) -> Result<(StorageClass, RestoreState)> {
        let key = self.key(path);
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| s3_error(format!("HeadObject s3://{}/{key}", self.bucket), e))?;
        // S3 sends no x-amz-storage-class for STANDARD.
        let class = match head.storage_class() {
            Some(c) => c.as_str().parse()?,
            None => StorageClass::Standard,
        };
        let state = match (class.needs_restore(), head.restore()) {
            (false, _) => RestoreState::NotArchived,
            (true, None) => RestoreState::Archived,
            (true, Some(r)) if r.contains("ongoing-request=\"true\"") => RestoreState::InProgress,
            (true, Some(r)) => RestoreState::Restored {
                until: r.split("expiry-date=\"").nth(1).and_then(|s| s.split('"').next()).map(str::to_string),
            },
        };
        Ok((class, state))
    }

    /// Move `path` (of `size` bytes) to `class` in place: a server-side copy onto
    /// itself, its metadata kept. A copy S3 refuses because the object is in that
    /// class already (a copy onto itself that changes nothing; an earlier run killed
    /// before it recorded its moves) is [`CopyOutcome::AlreadyThere`], found by one
    /// HeadObject after the refusal; a missing object is a not-found error.
    pub async fn set_class(&self, path: &str, size: u64, class: StorageClass) -> Result<CopyOutcome> {
        match self.copy_in_place(path, size, class).await {
            Ok(()) => Ok(CopyOutcome::Copied),
            Err(copy) => match self.head(path).await {
                Ok((now, _)) if now == class => Ok(CopyOutcome::AlreadyThere),
                Err(head) if head.kind() == ErrorKind::NotFound => Err(head),
                _ => Err(copy),
            },
        }
    }

    async fn copy_in_place(&self, path: &str, size: u64, class: StorageClass) -> Result<()> {
        let key = self.key(path);
        let source = format!("{}/{}", self.bucket, urlencoding_path(&key));
        let what = || format!("copying s3://{}/{key} to {class}", self.bucket);
        let class_sdk = aws_sdk_s3::types::StorageClass::from(class.as_str());
        if size <= self.single_copy_limit {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(&key)
                .copy_source(&source)
                .storage_class(class_sdk)
                .metadata_directive(MetadataDirective::Copy)
                .send()
                .await
                .map_err(|e| s3_error(what(), e))?;
            return Ok(());
        }
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .storage_class(class_sdk)
            .send()
            .await
            .map_err(|e| s3_error(what(), e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = async {
            let mut parts = Vec::new();
            let mut start = 0u64;
            let mut number = 1;
            while start < size {
                let end = (start + self.copy_part).min(size) - 1;
                let part = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .copy_source(&source)
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .send()
                    .await
                    .map_err(|e| s3_error(what(), e))?;
                let etag = part.copy_part_result().and_then(|r| r.e_tag()).unwrap_or_default().to_string();
                parts.push(CompletedPart::builder().part_number(number).e_tag(etag).build());
                start = end + 1;
                number += 1;
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(|e| s3_error(what(), e))?;
            Ok::<(), Error>(())
        }
        .await;
        if result.is_err() {
            let _ =
                self.client.abort_multipart_upload().bucket(&self.bucket).key(&key).upload_id(&upload_id).send().await;
        }
        result
    }

    /// Ask for a readable copy of archived `path` for `days` days.
    pub async fn restore(&self, path: &str, days: i32) -> Result<()> {
        let key = self.key(path);
        self.client
            .restore_object()
            .bucket(&self.bucket)
            .key(&key)
            .restore_request(RestoreRequest::builder().days(days).build())
            .send()
            .await
            .map_err(|e| s3_error(format!("RestoreObject s3://{}/{key}", self.bucket), e))?;
        Ok(())
    }
}

/// A key as CopyObject's `x-amz-copy-source` wants it: each segment percent-encoded.
fn urlencoding_path(key: &str) -> String {
    key.split('/')
        .map(|segment| url::form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>().replace('+', "%20"))
        .collect::<Vec<_>>()
        .join("/")
}
