//! Jobs: start one on a table, list, get, cancel.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use sediment_catalog::{Job, JobFilter, MAX_PAGE};

use super::{ApiError, ApiJson, ApiResult, ApiState, ErrorBody, Page};
use crate::service::execute::JobRequest;
use crate::service::ops;

/// Start a job on a table now.
#[utoipa::path(post, path = "/api/v1/tables/{name}/jobs", tag = "jobs", params(("name" = String, Path, description = "namespace.table")),
    request_body = JobRequest,
    responses((status = 202, body = Job), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "a job of that kind is active", body = ErrorBody)))]
pub async fn start(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let request = parse_request(body)?;
    Ok((StatusCode::ACCEPTED, Json(ops::start_job(&state.service, &name, request).await?)))
}

/// A job request, with errors that name the field (`kind` first).
fn parse_request(body: serde_json::Value) -> Result<JobRequest, ApiError> {
    let kind = match body.get("kind") {
        Some(serde_json::Value::String(kind)) => kind.clone(),
        Some(other) => return Err(ApiError::invalid(format!("kind: expected a string, found {other}"))),
        None => return Err(ApiError::invalid("kind: missing (compact, vacuum, checkpoint or expire)")),
    };
    kind.parse::<sediment_catalog::JobKind>()?;
    serde_json::from_value(body).map_err(|e| ApiError::invalid(format!("{kind} job: {e}")))
}

/// Jobs, newest first: `?table=&kind=&state=&limit=&before=`.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs",
    params(("table" = Option<String>, Query), ("kind" = Option<String>, Query), ("state" = Option<String>, Query),
           ("limit" = Option<u32>, Query, description = "at most 500 (default 100)"), ("before" = Option<i64>, Query, description = "a job id: the page after it")),
    responses((status = 200, body = Page<Job>), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<Page<Job>>> {
    let mut filter = JobFilter::default();
    for (key, value) in query {
        match key.as_str() {
            "table" => filter.table = Some(value),
            "kind" => filter.kind = Some(value.parse()?),
            "state" => filter.state = Some(value.parse()?),
            "limit" => {
                let limit: u32 = value
                    .parse()
                    .map_err(|_| ApiError::invalid(format!("limit: expected a number, found {value:?}")))?;
                if limit == 0 || limit > MAX_PAGE {
                    return Err(ApiError::invalid(format!("limit: 1 to {MAX_PAGE}, found {limit}")));
                }
                filter.limit = Some(limit);
            }
            "before" => {
                filter.before_id = Some(
                    value
                        .parse()
                        .map_err(|_| ApiError::invalid(format!("before: expected a job id, found {value:?}")))?,
                )
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "{other}: unknown query parameter (table, kind, state, limit, before)"
                )));
            }
        }
    }
    let limit = filter.limit.unwrap_or(100) as usize;
    let items = state.service.catalog().list_jobs(&filter).await?;
    let next_before = (items.len() == limit).then(|| items.last().map(|j| j.id)).flatten();
    Ok(Json(Page { items, next_before }))
}

fn job_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| ApiError::invalid(format!("id: expected a job id (a number), found {id:?}")))
}

/// One job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = i64, Path)),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
pub async fn get(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    Ok(Json(state.service.catalog().job(job_id(&id)?).await?))
}

/// Cancel a job: at once when scheduled, at its next heartbeat when running.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = i64, Path)),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody), (status = 409, description = "the job has finished", body = ErrorBody)))]
pub async fn cancel(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    let now = state.service.inner().clock.now();
    Ok(Json(state.service.catalog().cancel(job_id(&id)?, now).await?))
}
