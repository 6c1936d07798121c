use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use strata_store::{PrunedVolumes, VolumeSummary};

use super::extract::{JsonBody, Params};
use super::{ApiError, AppState, blocking};

/// `POST /v1/volumes`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolumeBody {
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NameQuery {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    dangling: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PruneQuery {
    #[serde(default)]
    all: bool,
}

pub(super) async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateVolumeBody>,
) -> Result<Json<VolumeSummary>, ApiError> {
    blocking(&state, move |s| {
        s.create_volume(body.name.as_deref(), body.labels)
    })
    .map(Json)
}

pub(super) async fn list(
    State(state): State<AppState>,
    Params(q): Params<ListQuery>,
) -> Result<Json<Vec<VolumeSummary>>, ApiError> {
    blocking(&state, move |s| s.list_volumes(q.dangling)).map(Json)
}

pub(super) async fn inspect(
    State(state): State<AppState>,
    Params(q): Params<NameQuery>,
) -> Result<Json<VolumeSummary>, ApiError> {
    blocking(&state, move |s| s.inspect_volume(&q.name)).map(Json)
}

pub(super) async fn remove(
    State(state): State<AppState>,
    Params(q): Params<NameQuery>,
) -> Result<Json<String>, ApiError> {
    let name = q.name.clone();
    blocking(&state, move |s| s.remove_volume(&q.name)).map(|()| Json(name))
}

pub(super) async fn prune(
    State(state): State<AppState>,
    Params(q): Params<PruneQuery>,
) -> Result<Json<PrunedVolumes>, ApiError> {
    blocking(&state, move |s| s.prune_volumes(q.all)).map(Json)
}
