//! Every metric Strata exports, in one place. Names are a contract with the dashboards and
//! alerts: base units, `_total` on counters, labels from bounded values only (container ids,
//! volume names, API routes, four kinds).
//!
//! Most values are read at scrape time from the store's records (O(records)), the copy-up
//! attribution (the eBPF probe's maps) and the scanner's last results; only the API latency
//! histogram is updated as requests happen.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use strata_store::ids::CacheId;
use strata_store::{ContainerSummary, LayerScan, Store};

use crate::copyup::{Attribution, CopyUpTotals, KINDS, LATENCY_BUCKETS};

/// The scanner's latest measurement of each container's writable layer.
pub type ScanResults = Arc<RwLock<HashMap<CacheId, LayerScan>>>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// The registry and the metrics updated outside scrapes.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Latency of API requests by route.
    api_request_duration: Family<RouteLabels, Histogram>,
}

/// Reads the store, the attribution and the scanner when Prometheus scrapes.
#[derive(Debug)]
struct StoreCollector {
    store: Arc<Store>,
    attribution: Arc<Attribution>,
    scans: ScanResults,
}

impl Metrics {
    pub fn new(store: Arc<Store>, attribution: Arc<Attribution>, scans: ScanResults) -> Self {
        let mut registry = Registry::default();
        let api_request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 4.0, 10))
        });
        registry.register(
            "strata_api_request_duration_seconds",
            "Latency of API requests, by route",
            api_request_duration.clone(),
        );
        registry.register_collector(Box::new(StoreCollector {
            store,
            attribution,
            scans,
        }));
        Self {
            registry,
            api_request_duration,
        }
    }

    /// Records one API request.
    pub fn record_api_request(&self, route: &str, seconds: f64) {
        self.api_request_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// The `OpenMetrics` text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Axum middleware: times every request under its matched route.
pub async fn track_api_latency(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let start = Instant::now();
    let response = next.run(request).await;
    metrics.record_api_request(&route, start.elapsed().as_secs_f64());
    response
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// A gauge family: one series per `(labels, value)`.
fn gauge_family<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Vec<(&'a str, String)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// Reads one figure out of a scan.
type ScanValue = fn(&LayerScan) -> u64;

/// Reads one kind's value out of copy-up totals.
type KindValue = fn(&CopyUpTotals, usize) -> u64;

/// Copy-up latency buckets as Prometheus `le` bounds: 2^10 ns (about 1 us) to 2^34 ns
/// (about 17 s), cumulative; the probe's log2 buckets map onto them exactly.
const FIRST_BOUND_LOG2: usize = 10;
const LAST_BOUND_LOG2: usize = 34;

#[expect(
    clippy::cast_precision_loss,
    reason = "nanosecond counts as float seconds for exposition"
)]
fn histogram_buckets(log2: &[u64; LATENCY_BUCKETS]) -> Vec<(f64, u64)> {
    let mut out = Vec::new();
    let mut cumulative = 0;
    for (k, count) in log2.iter().enumerate() {
        cumulative += count;
        let bound = k + 1;
        if (FIRST_BOUND_LOG2..=LAST_BOUND_LOG2).contains(&bound) {
            out.push(((1u64 << bound) as f64 / 1e9, cumulative));
        }
    }
    out.push((f64::INFINITY, cumulative));
    out
}

impl StoreCollector {
    /// The scanner's per-container gauges.
    fn encode_scans(
        &self,
        encoder: &mut DescriptorEncoder,
        containers: &[ContainerSummary],
    ) -> Result<(), std::fmt::Error> {
        let scans = self
            .scans
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let scanned = |f: ScanValue| {
            containers
                .iter()
                .filter_map(|c| {
                    scans
                        .get(&c.id)
                        .map(|s| (vec![("container_id", c.id.hex())], f(s)))
                })
                .collect::<Vec<_>>()
        };
        let families: [(&str, &str, ScanValue); 3] = [
            (
                "strata_container_rw_bytes",
                "Bytes in each container's writable layer",
                |s| s.rw_bytes,
            ),
            (
                "strata_container_copied_up_files",
                "Files in each writable layer that shadow a lower file (the scanner's view of copy-ups)",
                |s| s.copied_up_files,
            ),
            (
                "strata_container_copied_up_bytes",
                "Bytes of the files in each writable layer that shadow a lower file",
                |s| s.copied_up_bytes,
            ),
        ];
        for (name, help, value) in families {
            gauge_family(encoder, name, help, scanned(value))?;
        }
        Ok(())
    }

    fn encode_copyups(
        &self,
        encoder: &mut DescriptorEncoder,
        live: &HashSet<CacheId>,
    ) -> Result<(), std::fmt::Error> {
        let per_container = self.attribution.per_container(live).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading copy-up totals");
            HashMap::new()
        });
        let mut rows: Vec<(&String, &CopyUpTotals)> = per_container.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let counters: [(&str, &str, KindValue); 3] = [
            (
                "strata_copyup",
                "Copy-ups (overlayfs copy-on-write), by container and inode kind",
                |t, k| t.count[k],
            ),
            (
                "strata_copyup_bytes",
                "Bytes copied up (size of regular files at copy-up)",
                |t, k| t.bytes[k],
            ),
            ("strata_copyup_errors", "Copy-ups that failed", |t, k| {
                t.errors[k]
            }),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (id, totals) in &rows {
                for (k, kind) in KINDS.iter().enumerate() {
                    let labels = [
                        ("container_id", (*id).clone()),
                        ("kind", (*kind).to_owned()),
                    ];
                    family
                        .encode_family(&labels)?
                        .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                            &value(totals, k),
                            None,
                        )?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "strata_copyup_duration_seconds",
            "Time each copy-up took, from ovl_copy_up_one entry to return",
            None,
            MetricType::Histogram,
        )?;
        for (id, totals) in &rows {
            for (k, kind) in KINDS.iter().enumerate() {
                let labels = [
                    ("container_id", (*id).clone()),
                    ("kind", (*kind).to_owned()),
                ];
                #[expect(clippy::cast_precision_loss, reason = "nanoseconds as float seconds")]
                let sum = totals.latency_sum_ns[k] as f64 / 1e9;
                let count = totals.latency_log2[k].iter().sum();
                family
                    .encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        sum,
                        count,
                        &histogram_buckets(&totals.latency_log2[k]),
                        None,
                    )?;
            }
        }
        Ok(())
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(info) = self.store.info() else {
            return Ok(());
        };
        let containers = self.store.list_containers().unwrap_or_default();
        let volumes = self.store.list_volumes(None).unwrap_or_default();
        let layers = self.store.list_layers().unwrap_or_default();
        let scalars: [(&str, &str, u64); 10] = [
            (
                "strata_probe_up",
                "1 when the eBPF copy-up probe is attached",
                u64::from(self.attribution.probe_up()),
            ),
            (
                "strata_store_fs_size_bytes",
                "Size of the filesystem holding the store root",
                info.fs_size_bytes,
            ),
            (
                "strata_store_fs_avail_bytes",
                "Bytes available to unprivileged users on the store's filesystem",
                info.fs_avail_bytes,
            ),
            (
                "strata_store_fs_files",
                "Inodes of the store's filesystem",
                info.fs_files,
            ),
            (
                "strata_store_fs_files_free",
                "Free inodes of the store's filesystem",
                info.fs_files_free,
            ),
            ("strata_layers", "Layers stored", info.layers as u64),
            ("strata_images", "Images stored", info.images as u64),
            ("strata_containers", "Containers", info.containers as u64),
            ("strata_volumes", "Volumes", info.volumes as u64),
            (
                "strata_layer_bytes",
                "Bytes of all layers, each stored once",
                layers.iter().map(|l| l.size).sum(),
            ),
        ];
        for (name, help, value) in scalars {
            gauge(&mut encoder, name, help, value)?;
        }
        gauge_family(
            &mut encoder,
            "strata_volume_bytes",
            "Bytes in each volume, as last measured",
            volumes
                .iter()
                .map(|v| (vec![("volume", v.name.clone())], v.size.unwrap_or(0))),
        )?;
        gauge_family(
            &mut encoder,
            "strata_container_info",
            "Always 1: joins container ids to names and images",
            containers.iter().map(|c| {
                let image = c.image_name.clone().unwrap_or_else(|| c.image.to_string());
                (
                    vec![
                        ("container_id", c.id.hex()),
                        ("name", c.name.clone()),
                        ("image", image),
                    ],
                    1,
                )
            }),
        )?;
        self.encode_scans(&mut encoder, &containers)?;
        let live: HashSet<CacheId> = containers.iter().map(|c| c.id).collect();
        self.encode_copyups(&mut encoder, &live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_buckets_become_cumulative_le_bounds_from_1us_to_17s() {
        let mut log2 = [0u64; LATENCY_BUCKETS];
        log2[9] = 2; // [512, 1024) ns
        log2[12] = 3; // [4096, 8192) ns
        log2[39] = 1; // beyond the last bound
        let b = histogram_buckets(&log2);
        assert!((b[0].0 - 1.024e-6).abs() < 1e-12);
        assert_eq!(b[0].1, 2);
        assert_eq!(
            b.iter()
                .find(|(le, _)| (*le - 8.192e-6).abs() < 1e-12)
                .map(|x| x.1),
            Some(5)
        );
        assert_eq!(b.last().copied(), Some((f64::INFINITY, 6)));
        assert_eq!(b.len(), LAST_BOUND_LOG2 - FIRST_BOUND_LOG2 + 2);
    }
}
