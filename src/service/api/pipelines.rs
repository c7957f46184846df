//! Pipelines: list, status, start a run (or a backfill), and a table's lineage.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use sediment_catalog::Job;
use serde::Deserialize;

use super::{ApiError, ApiResult, ApiState, ErrorBody, Page};
use crate::service::pipelines;

/// A run to start; without a body, a run from where the last one stopped.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Reprocess the source from this version (a backfill).
    #[serde(default)]
    pub from_version: Option<u64>,
}

/// The declared pipelines.
#[utoipa::path(get, path = "/api/v1/pipelines", tag = "pipelines", responses((status = 200, body = Page<Object>)))]
pub async fn list(State(state): State<ApiState>) -> ApiResult<Json<Page<serde_json::Value>>> {
    let items =
        pipelines::list(&state.service).into_iter().map(|p| serde_json::to_value(p).unwrap_or_default()).collect();
    Ok(Json(Page { items, next_before: None }))
}

/// A pipeline's status: what it consumed of each source, how far behind it is, its last run.
#[utoipa::path(get, path = "/api/v1/pipelines/{name}", tag = "pipelines", params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn status(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let status = pipelines::status(&state.service, &name).await?;
    Ok(Json(serde_json::to_value(status).unwrap_or_default()))
}

/// Start a run of a pipeline now (a job the workers run; its record holds the run's report).
#[utoipa::path(post, path = "/api/v1/pipelines/{name}/runs", tag = "pipelines", params(("name" = String, Path)),
    request_body = RunRequest,
    responses((status = 202, body = Job), (status = 404, body = ErrorBody), (status = 409, description = "a run is scheduled or running", body = ErrorBody)))]
pub async fn start(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let request: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("request body: {e}")))?
    };
    Ok((StatusCode::ACCEPTED, Json(pipelines::start(&state.service, &name, request.from_version).await?)))
}

/// A table's lineage: the pipelines that write it (and their sources) and those that read it.
#[utoipa::path(get, path = "/api/v1/lineage/{table}", tag = "pipelines", params(("table" = String, Path, description = "namespace.table")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn lineage(State(state): State<ApiState>, Path(table): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let lineage = pipelines::lineage(&state.service, &table).await?;
    Ok(Json(serde_json::to_value(lineage).unwrap_or_default()))
}
