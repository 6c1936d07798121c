//! The fixtures against the reference implementation: dockerd 20.10 must load what
//! `ImageBuilder` writes, and `TreeSnapshot` must describe Docker's view of the image the same
//! way whether it is read from `docker export` or from Docker's own overlay mount. If these
//! fail, a parity failure against Strata would say nothing about Strata.
//!
//! Needs root and dockerd (`cargo xtask test` installs it); panics with a clear message if
//! either is missing.

use std::io::Read;
use std::path::Path;

use strata_testkit::{
    DOCKER_IGNORE, Dockerd, RICH_IMAGE_TAG, RICH_XATTR_PATH, TreeSnapshot, require_root,
    rich_image, sha256_digest,
};

fn tar_members(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let file = std::fs::File::open(path).expect("open archive");
    let mut out = std::collections::BTreeMap::new();
    for entry in tar::Archive::new(file).entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read");
        out.insert(name, data);
    }
    out
}

#[test]
fn dockerd_loads_rich_image_and_export_matches_its_overlay_view() {
    require_root("dockerd_loads_rich_image_and_export_matches_its_overlay_view");
    let image = rich_image();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ours = tmp.path().join("ours.tar");
    std::fs::write(&ours, image.docker_save_legacy()).expect("write");

    let docker = Dockerd::start();
    let loaded = docker.load(&ours);
    assert!(loaded.contains(RICH_IMAGE_TAG), "{loaded}");
    assert_eq!(
        docker.inspect_image(RICH_IMAGE_TAG, "{{.Id}}"),
        image.config_digest(),
        "docker must keep our config byte for byte"
    );

    // Docker regenerates layer tars from its diff dirs with tar-split: they must be ours.
    let saved = tmp.path().join("saved.tar");
    docker.save(RICH_IMAGE_TAG, &saved);
    let members = tar_members(&saved);
    let manifest: serde_json::Value =
        serde_json::from_slice(&members["manifest.json"]).expect("manifest.json");
    let layers = manifest[0]["Layers"].as_array().expect("Layers");
    assert_eq!(layers.len(), image.layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let data = &members[layer.as_str().expect("str")];
        assert_eq!(sha256_digest(data), image.diff_ids()[i], "layer {i}");
    }

    let container = docker.create(RICH_IMAGE_TAG);
    let exported = TreeSnapshot::from_tar(docker.export(&container).as_slice()).expect("export");
    docker.rm(&container);

    let mounted = docker
        .image_view(RICH_IMAGE_TAG)
        .expect("snapshot of docker's overlay view");

    assert_eq!(
        mounted.nodes[RICH_XATTR_PATH]
            .xattrs
            .get("user.test")
            .map(Vec::as_slice),
        Some(&b"hello xattr"[..]),
        "dockerd applies PAX xattrs on load"
    );
    // `docker export` writes only security.capability (moby pkg/archive), so xattrs are
    // compared from the mounted view only.
    let mut without_xattrs = mounted.clone();
    without_xattrs.clear_xattrs();
    let diff = exported.diff(&without_xattrs, DOCKER_IGNORE);
    assert!(
        diff.is_empty(),
        "docker export vs docker's overlay view:\n{}",
        diff.join("\n")
    );
    assert!(exported.nodes.contains_key("usr/lib/big.bin"));
    assert!(!exported.nodes.contains_key("etc/delete-me"));
    assert!(!exported.nodes.contains_key("opt/old/a"));
}

#[test]
fn dockerd_20_10_loads_the_docker_25_style_archive() {
    require_root("dockerd_20_10_loads_the_docker_25_style_archive");
    let image = rich_image();
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("oci-save.tar");
    std::fs::write(&path, image.docker_save_oci()).expect("write");
    let docker = Dockerd::start();
    docker.load(&path);
    assert_eq!(
        docker.inspect_image(RICH_IMAGE_TAG, "{{.Id}}"),
        image.config_digest()
    );
}
