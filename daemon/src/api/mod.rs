//! The API: HTTP+JSON on a unix socket. Handlers are thin: parse, call the store (see
//! [`blocking`]), map the result. [`ApiError`] maps store error kinds to status codes; the
//! client gets one clear line, the log gets the detail.

pub mod containers;
pub mod extract;
pub mod images;
mod layers;
pub mod serve;
pub mod stats;
mod system;
pub mod volumes;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use strata_store::{ErrorKind, Store};

/// The query of every request about one image or container.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefQuery {
    /// A name, tag, id or id prefix.
    #[serde(rename = "ref")]
    pub reference: String,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub all: bool,
    /// `commit`: the new image's tag.
    pub tag: Option<String>,
    /// `exec`: the `ExecRequest` as JSON.
    pub spec: Option<String>,
}

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    /// Copy-up totals per container (the eBPF probe, when it runs).
    pub attribution: Arc<crate::copyup::Attribution>,
    /// The scanner's latest figures.
    pub scans: crate::metrics::ScanResults,
}

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

/// A failed request.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<strata_store::Error> for ApiError {
    fn from(e: strata_store::Error) -> Self {
        let status = match e.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::AlreadyExists | ErrorKind::InUse => StatusCode::CONFLICT,
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        } else {
            tracing::info!(error = %e, "request refused");
        }
        Self {
            status,
            message: e.to_string(),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        tracing::error!(error = %e, "store task panicked");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal error (see daemon log)".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                message: self.message,
            }),
        )
            .into_response()
    }
}

/// Runs a store call, which blocks (an fsync, a mount), right here: each connection has a
/// thread and a runtime of its own ([`serve::serve`]), and carries one request at a time, so
/// this blocks nothing but the request that waits for it. Long streams (import, export, exec)
/// use `spawn_blocking`, so that their connection's runtime can move their bytes meanwhile.
pub(crate) fn blocking<T>(
    state: &AppState,
    f: impl FnOnce(&Store) -> Result<T, strata_store::Error>,
) -> Result<T, ApiError> {
    Ok(f(&state.store)?)
}

/// The connection of an upgraded request (exec, import-fd), once the 101 went out; `None`,
/// logged, when it cannot be taken over (not a unix socket, or bytes already buffered past the
/// request, which would break the descriptor handshake).
async fn upgraded_stream(
    on_upgrade: hyper::upgrade::OnUpgrade,
    what: &str,
) -> Option<tokio::net::UnixStream> {
    match on_upgrade
        .await
        .map(hyper::upgrade::Upgraded::downcast::<hyper_util::rt::TokioIo<tokio::net::UnixStream>>)
    {
        Ok(Ok(parts)) if parts.read_buf.is_empty() => Some(parts.io.into_inner()),
        _ => {
            tracing::warn!("{what}: connection could not be taken over");
            None
        }
    }
}

/// The 101 answer to an upgrade to `protocol`.
fn switching_protocols(protocol: &'static str) -> Response {
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [(header::CONNECTION, "upgrade"), (header::UPGRADE, protocol)],
    )
        .into_response()
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/info", get(system::info))
        .route("/v1/system/df", get(system::df))
        .route("/v1/system/fsck", post(system::fsck))
        .route("/v1/stats", get(stats::stats))
        .route("/v1/images", get(images::list).delete(images::remove))
        .route("/v1/images/import", post(images::import))
        .route("/v1/images/import-fd", post(images::import_fd))
        .route("/v1/images/inspect", get(images::inspect))
        .route("/v1/images/tag", post(images::tag))
        .route("/v1/images/mount", post(images::mount))
        .route("/v1/images/unmount", post(images::unmount))
        .route(
            "/v1/containers",
            get(containers::list)
                .post(containers::create)
                .delete(containers::remove),
        )
        .route("/v1/containers/inspect", get(containers::inspect))
        .route("/v1/containers/mount", post(containers::mount))
        .route("/v1/containers/unmount", post(containers::unmount))
        .route("/v1/containers/diff", get(containers::diff))
        .route("/v1/containers/commit", post(containers::commit))
        .route("/v1/containers/exec", post(containers::exec))
        .route(
            "/v1/volumes",
            get(volumes::list)
                .post(volumes::create)
                .delete(volumes::remove),
        )
        .route("/v1/volumes/inspect", get(volumes::inspect))
        .route("/v1/volumes/prune", post(volumes::prune))
        .route("/v1/layers", get(layers::list))
        .route("/v1/layers/inspect", get(layers::inspect))
        .route("/v1/layers/export", get(layers::export))
        .fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no such endpoint: {method} {}", uri.path()),
                )
            },
        )
        // JSON bodies only; archives are streamed by the import handler, which no limit covers.
        .layer(axum::extract::DefaultBodyLimit::max(
            extract::JSON_BODY_LIMIT,
        ))
        .with_state(state)
}
