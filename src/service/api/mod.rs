//! The HTTP API: thin handlers that parse, authorize, call [`super::ops`] (the calls the
//! CLI makes) and map the error kind to a status. The OpenAPI document is generated
//! from the handlers' annotations by the same router that serves them
//! (`utoipa-axum`), so the two cannot drift; `GET /api/v1/openapi.json` serves it.
//!
//! | file | routes |
//! |---|---|
//! | [`health`] | `/healthz`, `/readyz`, `/metrics`, `/api/v1/openapi.json` |
//! | [`tables`] | `/api/v1/tables`, `/api/v1/tables/{name}`, `.../restore` |
//! | [`jobs`] | `/api/v1/tables/{name}/jobs`, `/api/v1/jobs`, `/api/v1/jobs/{id}`, `.../cancel` |
//! | [`tags`] | `/api/v1/tables/{name}/tags`, `/api/v1/tables/{name}/tags/{tag}` |
//! | [`pipelines`] | `/api/v1/pipelines`, `/api/v1/pipelines/{name}`, `.../runs`, `/api/v1/lineage/{table}` |
//!
//! Auth: `Authorization: Bearer TOKEN` on every `/api/v1` route and on `/metrics`,
//! compared by SHA-256 with the configured tokens; `GET` needs the `read` role, any
//! other method `admin`. No or an unknown token: 401; the wrong role: 403. With no
//! token configured at all (allowed only on a loopback address) the API is open.
//! Errors are `{"error": {"kind": ..., "message": ...}}`; bodies above
//! `api.max_body` get 413; requests over `api.request_timeout` get 408.

pub mod constraints;
pub mod health;
pub mod jobs;
pub mod pipelines;
pub mod tables;
pub mod tags;

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Service;
use super::settings::{Role, token_hash};
use crate::error::{Error, ErrorKind};

/// What every handler gets.
#[derive(Clone)]
pub struct ApiState {
    pub service: Service,
    pub metrics: PrometheusHandle,
    openapi: Arc<OnceLock<serde_json::Value>>,
    max_body: usize,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Sediment", description = "A catalog of Delta tables and the service that keeps them healthy."),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi.components.get_or_insert_with(Default::default).add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's router and its OpenAPI document.
pub fn router_and_document(service: Service, metrics: PrometheusHandle) -> (axum::Router, serde_json::Value) {
    let settings = service.settings().clone();
    let state = ApiState {
        service,
        metrics,
        openapi: Arc::new(OnceLock::new()),
        max_body: settings.api.max_body.as_u64().min(usize::MAX as u64) as usize,
    };
    let (router, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi))
        .routes(routes!(tables::list, tables::register))
        .routes(routes!(tables::describe, tables::unregister))
        .routes(routes!(tables::restore))
        .routes(routes!(jobs::start))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        .routes(routes!(tags::list, tags::create))
        .routes(routes!(tags::delete))
        .routes(routes!(constraints::list, constraints::add))
        .routes(routes!(constraints::drop))
        .routes(routes!(pipelines::list))
        .routes(routes!(pipelines::status))
        .routes(routes!(pipelines::start))
        .routes(routes!(pipelines::lineage))
        .split_for_parts();
    let document = serde_json::to_value(&document).unwrap_or_default();
    let _ = state.openapi.set(document.clone());
    let tokens: Arc<Vec<(String, Role, String)>> = Arc::new(
        settings.auth.tokens.iter().map(|t| (t.sha256.to_ascii_lowercase(), t.role, t.name.clone())).collect(),
    );
    let router = router
        .fallback(|| async { ApiError::new(ErrorKind::NotFound, "no such route").into_response() })
        .layer(axum::middleware::from_fn(move |request: Request, next: Next| {
            let tokens = tokens.clone();
            async move { authorize(&tokens, request, next).await }
        }))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.api.request_timeout,
        ))
        .with_state(state);
    (router, document)
}

/// The API's router.
pub fn router(service: Service, metrics: PrometheusHandle) -> axum::Router {
    router_and_document(service, metrics).0
}

async fn authorize(tokens: &[(String, Role, String)], request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let guarded = path.starts_with("/api/") || path == "/metrics";
    if !guarded || tokens.is_empty() {
        return next.run(request).await;
    }
    let needed = if matches!(*request.method(), Method::GET | Method::HEAD) { Role::Read } else { Role::Admin };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let Some(token) = presented else {
        return ApiError::status(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token (Authorization: Bearer TOKEN)",
        )
        .into_response();
    };
    let hash = token_hash(token);
    let Some((_, role, name)) = tokens.iter().find(|(h, _, _)| *h == hash) else {
        return ApiError::status(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token").into_response();
    };
    if *role < needed {
        return ApiError::status(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token {name:?} has the read role; {} {path} needs admin", request.method()),
        )
        .into_response();
    }
    next.run(request).await
}

/// An error response: `{"error": {"kind", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: String,
    message: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// invalid_input, not_found, conflict, unsupported, unavailable, data, internal,
    /// unauthorized, forbidden, payload_too_large.
    kind: String,
    message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let status = match kind {
            ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unsupported => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Data | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let kind = serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        Self { status, kind, message: message.into() }
    }

    pub fn status(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Self { status, kind: kind.into(), message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        ApiError::new(err.kind(), err.to_string())
    }
}

impl From<sediment_catalog::CatalogError> for ApiError {
    fn from(err: sediment_catalog::CatalogError) -> Self {
        Error::from(err).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { kind: self.kind, message: self.message } };
        (self.status, axum::Json(body)).into_response()
    }
}

/// A JSON body read up to `api.max_body` and parsed with errors that name the field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<ApiState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request<Body>, state: &ApiState) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::to_bytes(request.into_body(), state.max_body).await.map_err(|_| {
            ApiError::status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body larger than {} bytes (api.max_body)", state.max_body),
            )
        })?;
        if bytes.is_empty() {
            return Err(ApiError::invalid("request body: expected a JSON object, found nothing"));
        }
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| ApiError::invalid(format!("request body: {e}")))
    }
}

/// A list page: `{"items": [...], "next_before": id}` (pass it as `before` for the next page).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Page<T: Serialize + utoipa::ToSchema> {
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// The handlers' result.
pub type ApiResult<T> = Result<T, ApiError>;

/// Shorthand for the state extractor.
pub type ApiContext = State<ApiState>;
