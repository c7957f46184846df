//! `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /api/v1/openapi.json`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::{ApiError, ApiState};

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, description = "up", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// The catalog answers.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, description = "ready", body = String), (status = 503, description = "catalog unreachable", body = super::ErrorBody)))]
pub async fn readyz(State(state): State<ApiState>) -> Result<&'static str, ApiError> {
    state
        .service
        .catalog()
        .ping()
        .await
        .map_err(|e| ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()))?;
    Ok("ready")
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "metrics", body = String)))]
pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health", responses((status = 200, description = "the OpenAPI document", body = Object)))]
pub async fn openapi(State(state): State<ApiState>) -> axum::Json<serde_json::Value> {
    axum::Json(state.openapi.get().cloned().unwrap_or_default())
}
