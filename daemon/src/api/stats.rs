use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, blocking};
use crate::copyup::{LATENCY_BUCKETS, UNMANAGED};

/// One container's copy-up and writable-layer figures, cumulative (clients derive rates).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerStats {
    pub id: String,
    pub name: String,
    pub image: String,
    /// Copy-ups seen by the probe (all kinds).
    pub copyups: u64,
    pub copyup_bytes: u64,
    pub copyup_errors: u64,
    /// log2-nanosecond latency buckets, all kinds together.
    pub latency_log2: Vec<u64>,
    /// Writable-layer bytes and copied-up files/bytes, from the scanner.
    pub rw_bytes: u64,
    pub copied_up_files: u64,
    pub copied_up_bytes: u64,
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub probe_up: bool,
    pub containers: Vec<ContainerStats>,
}

pub(super) async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let attribution = state.attribution.clone();
    let scans = state.scans.clone();
    blocking(&state, move |store| {
        let containers = store.list_containers()?;
        let live: HashSet<_> = containers.iter().map(|c| c.id).collect();
        let copyups = attribution.per_container(&live).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading copy-up totals");
            HashMap::new()
        });
        let scans = scans
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut rows: Vec<ContainerStats> = containers
            .iter()
            .map(|c| {
                let mut row = ContainerStats {
                    id: c.id.hex(),
                    name: c.name.clone(),
                    image: c.image_name.clone().unwrap_or_else(|| c.image.to_string()),
                    latency_log2: vec![0; LATENCY_BUCKETS],
                    ..ContainerStats::default()
                };
                if let Some(scan) = scans.get(&c.id) {
                    row.rw_bytes = scan.rw_bytes;
                    row.copied_up_files = scan.copied_up_files;
                    row.copied_up_bytes = scan.copied_up_bytes;
                }
                row
            })
            .collect();
        if copyups.contains_key(UNMANAGED) {
            rows.push(ContainerStats {
                id: UNMANAGED.into(),
                name: UNMANAGED.into(),
                latency_log2: vec![0; LATENCY_BUCKETS],
                ..ContainerStats::default()
            });
        }
        for row in &mut rows {
            if let Some(t) = copyups.get(&row.id) {
                row.copyups = t.count.iter().sum();
                row.copyup_bytes = t.bytes.iter().sum();
                row.copyup_errors = t.errors.iter().sum();
                for kind in &t.latency_log2 {
                    for (b, n) in kind.iter().enumerate() {
                        row.latency_log2[b] += n;
                    }
                }
            }
        }
        Ok(Stats {
            probe_up: attribution.probe_up(),
            containers: rows,
        })
    })
    .map(Json)
}
