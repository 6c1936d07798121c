//! The API facing careless or hostile clients: the socket's owner and mode, malformed or
//! oversized bodies, unknown fields and endpoints, invalid names, and a client that hangs up
//! half-way through an upload.
//!
//! Guards against: an API that anyone on the host can use, requests that half-succeed or crash
//! a handler, errors a client cannot read (422 with plain text, an empty 404), a typo in a field
//! name silently ignored, and an aborted import that leaves staging or records behind.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
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

#[test]
fn a_client_hanging_up_mid_upload_leaves_no_trace() {
    require_root("stratad runs as root");
    let d = Stratad::start(STRATAD);
    let archive = busybox_image("hard/cut:latest").docker_save_legacy();
    let staging = || {
        std::fs::read_dir(d.root().join("tmp"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("import-"))
            .count()
    };
    let mut s = UnixStream::connect(d.socket()).unwrap();
    write!(
        s,
        "POST /v1/images/import HTTP/1.1\r\nHost: s\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        archive.len()
    )
    .unwrap();
    s.write_all(&archive[..archive.len() / 2]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while staging() == 0 {
        assert!(
            Instant::now() < deadline,
            "the import never started staging"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(s);
    while staging() > 0 {
        assert!(
            Instant::now() < deadline,
            "staging left after the client hung up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (_, images) = d.request("GET", "/v1/images", b"");
    assert_eq!(images, serde_json::json!([]));
    let (_, layers) = d.request("GET", "/v1/layers", b"");
    assert_eq!(layers, serde_json::json!([]));
    let (_, fsck) = d.request("POST", "/v1/system/fsck", b"{}");
    assert_eq!(fsck["findings"], serde_json::json!([]), "{fsck}");
    // And the daemon goes on: the whole archive imports.
    d.import(STRATA, &busybox_image("hard/cut:latest"));
}
