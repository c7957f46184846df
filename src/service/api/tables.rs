//! `/api/v1/tables`: list, register, describe, unregister, restore.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use sediment_catalog::{NewTable, TableEntry};
use serde::Deserialize;

use super::{ApiError, ApiJson, ApiResult, ApiState, ErrorBody, Page};
use crate::maintain::RestoreTarget;
use crate::service::ops::{self, TableDescription};

/// Every registered table.
#[utoipa::path(get, path = "/api/v1/tables", tag = "tables",
    responses((status = 200, body = Page<TableEntry>), (status = 401, body = ErrorBody)))]
pub async fn list(State(state): State<ApiState>) -> ApiResult<Json<Page<TableEntry>>> {
    let items = state.service.catalog().list_tables().await?;
    Ok(Json(Page { items, next_before: None }))
}

/// Register an existing Delta table.
#[utoipa::path(post, path = "/api/v1/tables", tag = "tables", request_body = NewTable,
    responses((status = 201, body = TableEntry), (status = 400, body = ErrorBody), (status = 404, description = "no Delta table at the location", body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn register(
    State(state): State<ApiState>,
    ApiJson(table): ApiJson<NewTable>,
) -> ApiResult<(StatusCode, Json<TableEntry>)> {
    Ok((StatusCode::CREATED, Json(ops::register_table(&state.service, table).await?)))
}

/// A table: its entry, policy in force, health, last jobs and tags.
#[utoipa::path(get, path = "/api/v1/tables/{name}", tag = "tables", params(("name" = String, Path, description = "namespace.table")),
    responses((status = 200, body = TableDescription), (status = 404, body = ErrorBody)))]
pub async fn describe(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Json<TableDescription>> {
    Ok(Json(ops::describe_table(&state.service, &name).await?))
}

/// Unregister a table; its data stays, its scheduled jobs are cancelled.
#[utoipa::path(delete, path = "/api/v1/tables/{name}", tag = "tables", params(("name" = String, Path, description = "namespace.table")),
    responses((status = 200, body = TableEntry), (status = 404, body = ErrorBody)))]
pub async fn unregister(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Json<TableEntry>> {
    Ok(Json(ops::unregister_table(&state.service, &name).await?))
}

/// What to restore to: exactly one of `version`, `tag`, `as_of`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    pub version: Option<u64>,
    pub tag: Option<String>,
    /// RFC 3339 time: the newest version committed at or before it.
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub dry_run: bool,
}

/// Make an older version current again, in one commit.
#[utoipa::path(post, path = "/api/v1/tables/{name}/restore", tag = "tables", params(("name" = String, Path, description = "namespace.table")),
    request_body = RestoreRequest, responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn restore(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<RestoreRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    let target = match (request.version, request.tag, request.as_of) {
        (Some(v), None, None) => RestoreTarget::Version(v),
        (None, Some(t), None) => RestoreTarget::Tag(t),
        (None, None, Some(ts)) => RestoreTarget::AsOf(ts),
        _ => return Err(ApiError::invalid("request body: give exactly one of version, tag, as_of")),
    };
    let report = ops::restore(&state.service, &name, target, request.dry_run).await?;
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}
