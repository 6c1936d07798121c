//! `strata stats`: a live per-container view of copy-on-write cost, like `docker stats`.
//! It polls the daemon's `/v1/stats` (cumulative figures) and shows rates between polls.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::format::{human_size, table};
use crate::api::stats::{ContainerStats, Stats};
use crate::client::Client;

/// One row as shown: rates over the last interval plus current sizes.
#[derive(Debug, Clone, Serialize)]
pub struct StatsRow {
    pub id: String,
    pub name: String,
    pub copyups_per_sec: f64,
    pub bytes_per_sec: f64,
    /// p99 copy-up latency over the interval, seconds (upper bound of its log2 bucket).
    pub p99_seconds: Option<f64>,
    pub rw_bytes: u64,
    pub copied_up_bytes: u64,
    pub copied_up_files: u64,
}

/// The upper bound, in seconds, of the log2-ns bucket holding quantile `q` of `buckets`.
#[expect(
    clippy::cast_precision_loss,
    reason = "counts and nanoseconds shown as floats"
)]
pub fn quantile_log2(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0);
    let mut seen = 0u64;
    for (k, n) in buckets.iter().enumerate() {
        seen += n;
        if seen as f64 >= rank {
            return Some(2f64.powi(i32::try_from(k + 1).unwrap_or(63)) / 1e9);
        }
    }
    None
}

/// Rates between two samples, sorted by cost (bytes/s, then copy-ups/s, then RW bytes).
#[expect(clippy::cast_precision_loss, reason = "rates are shown as floats")]
pub fn rows(before: &Stats, after: &Stats, elapsed: Duration) -> Vec<StatsRow> {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let mut out: Vec<StatsRow> = after
        .containers
        .iter()
        .map(|now| {
            let prev = before
                .containers
                .iter()
                .find(|p| p.id == now.id)
                .cloned()
                .unwrap_or_else(|| ContainerStats {
                    latency_log2: vec![0; now.latency_log2.len()],
                    ..ContainerStats::default()
                });
            let delta: Vec<u64> = now
                .latency_log2
                .iter()
                .zip(prev.latency_log2.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect();
            StatsRow {
                id: now.id.clone(),
                name: now.name.clone(),
                copyups_per_sec: now.copyups.saturating_sub(prev.copyups) as f64 / secs,
                bytes_per_sec: now.copyup_bytes.saturating_sub(prev.copyup_bytes) as f64 / secs,
                p99_seconds: quantile_log2(&delta, 0.99),
                rw_bytes: now.rw_bytes,
                copied_up_bytes: now.copied_up_bytes,
                copied_up_files: now.copied_up_files,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.bytes_per_sec
            .total_cmp(&a.bytes_per_sec)
            .then(b.copyups_per_sec.total_cmp(&a.copyups_per_sec))
            .then(b.rw_bytes.cmp(&a.rw_bytes))
            .then(a.name.cmp(&b.name))
    });
    out
}

fn duration_text(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s < 1e-3 => format!("{:.0}us", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "rates shown rounded"
)]
fn render(rows: &[StatsRow], probe_up: bool) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.chars().take(12).collect(),
                r.name.clone(),
                format!("{:.1}", r.copyups_per_sec),
                format!("{}/s", human_size(r.bytes_per_sec.round() as u64)),
                duration_text(r.p99_seconds),
                human_size(r.rw_bytes),
                format!(
                    "{} ({} files)",
                    human_size(r.copied_up_bytes),
                    r.copied_up_files
                ),
            ]
        })
        .collect();
    let mut text = table(
        &[
            "CONTAINER ID",
            "NAME",
            "COPY-UPS/S",
            "COPY-UP BYTES/S",
            "P99 LATENCY",
            "RW SIZE",
            "COPIED UP",
        ],
        &body,
    );
    if !probe_up {
        text.push_str(
            "(copy-up probe off: rates and latency need it; sizes come from the scanner)\n",
        );
    }
    text
}

pub(super) async fn stats(client: &Client, no_stream: bool, json: bool) -> anyhow::Result<()> {
    let interval = Duration::from_secs(1);
    let mut before: Stats = client.json(hyper::Method::GET, "/v1/stats").await?;
    let mut at = Instant::now();
    loop {
        tokio::time::sleep(interval.saturating_sub(at.elapsed())).await;
        let after: Stats = client.json(hyper::Method::GET, "/v1/stats").await?;
        let now = Instant::now();
        let shown = rows(&before, &after, now - at);
        if json {
            outln!("{}", serde_json::to_string(&shown)?);
        } else if no_stream {
            out!("{}", render(&shown, after.probe_up));
        } else {
            // Clear the screen and home the cursor, as `docker stats` does.
            out!("\x1b[2J\x1b[H{}", render(&shown, after.probe_up));
        }
        if no_stream {
            return Ok(());
        }
        before = after;
        at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_the_upper_bound_of_the_bucket_holding_it() {
        let mut b = vec![0u64; 40];
        b[10] = 98; // [1024, 2048) ns
        b[20] = 2; // about 1 ms
        assert_eq!(quantile_log2(&b, 0.5), Some(2048e-9));
        assert_eq!(quantile_log2(&b, 0.99), Some(2f64.powi(21) / 1e9));
        assert_eq!(quantile_log2(&[0; 40], 0.99), None);
    }

    #[test]
    fn rows_are_rates_over_the_interval_sorted_by_cost() {
        let c = |id: &str, copyups, bytes, rw| ContainerStats {
            id: id.into(),
            name: id.into(),
            copyups,
            copyup_bytes: bytes,
            rw_bytes: rw,
            latency_log2: vec![0; 40],
            ..ContainerStats::default()
        };
        let before = Stats {
            probe_up: true,
            containers: vec![c("a", 10, 1000, 5), c("b", 0, 0, 9)],
        };
        let after = Stats {
            probe_up: true,
            containers: vec![c("a", 12, 1000, 5), c("b", 4, 8000, 9), c("new", 1, 10, 0)],
        };
        let r = rows(&before, &after, Duration::from_secs(2));
        assert_eq!(
            r.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            vec!["b", "new", "a"]
        );
        assert!((r[0].bytes_per_sec - 4000.0).abs() < 1e-9);
        assert!((r[2].copyups_per_sec - 1.0).abs() < 1e-9);
    }
}
