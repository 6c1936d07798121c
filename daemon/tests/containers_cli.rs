//! Containers and volumes through the real `strata` CLI and `stratad`: exec passes the
//! client's own stdin/stdout/stderr (file descriptors, not copies) and its exit code, diff
//! prints docker-style lines, and invalid mount specs fail with one line naming the problem.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

use std::io::Write;
use std::process::Stdio;

use serde_json::Value;
use strata_testkit::{Stratad, busybox_image, require_root};

const STRATAD: &str = env!("CARGO_BIN_EXE_stratad");
const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const IMAGE: &str = "busybox/cli:latest";

fn daemon_with_image() -> Stratad {
    require_root("stratad mounts overlayfs");
    let d = Stratad::start(STRATAD);
    d.import(STRATA, &busybox_image(IMAGE));
    d
}

#[test]
fn exec_passes_stdin_stdout_and_the_exit_code() {
    let d = daemon_with_image();
    d.strata_ok(
        STRATA,
        &[
            "container",
            "create",
            "--name",
            "web",
            "-e",
            "GREETING=hi",
            IMAGE,
        ],
    );
    let mut child = d
        .command(STRATA)
        .args([
            "container",
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "read line; echo \"$GREETING $line\"; echo oops >&2; exit 7",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"there\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi there\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    let ok = d
        .command(STRATA)
        .args(["container", "exec", "web", "--", "rm", "/data/delete-me"])
        .output()
        .unwrap();
    assert!(ok.status.success());
    let diff = d.strata_ok(STRATA, &["container", "diff", "web"]);
    assert_eq!(diff, "C /data\nD /data/delete-me\n");

    let id = d.strata_ok(
        STRATA,
        &["container", "commit", "web", "busybox/committed:v2"],
    );
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let images: Value =
        serde_json::from_str(&d.strata_ok(STRATA, &["--json", "image", "ls"])).unwrap();
    assert_eq!(images.as_array().unwrap().len(), 2);

    let missing = d
        .command(STRATA)
        .args(["container", "exec", "nope", "--", "true"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such container"));
    d.strata_ok(STRATA, &["container", "rm", "web"]);
}

#[test]
fn bad_mount_specs_fail_with_one_line_and_create_nothing() {
    let d = daemon_with_image();
    for (flag, spec, needle) in [
        ("-v", "data:relative", "relative"),
        ("-v", "a:b:c:d", "colons"),
        ("-v", "data:/x:rw,ro", "conflicting"),
        (
            "--mount",
            "type=bind,source=/does/not/exist,target=/x",
            "/does/not/exist",
        ),
        ("--mount", "type=tmpfs,source=/x,target=/y", "tmpfs"),
    ] {
        let out = d.strata(STRATA, &["container", "create", flag, spec, IMAGE]);
        assert!(!out.status.success(), "{spec}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{spec}: {err}");
    }
    let containers: Value =
        serde_json::from_str(&d.strata_ok(STRATA, &["--json", "container", "ls", "-a"])).unwrap();
    assert!(containers.as_array().unwrap().is_empty());
    let volumes: Value =
        serde_json::from_str(&d.strata_ok(STRATA, &["--json", "volume", "ls"])).unwrap();
    assert!(volumes.as_array().unwrap().is_empty());
}

#[test]
fn volumes_list_filter_inspect_and_prune() {
    let d = daemon_with_image();
    d.strata_ok(
        STRATA,
        &["volume", "create", "named", "--label", "team=storage"],
    );
    d.strata_ok(
        STRATA,
        &[
            "container",
            "create",
            "--name",
            "user",
            "-v",
            "named:/named",
            "-v",
            "/anon",
            IMAGE,
        ],
    );
    let inspect: Value =
        serde_json::from_str(&d.strata_ok(STRATA, &["volume", "inspect", "named"])).unwrap();
    assert_eq!(inspect["labels"]["team"], "storage");
    assert_eq!(inspect["used_by"][0], "user");
    let dangling = d.strata_ok(STRATA, &["volume", "ls", "-q", "--filter", "dangling=true"]);
    assert!(dangling.trim().is_empty(), "{dangling}");
    let refused = d.strata(STRATA, &["volume", "rm", "named"]);
    assert!(!refused.status.success());
    d.strata_ok(STRATA, &["container", "rm", "user"]);
    let dangling = d.strata_ok(STRATA, &["volume", "ls", "-q", "--filter", "dangling=true"]);
    assert_eq!(dangling.lines().count(), 2);
    let pruned = d.strata_ok(STRATA, &["volume", "prune"]);
    assert!(!pruned.contains("named"), "{pruned}");
    let left = d.strata_ok(STRATA, &["volume", "ls", "-q"]);
    assert_eq!(left.trim(), "named");
    let df = d.strata_ok(STRATA, &["system", "df", "-v"]);
    assert!(
        df.contains("Local Volumes space usage") && df.contains("Containers space usage"),
        "{df}"
    );
}

#[test]
fn stats_shows_a_row_per_container_with_the_scanners_figures() {
    let d = daemon_with_image();
    d.strata_ok(STRATA, &["container", "create", "--name", "busy", IMAGE]);
    d.strata_ok(STRATA, &["container", "create", "--name", "quiet", IMAGE]);
    let out = d
        .command(STRATA)
        .args([
            "container",
            "exec",
            "busy",
            "--",
            "sh",
            "-c",
            "echo more >> /data/lower.txt",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let expected = "from the image\nmore\n".len() as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let rows = loop {
        let rows: Value =
            serde_json::from_str(&d.strata_ok(STRATA, &["--json", "stats", "--no-stream"]))
                .unwrap();
        let busy = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "busy")
            .cloned()
            .unwrap();
        if busy["copied_up_bytes"] == expected {
            break rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "scanner never reported the copy-up: {rows}"
        );
    };
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["name"], "busy", "sorted by cost: {rows:?}");
    assert_eq!(rows[0]["copied_up_files"], 1);
    assert_eq!(rows[0]["rw_bytes"], expected);
    assert_eq!(rows[1]["rw_bytes"], 0);
    let table = d.strata_ok(STRATA, &["stats", "--no-stream"]);
    let header = table.lines().next().unwrap();
    for col in [
        "CONTAINER ID",
        "NAME",
        "COPY-UPS/S",
        "COPY-UP BYTES/S",
        "P99 LATENCY",
        "RW SIZE",
        "COPIED UP",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(table.contains("probe off"), "{table}");
}

/// The human tables are read from typed answers now, not looked up field by field in JSON
/// (where a renamed field printed an empty cell): each column must show its container's value.
#[test]
fn container_ls_and_df_tables_show_each_containers_values() {
    let d = daemon_with_image();
    let id = d.strata_ok(STRATA, &["container", "create", "--name", "web", IMAGE]);
    let short = &id.trim()[..12];
    d.strata_ok(STRATA, &["container", "create", "--name", "idle", IMAGE]);
    d.strata_ok(STRATA, &["container", "mount", "web"]);

    // A table's cells are separated by at least three spaces; a row is found by any cell.
    let row = |table: &str, cell: &str| -> Vec<String> {
        table
            .lines()
            .map(|line| {
                line.split("   ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .find(|cells| cells.iter().any(|c| c == cell))
            .unwrap_or_else(|| panic!("no row with {cell} in:\n{table}"))
    };
    let ls = d.strata_ok(STRATA, &["container", "ls", "-a", "--size"]);
    let web = row(&ls, "web");
    assert_eq!(web[0], short, "{ls}");
    assert_eq!(web[1], IMAGE, "{ls}");
    assert!(web[2].ends_with(" ago"), "{ls}");
    assert_eq!(web[3], "yes", "{ls}");
    assert_eq!(web[4], "web", "{ls}");
    assert!(web[5].contains("(virtual "), "{ls}");
    assert_eq!(row(&ls, "idle")[3], "no", "{ls}");
    let quiet = d.strata_ok(STRATA, &["container", "ls", "-q"]);
    assert!(quiet.lines().any(|l| l == short), "{quiet}");
    assert_eq!(quiet.lines().count(), 2, "{quiet}");

    let df = d.strata_ok(STRATA, &["system", "df", "-v"]);
    let totals = row(&df, "Containers");
    assert_eq!(totals[..3], ["Containers", "2", "1"], "{df}");
    let (repository, tag) = IMAGE.rsplit_once(':').unwrap();
    let image = row(&df, repository);
    assert_eq!(image[..2], [repository, tag], "{df}");
    assert_eq!(image.last().map(String::as_str), Some("2"), "{df}");
    let web = row(&df, "web");
    assert_eq!(web[0], short, "{df}");
    assert_eq!(web[1], IMAGE, "{df}");
    assert!(web[4].ends_with(" ago"), "{df}");
}
