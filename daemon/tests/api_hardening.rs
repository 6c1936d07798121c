//! The API facing careless or hostile clients: the socket's owner and mode, malformed or
//! oversized bodies, unknown fields and endpoints, invalid names, and a client that hangs up
//! half-way through an upload or through an import of its pipe.
//!
//! Guards against: an API that anyone on the host can use, requests that half-succeed or crash
//! a handler, errors a client cannot read (422 with plain text, an empty 404), a typo in a field
//! name silently ignored, and an aborted import that leaves staging or records behind.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_testkit::{Stratad, busybox_image, require_root};

const STRATAD: &str = env!("CARGO_BIN_EXE_stratad");
const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or_default()
}

#[test]
fn the_socket_is_0660_and_owned_by_the_configured_group() {
    require_root("stratad runs as root");
    let d = Stratad::start(STRATAD);
    let meta = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    drop(d);

    let group = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
    let d = Stratad::start_with(STRATAD, &["--socket-group", "nogroup"]);
    let meta = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, group.gid.as_raw()));
}

#[test]
fn bad_requests_get_400_with_a_message_and_change_nothing() {
    require_root("stratad runs as root");
    let d = Stratad::start(STRATAD);
    d.import(STRATA, &busybox_image("hard/bb:latest"));
    let cases: [(&str, &str, &[u8], &str); 10] = [
        (
            "POST",
            "/v1/containers",
            b"{\"image\": ",
            "invalid request body",
        ),
        ("POST", "/v1/containers", b"[1, 2]", "invalid request body"),
        (
            "POST",
            "/v1/containers",
            b"{\"imgae\": \"hard/bb:latest\"}",
            "imgae",
        ),
        (
            "POST",
            "/v1/containers",
            b"{\"image\": 5}",
            "invalid request body",
        ),
        (
            "POST",
            "/v1/containers",
            b"{\"image\": \"hard/bb:latest\", \"name\": \"no spaces allowed\"}",
            "invalid container name",
        ),
        (
            "POST",
            "/v1/volumes",
            b"{\"name\": \"-dash\"}",
            "invalid volume name",
        ),
        (
            "POST",
            "/v1/images/tag?source=hard/bb:latest&target=UPPER:case",
            b"",
            "UPPER",
        ),
        (
            "GET",
            "/v1/containers/inspect?ref=x&frobnicate=1",
            b"",
            "frobnicate",
        ),
        ("POST", "/v1/system/fsck", b"{\"repare\": true}", "repare"),
        (
            "POST",
            "/v1/containers/exec?ref=x&spec=%7B%22usr%22%3A%22nobody%22%7D",
            b"",
            "usr",
        ),
    ];
    for (method, path, body, needle) in cases {
        let (status, answer) = d.request(method, path, body);
        assert_eq!(
            status,
            400,
            "{method} {path} {:?}: {answer}",
            String::from_utf8_lossy(body)
        );
        assert!(
            message(&answer).contains(needle),
            "{method} {path}: {answer} should mention {needle:?}"
        );
    }
    let (status, answer) = d.request("GET", "/v1/nothing-here", b"");
    assert_eq!(status, 404);
    assert!(message(&answer).contains("no such endpoint"), "{answer}");

    let huge = format!("{{\"image\": \"{}\"}}", "x".repeat(2 << 20));
    let (status, answer) = d.request("POST", "/v1/containers", huge.as_bytes());
    assert_eq!(status, 413, "{answer}");
    assert!(message(&answer).contains("over"), "{answer}");

    // None of it made anything.
    let (_, containers) = d.request("GET", "/v1/containers", b"");
    assert_eq!(containers, serde_json::json!([]));
    let (_, volumes) = d.request("GET", "/v1/volumes", b"");
    assert_eq!(volumes, serde_json::json!([]));
    let (_, fsck) = d.request("POST", "/v1/system/fsck", b"{}");
    assert_eq!(fsck["findings"], serde_json::json!([]));
}

/// Import staging directories under the daemon's root.
fn staging(d: &Stratad) -> usize {
    std::fs::read_dir(d.root().join("tmp"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("import-"))
        .count()
}

/// Waits up to 10 s for `done`, failing with `what`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// No image, layer or finding after an aborted import; and the daemon goes on: the whole
/// archive imports.
fn assert_aborted_without_trace(d: &Stratad, tag: &str) {
    let (_, images) = d.request("GET", "/v1/images", b"");
    assert_eq!(images, serde_json::json!([]));
    let (_, layers) = d.request("GET", "/v1/layers", b"");
    assert_eq!(layers, serde_json::json!([]));
    let (_, fsck) = d.request("POST", "/v1/system/fsck", b"{}");
    assert_eq!(fsck["findings"], serde_json::json!([]), "{fsck}");
    d.import(STRATA, &busybox_image(tag));
}

/// A connection with the head of `POST /v1/images/import` for `archive` sent, its body not.
fn upload(d: &Stratad, archive: &[u8]) -> UnixStream {
    let mut s = UnixStream::connect(d.socket()).unwrap();
    write!(
        s,
        "POST /v1/images/import HTTP/1.1\r\nHost: s\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        archive.len()
    )
    .unwrap();
    s
}

#[test]
fn a_client_hanging_up_mid_upload_leaves_no_trace() {
    require_root("stratad runs as root");
    let d = Stratad::start(STRATAD);
    let archive = busybox_image("hard/cut:latest").docker_save_legacy();
    let mut s = upload(&d, &archive);
    s.write_all(&archive[..archive.len() / 2]).unwrap();
    wait_for("the import never started staging", || staging(&d) > 0);
    drop(s);
    wait_for("staging left after the client hung up", || staging(&d) == 0);
    assert_aborted_without_trace(&d, "hard/cut:latest");
}

/// `strata image import` hands the daemon its archive's descriptor: the daemon reads the pipe
/// itself, so only the connection tells it that the client is gone. Here the pipe's writer
/// stalls half-way and stays open: the import must still end when the CLI is killed.
#[test]
fn a_cli_import_killed_while_its_pipe_stalls_is_cancelled_and_leaves_no_trace() {
    require_root("stratad runs as root");
    let d = Stratad::start(STRATAD);
    let archive = busybox_image("hard/stalled:latest").docker_save_legacy();
    let mut cli = d
        .command(STRATA)
        .args(["image", "import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut pipe = cli.stdin.take().unwrap();
    pipe.write_all(&archive[..archive.len() / 2]).unwrap();
    wait_for("the import never started staging", || staging(&d) > 0);
    // Once the pipe is empty the daemon waits for more, and cannot see the hang-up in a read.
    wait_for("the daemon never drained the pipe", || unread(&pipe) == 0);
    std::thread::sleep(Duration::from_millis(100));
    cli.kill().unwrap();
    cli.wait().unwrap();
    wait_for("staging left after the CLI was killed", || staging(&d) == 0);
    drop(pipe);
    assert_aborted_without_trace(&d, "hard/stalled:latest");
}

/// Bytes written to a pipe and not read yet (`FIONREAD`, which a pipe answers on either end).
fn unread(pipe: &impl std::os::fd::AsRawFd) -> libc::c_int {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at `n`.
    let rc = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &raw mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n
}

#[test]
fn an_archive_streamed_as_the_request_body_imports() {
    require_root("stratad runs as root");
    let d = Stratad::start(STRATAD);
    let archive = busybox_image("hard/streamed:latest").docker_save_legacy();
    let mut s = upload(&d, &archive);
    s.write_all(&archive).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#"{"imported":{"images":[{"#), "{answer}");
    let (_, images) = d.request("GET", "/v1/images", b"");
    assert_eq!(
        images[0]["tags"],
        serde_json::json!(["hard/streamed:latest"])
    );
}

#[test]
fn importing_a_directory_is_refused_by_name() {
    require_root("stratad runs as root");
    let d = Stratad::start(STRATAD);
    let out = d.strata(STRATA, &["image", "import", "/etc"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("import of /etc failed: the archive is a directory"),
        "{err}"
    );
}
