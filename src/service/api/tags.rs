//! A table's tags (named versions): list, create, delete. The table's own
//! `_sediment/tags` is the truth; the catalog mirrors it on every change.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{ApiJson, ApiResult, ApiState, ErrorBody, Page};
use crate::service::ops;

/// A tag to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagRequest {
    pub name: String,
    /// The version to name (default: the current one).
    pub version: Option<u64>,
    /// After this the tag no longer keeps its version from vacuum.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub note: Option<String>,
}

/// The table's tags.
#[utoipa::path(get, path = "/api/v1/tables/{name}/tags", tag = "tags", params(("name" = String, Path, description = "namespace.table")),
    responses((status = 200, body = Page<Object>), (status = 404, body = ErrorBody)))]
pub async fn list(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Json<Page<serde_json::Value>>> {
    let tags = ops::list_tags(&state.service, &name).await?;
    let items = tags.into_iter().map(|t| serde_json::to_value(t).unwrap_or_default()).collect();
    Ok(Json(Page { items, next_before: None }))
}

/// Name a version.
#[utoipa::path(post, path = "/api/v1/tables/{name}/tags", tag = "tags", params(("name" = String, Path, description = "namespace.table")),
    request_body = TagRequest, responses((status = 201, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<TagRequest>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let tag = ops::create_tag(&state.service, &name, &request.name, request.version, request.expires_at, request.note)
        .await?;
    Ok((StatusCode::CREATED, Json(serde_json::to_value(tag).unwrap_or_default())))
}

/// Delete a tag.
#[utoipa::path(delete, path = "/api/v1/tables/{name}/tags/{tag}", tag = "tags",
    params(("name" = String, Path, description = "namespace.table"), ("tag" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<ApiState>,
    Path((name, tag)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let deleted = ops::delete_tag(&state.service, &name, &tag).await?;
    Ok(Json(serde_json::to_value(deleted).unwrap_or_default()))
}
