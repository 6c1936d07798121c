use axum::Json;
use axum::extract::State;
use strata_store::{DiskUsage, FsckOptions, FsckReport, StoreInfo};

use super::extract::JsonBody;
use super::{ApiError, AppState, blocking};

pub(super) async fn info(State(state): State<AppState>) -> Result<Json<StoreInfo>, ApiError> {
    blocking(&state, strata_store::Store::info).map(Json)
}

pub(super) async fn df(State(state): State<AppState>) -> Result<Json<DiskUsage>, ApiError> {
    blocking(&state, strata_store::Store::disk_usage).map(Json)
}

/// `POST /v1/system/fsck` with `{"repair": bool, "verify": bool}` (both optional): the
/// report, findings and all (findings are not an error of the request).
pub(super) async fn fsck(
    State(state): State<AppState>,
    JsonBody(opts): JsonBody<FsckOptions>,
) -> Result<Json<FsckReport>, ApiError> {
    blocking(&state, move |s| s.fsck(opts)).map(Json)
}
