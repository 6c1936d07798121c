//! `/metrics` as Prometheus scrapes it: every metric of ARCHITECTURE.md present, valid for
//! `promtool check metrics`, and the scanner's copy-up figures equal to what a scripted
//! workload did. Guards against renamed metrics (dashboards and alerts depend on the names)
//! and against a scanner that miscounts copy-ups on hosts where the probe cannot run.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_testkit::{Stratad, busybox_image, find_program, require_root};

const STRATAD: &str = env!("CARGO_BIN_EXE_stratad");
const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const IMAGE: &str = "busybox/metrics:latest";

const EXPECTED: &[&str] = &[
    "strata_copyup_total",
    "strata_copyup_bytes_total",
    "strata_copyup_duration_seconds",
    "strata_copyup_errors_total",
    "strata_container_info",
    "strata_store_fs_size_bytes",
    "strata_store_fs_avail_bytes",
    "strata_store_fs_files",
    "strata_store_fs_files_free",
    "strata_container_rw_bytes",
    "strata_container_copied_up_bytes",
    "strata_container_copied_up_files",
    "strata_layer_bytes",
    "strata_volume_bytes",
    "strata_layers",
    "strata_images",
    "strata_containers",
    "strata_volumes",
    "strata_probe_up",
    "strata_api_request_duration_seconds",
];

/// The value of the sample `name{labels}` (labels as they appear in the text), if present.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
fn metrics_are_complete_valid_and_the_scanner_counts_copy_ups_exactly() {
    require_root("stratad mounts overlayfs");
    let d = Stratad::start(STRATAD);
    d.import(STRATA, &busybox_image(IMAGE));
    d.strata_ok(
        STRATA,
        &[
            "container",
            "create",
            "--name",
            "w",
            "-v",
            "vol:/vol",
            IMAGE,
        ],
    );
    d.strata_ok(STRATA, &["container", "create", "--name", "idle", IMAGE]);
    // Two copy-ups (one appended, one chmod: a metadata change copies the whole file up
    // without metacopy), one new file, one deletion, and volume data (not in the layer).
    let script = "echo more >> /data/lower.txt && chmod 600 /etc/motd && echo new > /new.txt \
                  && rm /data/delete-me && echo v > /vol/f";
    let out = d
        .command(STRATA)
        .args(["container", "exec", "w", "--", "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let containers: Value =
        serde_json::from_str(&d.strata_ok(STRATA, &["--json", "container", "ls"])).unwrap();
    let id_of = |name: &str| {
        containers
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (w, idle) = (id_of("w"), id_of("idle"));

    let lower = 20.0; // "from the image\nmore\n"
    let motd = 8.0; // "welcome\n"
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = d.metrics();
        let scanned = sample(
            &text,
            "strata_container_copied_up_files",
            &format!("container_id=\"{w}\""),
        ) == Some(2.0);
        if scanned && sample(&text, "strata_volume_bytes", "volume=\"vol\"") == Some(2.0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "scanner never reported the copy-ups:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let w_label = format!("container_id=\"{w}\"");
    let idle_label = format!("container_id=\"{idle}\"");
    assert_eq!(
        sample(&text, "strata_container_copied_up_bytes", &w_label),
        Some(lower + motd)
    );
    assert_eq!(
        sample(&text, "strata_container_rw_bytes", &w_label),
        Some(lower + motd + 4.0)
    );
    assert_eq!(
        sample(&text, "strata_container_copied_up_files", &idle_label),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "strata_container_rw_bytes", &idle_label),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "strata_probe_up", ""),
        Some(0.0),
        "the host's lockdown refuses kprobes"
    );
    assert_eq!(sample(&text, "strata_containers", ""), Some(2.0));
    assert_eq!(sample(&text, "strata_images", ""), Some(1.0));
    assert_eq!(
        sample(&text, "strata_volume_bytes", "volume=\"vol\""),
        Some(2.0)
    );
    assert!(
        text.contains(&format!(
            "strata_container_info{{container_id=\"{w}\",name=\"w\",image=\"{IMAGE}\"}} 1"
        )),
        "{text}"
    );
    for name in EXPECTED {
        assert!(
            text.contains(&format!("# TYPE {}", name.trim_end_matches("_total"))),
            "{name} missing:\n{text}"
        );
    }
    assert!(
        text.contains("strata_api_request_duration_seconds_count{route=\"/v1/containers\"}"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));

    let promtool =
        find_program("promtool").expect("promtool not found: install prometheus (`.ci/run` does)");
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A removed container's series disappear.
    d.strata_ok(STRATA, &["container", "rm", "idle"]);
    assert!(!d.metrics().contains(&idle_label));
}
