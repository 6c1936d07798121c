use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use strata_store::LayerSummary;

use super::extract::Params;
use super::{ApiError, AppState, blocking};
use crate::api::images::ChannelWriter;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LayerQuery {
    id: String,
}

pub(super) async fn list(
    State(state): State<AppState>,
) -> Result<Json<Vec<LayerSummary>>, ApiError> {
    blocking(&state, strata_store::Store::list_layers).map(Json)
}

pub(super) async fn inspect(
    State(state): State<AppState>,
    Params(q): Params<LayerQuery>,
) -> Result<Json<LayerSummary>, ApiError> {
    blocking(&state, move |s| s.inspect_layer(&q.id)).map(Json)
}

/// Streams the layer tar. The layer is resolved first so a bad id gets a proper status; an
/// error mid-stream aborts the body, which the client reports as a truncated export.
pub(super) async fn export(
    State(state): State<AppState>,
    Params(q): Params<LayerQuery>,
) -> Result<Response, ApiError> {
    let id = q.id.clone();
    let layer = blocking(&state, move |s| s.inspect_layer(&id))?;
    let (mut writer, body) = ChannelWriter::new();
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let chain = layer.chain_id.to_string();
        let written = store.export_layer(&chain, &mut writer).and_then(|()| {
            std::io::Write::flush(&mut writer)
                .map_err(|e| strata_store::Error::Invalid(format!("client went away: {e}")))
        });
        if let Err(e) = written {
            tracing::error!(layer = %chain, error = %e, "layer export failed");
            writer.fail(e.to_string());
        }
    });
    Response::builder()
        .header("content-type", "application/x-tar")
        .body(Body::from_stream(body))
        .map_err(|e| ApiError::bad_request(e.to_string()))
}
