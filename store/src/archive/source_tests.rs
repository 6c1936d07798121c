//! Image archives built in-test in each supported layout, and the ways they can be wrong. Every
//! failing case also checks that nothing is left behind in the staging directory.

use std::io::Write;
use std::path::Path;

use tar::{EntryType, Header};

use super::extract_tests::LayerTar;
use super::{ArchiveError, BlobKey, ImportedArchive, read_image_archive};
use crate::ids::{DiffId, Digest};

fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut t = LayerTar::new();
    for (name, data) in files {
        t.file(name, data);
    }
    t.finish()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 1).expect("zstd")
}

fn diff(data: &[u8]) -> DiffId {
    DiffId(Digest::of(data))
}

fn config(diffs: &[DiffId]) -> Vec<u8> {
    let ids: Vec<String> = diffs.iter().map(ToString::to_string).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": "sh", "Entrypoint": null, "Labels": {"a": "b"}, "WorkingDir": ""},
        "rootfs": {"type": "layers", "diff_ids": ids},
    }))
    .expect("json")
}

/// The outer archive: regular entries and symlinks, in the order given.
#[derive(Default)]
struct Outer {
    builder: Option<tar::Builder<Vec<u8>>>,
}

impl Outer {
    fn new() -> Self {
        Self {
            builder: Some(tar::Builder::new(Vec::new())),
        }
    }

    fn b(&mut self) -> &mut tar::Builder<Vec<u8>> {
        self.builder.as_mut().expect("builder")
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        let mut h = Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        self.b().append_data(&mut h, name, data).expect("append");
        self
    }

    /// A blob under `blobs/sha256/`, returning its digest string.
    fn blob(&mut self, data: &[u8]) -> String {
        let d = Digest::of(data);
        self.file(&format!("blobs/sha256/{}", d.hex()), data);
        d.to_string()
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        self.b().append_link(&mut h, name, target).expect("symlink");
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        self.builder
            .take()
            .expect("builder")
            .into_inner()
            .expect("finish")
    }
}

fn read(archive: &[u8], staging: &Path) -> Result<ImportedArchive, ArchiveError> {
    read_known(archive, staging, &|_| None)
}

fn read_known(
    archive: &[u8],
    staging: &Path,
    known: &dyn Fn(&BlobKey) -> Option<DiffId>,
) -> Result<ImportedArchive, ArchiveError> {
    let mut entries = Vec::new();
    let result = read_image_archive(archive, staging, known, &mut |p| {
        entries.push(p.entry.clone());
    });
    if result.is_err() {
        assert_eq!(
            std::fs::read_dir(staging).expect("staging").count(),
            0,
            "staging cleaned after error"
        );
    }
    result
}

fn expect_err(result: Result<ImportedArchive, ArchiveError>, needles: &[&str]) {
    let msg = result.expect_err("import should fail").to_string();
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} should mention {n:?}");
    }
    assert!(!msg.contains('\n'), "{msg:?}");
}

const ID1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const ID2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn legacy_archive(tags: &[&str], with_duplicate_symlink: bool) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let l1 = layer(&[("etc/os-release", b"ID=test\n")]);
    let l2 = layer(&[("app/bin", b"#!/bin/sh\n")]);
    let mut diffs = vec![diff(&l1), diff(&l2)];
    let mut paths = vec![format!("{ID1}/layer.tar"), format!("{ID2}/layer.tar")];
    let mut o = Outer::new();
    o.file(&format!("{ID1}/VERSION"), b"1.0")
        .file(&format!("{ID1}/json"), b"{}");
    o.file(&format!("{ID1}/layer.tar"), &l1)
        .file(&format!("{ID2}/layer.tar"), &l2);
    if with_duplicate_symlink {
        let id3 = "3333333333333333333333333333333333333333333333333333333333333333";
        o.symlink(&format!("{id3}/layer.tar"), &format!("../{ID1}/layer.tar"));
        diffs.push(diff(&l1));
        paths.push(format!("./{id3}/layer.tar"));
    }
    let cfg = config(&diffs);
    let cfg_name = format!("{}.json", Digest::of(&cfg).hex());
    o.file(&cfg_name, &cfg);
    let manifest = serde_json::json!([{"Config": cfg_name, "RepoTags": tags, "Layers": paths}]);
    o.file(
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("json"),
    );
    o.file("repositories", b"{}");
    (o.finish(), l1, cfg)
}

#[test]
fn legacy_docker_save_is_read_in_one_pass() {
    let staging = tempfile::tempdir().expect("staging");
    let (archive, l1, cfg) = legacy_archive(
        &["busybox:latest", "registry.local:5000/team/app:v1"],
        false,
    );
    let got = read(&archive, staging.path()).expect("import");
    assert_eq!(got.images.len(), 1);
    let img = &got.images[0];
    assert_eq!(img.id.0, Digest::of(&cfg));
    assert_eq!(img.config_json, cfg);
    assert_eq!(
        img.repo_tags
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["busybox:latest", "registry.local:5000/team/app:v1"]
    );
    assert_eq!(img.config.cmd.as_deref(), Some(&["sh".to_owned()][..]));
    assert_eq!(img.config.entrypoint, None);
    assert_eq!(img.config.working_dir, None);
    assert_eq!(img.config.labels.get("a").map(String::as_str), Some("b"));
    assert_eq!(got.layers.len(), 2);
    assert_eq!(got.layers[0].diff_id, diff(&l1));
    let dir = got.layers[0].dir.as_ref().expect("staged");
    assert!(dir.starts_with(staging.path()));
    assert_eq!(
        std::fs::read(dir.join("etc/os-release")).expect("file"),
        b"ID=test\n"
    );
    assert_eq!(
        got.layers[0].keys,
        [BlobKey(Digest::from_hex(ID1).expect("hex"))]
    );
    assert_eq!(got.layers[0].stats.as_ref().map(|s| s.files), Some(1));
}

#[test]
fn symlinked_duplicate_layer_resolves_to_its_target() {
    let staging = tempfile::tempdir().expect("staging");
    let (archive, l1, _) = legacy_archive(&[], true);
    let got = read(&archive, staging.path()).expect("import");
    assert_eq!(got.images[0].diff_ids.len(), 3);
    assert_eq!(got.layers.len(), 2, "same DiffID staged once");
    assert_eq!(got.layers[0].diff_id, diff(&l1));
    assert_eq!(
        got.layers[0].keys.len(),
        2,
        "both legacy ids index the layer: {:?}",
        got.layers[0].keys
    );
    assert_eq!(std::fs::read_dir(staging.path()).expect("dir").count(), 2);
}

#[test]
fn docker_25_layout_with_manifest_json_and_blobs() {
    let staging = tempfile::tempdir().expect("staging");
    let l1 = layer(&[("a", b"1")]);
    let mut o = Outer::new();
    o.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let l1d = o.blob(&l1);
    let cfg = config(&[diff(&l1)]);
    let cfgd = o.blob(&cfg);
    let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
    let manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", hex(&cfgd)),
        "RepoTags": ["app:1"],
        "Layers": [format!("blobs/sha256/{}", hex(&l1d))],
    }]);
    o.file("index.json", br#"{"schemaVersion":2,"manifests":[]}"#);
    o.file(
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("json"),
    );
    let got = read(&o.finish(), staging.path()).expect("import");
    assert_eq!(got.images[0].id.0.to_string(), cfgd);
    assert_eq!(got.images[0].repo_tags[0].to_string(), "app:1");
    assert_eq!(got.layers[0].keys[0].0.to_string(), l1d);
}

fn oci_archive(compress: fn(&[u8]) -> Vec<u8>, media: &str) -> (Vec<u8>, Vec<u8>) {
    let l1 = layer(&[("x/y", b"payload")]);
    let l2 = layer(&[("x/.wh.y", b"")]);
    let (c1, c2) = (compress(&l1), compress(&l2));
    let mut o = Outer::new();
    o.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let d1 = o.blob(&c1);
    let d2 = o.blob(&c2);
    let cfg = config(&[diff(&l1), diff(&l2)]);
    let cfgd = o.blob(&cfg);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgd, "size": cfg.len()},
        "layers": [
            {"mediaType": media, "digest": d1, "size": c1.len()},
            {"mediaType": media, "digest": d2, "size": c2.len()},
        ],
    }))
    .expect("json");
    let md = o.blob(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md,
            "size": manifest.len(),
            "annotations": {"io.containerd.image.name": "docker.io/library/alpine:3.20", "org.opencontainers.image.ref.name": "3.20"},
        }],
    });
    o.file("index.json", &serde_json::to_vec(&index).expect("json"));
    (o.finish(), l1)
}

#[test]
fn oci_layouts_with_uncompressed_gzip_and_zstd_layers() {
    for (compress, media) in [
        (
            (|d: &[u8]| d.to_vec()) as fn(&[u8]) -> Vec<u8>,
            "application/vnd.oci.image.layer.v1.tar",
        ),
        (gzip, "application/vnd.oci.image.layer.v1.tar+gzip"),
        (zstd, "application/vnd.oci.image.layer.v1.tar+zstd"),
        (gzip, "application/vnd.docker.image.rootfs.diff.tar.gzip"),
    ] {
        let staging = tempfile::tempdir().expect("staging");
        let (archive, l1) = oci_archive(compress, media);
        let got = read(&archive, staging.path()).unwrap_or_else(|e| panic!("{media}: {e}"));
        assert_eq!(got.images.len(), 1);
        assert_eq!(got.images[0].repo_tags[0].to_string(), "alpine:3.20");
        assert_eq!(got.layers[0].diff_id, diff(&l1));
        let stats = got.layers[0].stats.as_ref().expect("stats");
        assert_eq!(stats.diff_id, diff(&l1), "{media}");
        assert_eq!(stats.tar_bytes, l1.len() as u64, "{media}");
        let top = got.layers[1].dir.as_ref().expect("staged");
        let wh = std::fs::symlink_metadata(top.join("x/y")).expect("whiteout");
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &wh.file_type()
        ));
    }
}

#[test]
fn images_sharing_layers_list_each_layer_once() {
    let staging = tempfile::tempdir().expect("staging");
    let base = layer(&[("base", b"b")]);
    let top1 = layer(&[("one", b"1")]);
    let top2 = layer(&[("two", b"2")]);
    let mut o = Outer::new();
    o.file("b/layer.tar", &base)
        .file("t1/layer.tar", &top1)
        .file("t2/layer.tar", &top2);
    let c1 = config(&[diff(&base), diff(&top1)]);
    let c2 = config(&[diff(&base), diff(&top2)]);
    o.file("c1.json", &c1).file("c2.json", &c2);
    let manifest = serde_json::json!([
        {"Config": "c1.json", "RepoTags": ["one:1"], "Layers": ["b/layer.tar", "t1/layer.tar"]},
        {"Config": "c2.json", "RepoTags": ["two:1"], "Layers": ["b/layer.tar", "t2/layer.tar"]},
    ]);
    o.file(
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("json"),
    );
    let got = read(&o.finish(), staging.path()).expect("import");
    assert_eq!(got.images.len(), 2);
    assert_eq!(got.layers.len(), 3);
}

#[test]
fn diff_id_mismatch_names_layer_and_image() {
    let staging = tempfile::tempdir().expect("staging");
    let l1 = layer(&[("a", b"1")]);
    let mut o = Outer::new();
    o.file("l/layer.tar", &l1);
    let wrong = diff(b"something else");
    o.file("c.json", &config(&[wrong]));
    o.file(
        "manifest.json",
        br#"[{"Config":"c.json","RepoTags":["bad:1"],"Layers":["l/layer.tar"]}]"#,
    );
    expect_err(
        read(&o.finish(), staging.path()),
        &[
            "layer 0 of bad:1",
            "DiffID mismatch",
            &wrong.to_string(),
            &diff(&l1).to_string(),
        ],
    );
}

#[test]
fn blob_digest_mismatch_is_refused() {
    let staging = tempfile::tempdir().expect("staging");
    let l1 = layer(&[("a", b"1")]);
    let mut o = Outer::new();
    let name = format!("blobs/sha256/{ID1}");
    o.file(&name, &l1);
    expect_err(
        read(&o.finish(), staging.path()),
        &[&name, "does not match its digest"],
    );
}

#[test]
fn manifest_paths_escaping_the_archive_are_refused() {
    for bad in ["../l/layer.tar", "/etc/passwd", "a/../../x"] {
        let staging = tempfile::tempdir().expect("staging");
        let mut o = Outer::new();
        o.file("l/layer.tar", &layer(&[("a", b"1")]));
        o.file("c.json", &config(&[]));
        let manifest = serde_json::json!([{"Config": "c.json", "Layers": [bad]}]);
        o.file(
            "manifest.json",
            &serde_json::to_vec(&manifest).expect("json"),
        );
        expect_err(read(&o.finish(), staging.path()), &[bad, "escapes"]);
    }
    let staging = tempfile::tempdir().expect("staging");
    let mut o = Outer::new();
    o.symlink("evil/layer.tar", "../../etc/passwd");
    expect_err(read(&o.finish(), staging.path()), &["escapes"]);
}

#[test]
fn missing_layers_and_configs_are_named() {
    let staging = tempfile::tempdir().expect("staging");
    let mut o = Outer::new();
    o.file("c.json", &config(&[diff(b"x")]));
    o.file(
        "manifest.json",
        br#"[{"Config":"c.json","Layers":["gone/layer.tar"]}]"#,
    );
    expect_err(
        read(&o.finish(), staging.path()),
        &["gone/layer.tar", "missing"],
    );
    let mut o = Outer::new();
    o.file("l/layer.tar", &layer(&[("a", b"1")]));
    o.file(
        "manifest.json",
        br#"[{"Config":"nope.json","Layers":["l/layer.tar"]}]"#,
    );
    expect_err(read(&o.finish(), staging.path()), &["nope.json", "missing"]);
}

#[test]
fn truncated_garbage_and_empty_archives() {
    let staging = tempfile::tempdir().expect("staging");
    expect_err(read(b"", staging.path()), &["archive is empty"]);
    expect_err(read(&[0x5a; 4096], staging.path()), &["not a tar archive"]);
    expect_err(read(b"short", staging.path()), &["not a tar archive"]);
    let (archive, _, _) = legacy_archive(&["a:1"], false);
    for cut in [archive.len() / 2, 700, archive.len() - 1024] {
        expect_err(
            read(&archive[..cut], staging.path()),
            &["archive truncated in entry"],
        );
    }
    let mut o = Outer::new();
    o.file("hello.txt", b"hi");
    expect_err(
        read(&o.finish(), staging.path()),
        &["no manifest.json or index.json"],
    );
}

#[test]
fn invalid_tags_are_named() {
    let staging = tempfile::tempdir().expect("staging");
    let (archive, _, _) = legacy_archive(&["Bad Tag!"], false);
    expect_err(read(&archive, staging.path()), &["Bad Tag!"]);
}

#[test]
fn known_layers_are_verified_not_extracted() {
    let staging = tempfile::tempdir().expect("staging");
    let (archive, l1, _) = legacy_archive(&["a:1"], false);
    let key1 = BlobKey(Digest::from_hex(ID1).expect("hex"));
    let got = read_known(&archive, staging.path(), &|k| {
        (*k == key1).then(|| diff(&l1))
    })
    .expect("import");
    assert_eq!(got.layers[0].dir, None);
    assert_eq!(got.layers[0].stats, None);
    assert_eq!(got.layers[0].keys, [key1]);
    assert!(got.layers[1].dir.is_some());
    assert_eq!(
        std::fs::read_dir(staging.path()).expect("dir").count(),
        1,
        "only the unknown layer staged"
    );

    let staging = tempfile::tempdir().expect("staging");
    let liar = diff(b"not this content");
    expect_err(
        read_known(&archive, staging.path(), &|k| (*k == key1).then_some(liar)),
        &[&format!("{ID1}/layer.tar"), "does not match"],
    );
    // OCI: keyed by the compressed blob digest.
    let staging = tempfile::tempdir().expect("staging");
    let (archive, l1) = oci_archive(gzip, "application/vnd.oci.image.layer.v1.tar+gzip");
    let got = read_known(&archive, staging.path(), &|_| None).expect("first import");
    let key = got.layers[0].keys[0];
    let staging = tempfile::tempdir().expect("staging");
    let got = read_known(&archive, staging.path(), &|k| {
        (*k == key).then(|| diff(&l1))
    })
    .expect("re-import");
    assert_eq!(got.layers[0].dir, None);
}

#[test]
fn known_uncompressed_blobs_are_still_checked_against_their_names() {
    let plain = (|d: &[u8]| d.to_vec()) as fn(&[u8]) -> Vec<u8>;
    let (archive, l1) = oci_archive(plain, "application/vnd.oci.image.layer.v1.tar");
    let key = BlobKey(diff(&l1).0);
    let known = |k: &BlobKey| (*k == key).then(|| diff(&l1));
    let staging = tempfile::tempdir().expect("staging");
    let got = read_known(&archive, staging.path(), &known).expect("re-import");
    assert_eq!(got.layers[0].diff_id, diff(&l1));
    assert_eq!(got.layers[0].dir, None, "a known layer is not extracted");

    // The same archive with one byte of the known layer's file changed: the blob no longer
    // matches its name, and its DiffID is not taken on trust.
    let at = archive
        .windows(7)
        .position(|w| w == b"payload")
        .expect("layer payload");
    let mut tampered = archive.clone();
    tampered[at] = b'P';
    let staging = tempfile::tempdir().expect("staging");
    expect_err(
        read_known(&tampered, staging.path(), &known),
        &[&format!("blobs/sha256/{}", key.0.hex())],
    );
    assert_eq!(
        std::fs::read_dir(staging.path()).expect("dir").count(),
        0,
        "nothing staged"
    );
}
