use axum::Json;
use axum::extract::State;
use strata_store::{DiskUsage, StoreInfo};

use super::{ApiError, AppState, blocking};

pub(super) async fn info(State(state): State<AppState>) -> Result<Json<StoreInfo>, ApiError> {
    blocking(&state, strata_store::Store::info).map(Json)
}

pub(super) async fn df(State(state): State<AppState>) -> Result<Json<DiskUsage>, ApiError> {
    blocking(&state, strata_store::Store::disk_usage).map(Json)
}
