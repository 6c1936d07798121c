//! Parity with Docker: an image imported into Strata and mounted must show exactly the tree
//! Docker shows for the same image.
//!
//! The bugs this guards against are the quiet ones of layer application: a whiteout that
//! misses, an opaque directory that leaks lower entries, a hard link that becomes a copy, a
//! setuid bit or an owner dropped on the way, an mtime restored before a child was created,
//! an xattr lost. Docker 20.10 is the reference: the expected tree is `docker export` of a
//! container of the image (Docker's own files and mounts ignored), with xattrs taken from
//! Docker's overlay view of the image, since `docker export` writes only
//! `security.capability`. The archive Strata imports in test A is the one `docker save`
//! writes, not ours.
//!
//! Needs root and dockerd (`cargo xtask test` installs docker.io); panics if either is
//! missing rather than passing without testing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use strata_testkit::{
    Compression, DOCKER_IGNORE, Dockerd, RICH_IMAGE_TAG, SHARED_IMAGE_TAGS, Stratad, TreeSnapshot,
    require_root, rich_image, shared_base_images,
};

const STRATAD: &str = env!("CARGO_BIN_EXE_stratad");
const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// What Docker makes of [`rich_image`].
struct DockerReference {
    /// `docker save` of the loaded image: Docker's own archive.
    saved_archive: PathBuf,
    /// The tree Strata's mount must show.
    expected: TreeSnapshot,
    _tmp: tempfile::TempDir,
}

fn docker_reference() -> DockerReference {
    let image = rich_image();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ours = tmp.path().join("rich-legacy.tar");
    std::fs::write(&ours, image.docker_save_legacy()).expect("writing the image archive");

    let docker = Dockerd::start();
    docker.load(&ours);
    let saved_archive = tmp.path().join("rich-docker-saved.tar");
    docker.save(RICH_IMAGE_TAG, &saved_archive);

    let container = docker.create(RICH_IMAGE_TAG);
    let mut expected = TreeSnapshot::from_tar(docker.export(&container).as_slice())
        .expect("reading docker export");
    docker.rm(&container);

    let view = docker
        .image_view(RICH_IMAGE_TAG)
        .expect("snapshot of docker's overlay view of the image");
    for (path, node) in &mut expected.nodes {
        if let Some(seen) = view.nodes.get(path) {
            node.xattrs.clone_from(&seen.xattrs);
        }
    }
    assert!(
        expected.nodes.values().any(|n| !n.xattrs.is_empty()),
        "the reference must carry rich_image's user.test xattr"
    );
    DockerReference {
        saved_archive,
        expected,
        _tmp: tmp,
    }
}

/// Imports `archive`, mounts `reference`, snapshots the mount and compares it with `expected`.
fn assert_strata_matches(
    strata: &Stratad,
    archive: &Path,
    reference: &str,
    expected: &TreeSnapshot,
) {
    let imported = strata.strata_ok(
        STRATA,
        &[
            OsStr::new("image"),
            OsStr::new("import"),
            archive.as_os_str(),
        ],
    );
    eprintln!("strata image import: {imported}");
    let mount = strata.strata_ok(STRATA, &["image", "mount", reference]);
    let mount = mount.trim();
    assert!(
        Path::new(mount).is_absolute() && !mount.contains('\n'),
        "`strata image mount` must print one absolute path, printed {mount:?}"
    );
    let actual = TreeSnapshot::from_dir(mount).expect("snapshot of strata's mount");
    let diff = expected.diff(&actual, DOCKER_IGNORE);
    assert!(
        diff.is_empty(),
        "{} differences between docker (expected) and strata's mount of {reference} (actual):\n{}",
        diff.len(),
        diff.join("\n")
    );
    strata.strata_ok(STRATA, &["image", "unmount", reference]);
}

#[test]
fn import_of_docker_saved_archive_mounts_the_tree_docker_exports() {
    require_root("docker parity test A");
    let reference = docker_reference();
    let strata = Stratad::start(STRATAD);
    assert_strata_matches(
        &strata,
        &reference.saved_archive,
        RICH_IMAGE_TAG,
        &reference.expected,
    );

    // Matched by repository name: the JSON shape of ids and tags is not a contract yet.
    let repository = RICH_IMAGE_TAG.trim_end_matches(":latest");
    let listed = strata.strata_ok(STRATA, &["--json", "image", "ls"]);
    assert!(
        listed.contains(repository),
        "`strata --json image ls` does not list {repository} after import:\n{listed}"
    );
    strata.strata_ok(STRATA, &["image", "rm", RICH_IMAGE_TAG]);
    let listed = strata.strata_ok(STRATA, &["--json", "image", "ls"]);
    assert!(
        !listed.contains(repository),
        "{repository} still listed after `strata image rm`:\n{listed}"
    );
}

#[test]
fn import_of_gzip_oci_layout_mounts_the_tree_docker_exports() {
    require_root("docker parity test B");
    let reference = docker_reference();
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("rich-oci-gzip.tar");
    std::fs::write(&archive, rich_image().oci_layout(Compression::Gzip))
        .expect("writing the OCI layout");
    let strata = Stratad::start(STRATAD);
    assert_strata_matches(&strata, &archive, RICH_IMAGE_TAG, &reference.expected);
}

#[test]
fn images_sharing_base_layers_report_shared_bytes() {
    require_root("docker parity test C");
    let (a, b) = shared_base_images();
    let tmp = tempfile::tempdir().expect("tempdir");
    let strata = Stratad::start(STRATAD);
    for (i, image) in [a, b].iter().enumerate() {
        let path = tmp.path().join(format!("shared-{i}.tar"));
        std::fs::write(&path, image.docker_save_legacy()).expect("writing the image archive");
        strata.strata_ok(
            STRATA,
            &[OsStr::new("image"), OsStr::new("import"), path.as_os_str()],
        );
    }
    let out = strata.strata_ok(STRATA, &["--json", "system", "df", "-v"]);
    let df: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`strata --json system df -v` is not JSON ({e}):\n{out}"));
    // Shape as of this writing: {"image_details": [{"tags": [...], "shared_size": N, ...}]}.
    let details = df["image_details"]
        .as_array()
        .unwrap_or_else(|| panic!("no image_details array in `system df -v`:\n{out}"));
    for tag in SHARED_IMAGE_TAGS {
        let repo = tag.trim_end_matches(":latest");
        let image = details
            .iter()
            .find(|d| d["tags"].to_string().contains(repo))
            .unwrap_or_else(|| panic!("{tag} missing from `system df -v`:\n{out}"));
        let shared = image["shared_size"].as_u64().unwrap_or(0);
        // The two shared layers hold 2 MiB of file data.
        assert!(
            shared >= 2 << 20,
            "{tag}: shared_size {shared}, expected at least 2 MiB:\n{out}"
        );
    }
}
