//! A table's CHECK constraints: list, add, drop. They live in the Delta table's
//! metadata (`delta.constraints.<name>`), where every Delta writer finds them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{ApiJson, ApiResult, ApiState, ErrorBody, Page};
use crate::service::ops;

/// A constraint to add.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConstraintRequest {
    /// Letters, digits and '_'.
    pub name: String,
    /// The SQL condition every row must make true (false or NULL refuses the row).
    pub expression: String,
}

/// The table's CHECK constraints.
#[utoipa::path(get, path = "/api/v1/tables/{name}/constraints", tag = "constraints", params(("name" = String, Path, description = "namespace.table")),
    responses((status = 200, body = Page<Object>), (status = 404, body = ErrorBody)))]
pub async fn list(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Json<Page<serde_json::Value>>> {
    let constraints = ops::list_constraints(&state.service, &name).await?;
    let items = constraints.into_iter().map(|c| serde_json::to_value(c).unwrap_or_default()).collect();
    Ok(Json(Page { items, next_before: None }))
}

/// Add a CHECK constraint: every live row is read and must satisfy it (400 naming how
/// many do not, with a sample).
#[utoipa::path(post, path = "/api/v1/tables/{name}/constraints", tag = "constraints", params(("name" = String, Path, description = "namespace.table")),
    request_body = ConstraintRequest, responses((status = 201, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<ConstraintRequest>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let report = ops::add_constraint(&state.service, &name, &request.name, &request.expression).await?;
    let status = if report.already_present { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(serde_json::to_value(report).unwrap_or_default())))
}

/// Drop a CHECK constraint.
#[utoipa::path(delete, path = "/api/v1/tables/{name}/constraints/{constraint}", tag = "constraints",
    params(("name" = String, Path, description = "namespace.table"), ("constraint" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn drop(
    State(state): State<ApiState>,
    Path((name, constraint)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let version = ops::drop_constraint(&state.service, &name, &constraint).await?;
    Ok(Json(serde_json::json!({ "name": constraint, "version": version })))
}
