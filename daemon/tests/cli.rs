//! The daemon and CLI as a user meets them: real `stratad` and `strata` binaries, a real store
//! on disk, real overlay mounts. Guards against a CLI that prints success on failure, a daemon
//! that dies on bad input, and start-up or shutdown that leaves the socket or database unusable.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use strata_testkit::{
    Compression, RICH_IMAGE_TAG, Stratad, TreeSnapshot, require_root, rich_image,
};

const STRATAD: &str = env!("CARGO_BIN_EXE_stratad");
const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn start() -> Stratad {
    require_root("stratad mounts overlayfs");
    Stratad::start(STRATAD)
}

fn json(d: &Stratad, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    serde_json::from_str(&d.strata_ok(STRATA, &full)).expect("--json prints JSON")
}

fn write_archive(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn image_lifecycle_through_the_cli() {
    let d = start();
    let dir = tempfile::tempdir().unwrap();
    let archive = write_archive(dir.path(), "rich.tar", &rich_image().docker_save_legacy());
    let out = d.strata_ok(STRATA, &["image", "import", archive.to_str().unwrap()]);
    assert!(
        out.contains(&format!("Loaded image: {RICH_IMAGE_TAG}")),
        "{out}"
    );

    let ls = d.strata_ok(STRATA, &["image", "ls"]);
    let header = ls.lines().next().unwrap();
    for col in [
        "REPOSITORY",
        "TAG",
        "IMAGE ID",
        "CREATED",
        "SIZE",
        "SHARED",
        "UNIQUE",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let images = json(&d, &["image", "ls"]);
    assert_eq!(images.as_array().unwrap().len(), 1);
    let id = images[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(id, rich_image().config_digest());

    let inspect = json(&d, &["image", "inspect", RICH_IMAGE_TAG]);
    assert_eq!(inspect["layers"].as_array().unwrap().len(), 3);
    assert_eq!(inspect["config"]["working_dir"], "/home/user");
    assert_eq!(inspect["config"]["user"], "1000:1000");
    assert_eq!(inspect["config"]["labels"]["org.strata.test"], "rich");
    assert!(
        inspect["config"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "STRATA_TEST=rich")
    );
    let human = d.strata_ok(STRATA, &["image", "inspect", &id[7..19]]);
    assert!(
        human.contains("DIFF ID") && human.contains("CHAIN ID"),
        "{human}"
    );

    d.strata_ok(STRATA, &["image", "tag", RICH_IMAGE_TAG, "copy:v1"]);
    let path = d.strata_ok(STRATA, &["image", "mount", "copy:v1"]);
    let path = path.trim();
    assert!(path.starts_with(d.root().to_str().unwrap()), "{path}");
    let tree = TreeSnapshot::from_dir(path).unwrap();
    assert!(tree.nodes.contains_key("etc/passwd"));
    assert!(!tree.nodes.contains_key("etc/delete-me"));

    // In use: rm refuses without --force; an untag of one of two tags is fine.
    let refused = d.strata(STRATA, &["image", "rm", &id]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("mounted") && err.lines().count() <= 2, "{err}");
    let untag = d.strata_ok(STRATA, &["image", "rm", "copy:v1"]);
    assert!(untag.contains("Untagged: copy:v1"), "{untag}");
    d.strata_ok(STRATA, &["image", "unmount", RICH_IMAGE_TAG]);
    assert!(!std::path::Path::new(path).exists());

    let layers = json(&d, &["layer", "ls"]);
    assert_eq!(layers.as_array().unwrap().len(), 3);
    let top = inspect["layers"][2]["chain_id"].as_str().unwrap();
    let export = dir.path().join("top.tar");
    d.strata_ok(
        STRATA,
        &["layer", "export", top, "-o", export.to_str().unwrap()],
    );
    let mut exported = TreeSnapshot::from_tar(std::fs::File::open(&export).unwrap()).unwrap();
    let mut original = TreeSnapshot::from_tar(rich_image().layers[2].as_slice()).unwrap();
    // Whiteouts come back as Docker exports them: empty 0600 files named `.wh.NAME`, with the
    // time of the whiteout device (Docker's overlay2 does not keep the original header).
    let whiteouts = |t: &mut TreeSnapshot| {
        let names: Vec<String> = t
            .nodes
            .keys()
            .filter(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with(".wh.")))
            .cloned()
            .collect();
        for n in &names {
            t.nodes.remove(n);
        }
        names
    };
    assert_eq!(whiteouts(&mut original), whiteouts(&mut exported));
    let diff = original.diff(&exported, &[]);
    assert!(
        diff.is_empty(),
        "export differs from the imported layer:\n{}",
        diff.join("\n")
    );

    let info = json(&d, &["system", "info"]);
    assert_eq!(info["driver"], "overlay2");
    assert_eq!(info["images"], 1);
    let df = d.strata_ok(STRATA, &["system", "df", "-v"]);
    assert!(
        df.contains("Images space usage") && df.contains("SHARED SIZE"),
        "{df}"
    );

    let rm = d.strata_ok(STRATA, &["image", "rm", RICH_IMAGE_TAG]);
    assert!(rm.contains("Deleted:"), "{rm}");
    assert_eq!(json(&d, &["layer", "ls"]).as_array().unwrap().len(), 0);
}

#[test]
fn import_from_stdin_streams() {
    let d = start();
    let mut child = d
        .command(STRATA)
        .args(["image", "import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let archive = rich_image().oci_layout(Compression::Zstd);
    child.stdin.take().unwrap().write_all(&archive).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&d, &["image", "ls"]).as_array().unwrap().len(), 1);
}

#[test]
fn errors_are_one_line_with_a_nonzero_exit_and_the_daemon_stays_up() {
    let d = start();
    let dir = tempfile::tempdir().unwrap();
    let garbage = write_archive(dir.path(), "garbage.tar", b"this is not an archive at all");
    let cases: Vec<Vec<&str>> = vec![
        vec!["image", "import", garbage.to_str().unwrap()],
        vec!["image", "inspect", "nope:latest"],
        vec!["image", "mount", "nope"],
        vec!["image", "rm", "nope"],
        vec!["image", "tag", "nope", "x"],
        vec!["layer", "inspect", "not-a-digest"],
        vec!["image", "import", "/nonexistent/file.tar"],
    ];
    for args in cases {
        let out = d.strata(STRATA, &args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("strata: error:"), "{args:?}: {err}");
    }
    assert_eq!(json(&d, &["image", "ls"]).as_array().unwrap().len(), 0);
}

#[test]
fn a_second_daemon_is_refused_and_shutdown_is_clean() {
    let mut d = start();
    let out = Command::new(STRATAD)
        .args([
            "--root",
            d.root().to_str().unwrap(),
            "--socket",
            d.socket().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already listening"), "{err}");

    let other_socket = d.socket().with_file_name("other.sock");
    let out = Command::new(STRATAD)
        .args([
            "--root",
            d.root().to_str().unwrap(),
            "--socket",
            other_socket.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another stratad"), "{err}");

    assert!(d.stop(), "stratad did not exit on SIGTERM");
    assert!(!d.socket().exists(), "socket left behind after shutdown");
}

#[test]
fn bad_config_files_are_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stratad.toml");
    std::fs::write(&config, "rooot = \"/x\"\n").unwrap();
    let out = Command::new(STRATAD)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stratad.toml") && err.contains("rooot"),
        "{err}"
    );
}

/// `strata container ls | head -1` closes the pipe while strata still writes: that must end
/// quietly with the status a shell gives a process SIGPIPE ended (as docker does), not with a
/// panic's backtrace or an error line. Any other failed write of standard output is an error.
#[test]
fn a_closed_stdout_ends_quietly_and_a_full_one_is_an_error() {
    let d = start();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = d
        .command(STRATA)
        .args(["system", "info"])
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(141), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let full = std::fs::File::options()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = d
        .command(STRATA)
        .args(["system", "info"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "strata: error: writing to standard output: No space left on device (os error 28)"
    );
}
