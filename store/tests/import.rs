//! Image import through the store, on real overlay mounts and the real redb file.
//!
//! Guards against: layers stored twice, re-imports that write again, imports that fail
//! halfway and leave records or directories behind, hostile archives that reach outside the
//! store, and stacks that overlayfs could mount but we refuse (or the reverse).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

mod common;

use common::{TestStore, tall_image};
use strata_store::ErrorKind;
use strata_testkit::{
    Compression, ImageBuilder, LayerBuilder, RICH_IMAGE_TAG, SHARED_IMAGE_TAGS, TreeSnapshot,
    rich_image, shared_base_images,
};

#[test]
fn every_archive_layout_gives_the_same_tree() {
    let image = rich_image();
    let t = TestStore::new("overlay2");
    t.import(&image.docker_save_legacy());
    let expected = t.view(RICH_IMAGE_TAG);
    for (name, archive) in [
        ("docker-save-oci", image.docker_save_oci()),
        ("oci-none", image.oci_layout(Compression::None)),
        ("oci-gzip", image.oci_layout(Compression::Gzip)),
        ("oci-zstd", image.oci_layout(Compression::Zstd)),
    ] {
        let other = TestStore::new("overlay2");
        let imported = other.import(&archive);
        assert_eq!(imported[0].id.to_string(), image.config_digest(), "{name}");
        let diff = expected.diff(&other.view(RICH_IMAGE_TAG), &[]);
        assert!(diff.is_empty(), "{name} differs:\n{}", diff.join("\n"));
    }
}

#[test]
fn reimporting_stores_nothing_new() {
    let image = rich_image();
    let t = TestStore::new("overlay2");
    t.import(&image.oci_layout(Compression::Gzip));
    let listing = t.tree_listing();
    for archive in [
        image.oci_layout(Compression::Gzip),
        image.docker_save_legacy(),
    ] {
        let again = t.import(&archive);
        assert_eq!(again[0].new_layers, 0);
        assert_eq!(t.tree_listing(), listing, "a re-import left files behind");
    }
    assert_eq!(t.store().list_layers().unwrap().len(), 3);
}

#[test]
fn images_sharing_base_layers_store_them_once() {
    let (a, b) = shared_base_images();
    let t = TestStore::new("overlay2");
    t.import(&a.docker_save_legacy());
    let second = t.import(&b.oci_layout(Compression::Gzip));
    assert_eq!(
        second[0].new_layers, 1,
        "only the top layer of the second image is new"
    );
    assert_eq!(t.store().list_layers().unwrap().len(), 4);
    let images = t.store().list_images().unwrap();
    assert_eq!(images.len(), 2);
    for img in &images {
        assert!(img.shared_size >= 2 << 20, "{img:?}");
        assert!(
            img.unique_size >= 64 * 1024 && img.unique_size < 1 << 20,
            "{img:?}"
        );
        assert_eq!(img.shared_size + img.unique_size, img.size);
    }
    let df = t.store().disk_usage().unwrap();
    let sum_of_images: u64 = images.iter().map(|i| i.size).sum();
    assert!(
        df.layers_size < sum_of_images,
        "shared layers counted twice in df"
    );
    // Removing one image keeps the shared layers for the other.
    t.store().remove_image(SHARED_IMAGE_TAGS[0], false).unwrap();
    assert_eq!(t.store().list_layers().unwrap().len(), 3);
    let view = t.view(SHARED_IMAGE_TAGS[1]);
    assert!(view.nodes.contains_key("usr/lib/base.bin"));
}

fn assert_no_trace(t: &TestStore, before: &[String]) {
    assert_eq!(
        t.tree_listing(),
        before,
        "the failed import left files behind"
    );
    assert!(t.store().list_images().unwrap().is_empty());
    assert!(t.store().list_layers().unwrap().is_empty());
}

#[test]
fn broken_archives_are_refused_with_one_line_and_leave_no_trace() {
    let t = TestStore::new("overlay2");
    let before = t.tree_listing();
    let good = rich_image().docker_save_legacy();
    let mut garbage = vec![0x5a_u8; 4096];
    garbage[0] = b'G';
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", garbage),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("tar without manifest", {
            let mut l = LayerBuilder::new();
            l.file("hello", b"x", 0o644);
            l.build()
        }),
    ];
    for (name, archive) in cases {
        let err = t.try_import(&archive).unwrap_err();
        let message = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{name}: {message}");
        assert!(!message.contains('\n'), "{name}: not one line: {message}");
        assert_no_trace(&t, &before);
    }
}

/// Rewrites the image config inside a legacy `docker save` archive, keeping its path.
fn with_config(archive: &[u8], config: &[u8]) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    let mut input = tar::Archive::new(archive);
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        let is_config = std::path::Path::new(&path)
            .extension()
            .is_some_and(|e| e == "json")
            && !path.contains('/')
            && path != "manifest.json";
        if is_config {
            data = config.to_vec();
            header.set_size(data.len() as u64);
            header.set_cksum();
        }
        out.append(&header, data.as_slice()).unwrap();
    }
    out.into_inner().unwrap()
}

#[test]
fn a_diff_id_mismatch_refuses_the_import() {
    let t = TestStore::new("overlay2");
    let before = t.tree_listing();
    let image = rich_image();
    let mut claimed = image.diff_ids();
    claimed[1] = claimed[0].clone();
    let archive = with_config(
        &image.docker_save_legacy(),
        &image.config_json_for(&claimed),
    );
    let err = t.try_import(&archive).unwrap_err();
    let text = err.to_string().to_lowercase();
    assert!(text.contains("diffid") || text.contains("diff id"), "{err}");
    assert_no_trace(&t, &before);
}

/// Hostile layers: each must be refused (no trace) or confined inside the layer; the host
/// sentinel next to the store must never change and nothing may appear outside the root.
#[test]
fn hostile_layers_never_touch_the_host() {
    let t = TestStore::new("overlay2");
    let outside = t.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("sentinel"), b"untouched").unwrap();
    let escape = format!(
        "../../../{}",
        outside.file_name().unwrap().to_string_lossy()
    );
    let mut cases: Vec<(&str, LayerBuilder)> = Vec::new();
    let mut dotdot = LayerBuilder::new();
    dotdot.raw_file(format!("{escape}/sentinel").as_bytes(), b"pwned", 0o644);
    cases.push(("dotdot file", dotdot));
    let mut abs = LayerBuilder::new();
    abs.raw_file(
        outside.join("sentinel").to_string_lossy().as_bytes(),
        b"pwned",
        0o644,
    );
    cases.push(("absolute file", abs));
    let mut through_abs = LayerBuilder::new();
    through_abs
        .raw_symlink(b"link", outside.to_string_lossy().as_bytes())
        .raw_file(b"link/sentinel", b"pwned", 0o644);
    cases.push(("file through absolute symlink", through_abs));
    let mut through_rel = LayerBuilder::new();
    through_rel
        .raw_symlink(b"a", b"../../../../../../../..")
        .raw_symlink(b"b", b"a")
        .raw_file(
            format!("b{}", outside.join("sentinel").display()).as_bytes(),
            b"pwned",
            0o644,
        );
    cases.push(("file through chained relative symlinks", through_rel));
    let mut hard = LayerBuilder::new();
    hard.raw_hardlink(
        b"stolen",
        outside.join("sentinel").to_string_lossy().as_bytes(),
    );
    cases.push(("hardlink to a host file", hard));
    let mut hard_rel = LayerBuilder::new();
    hard_rel.raw_hardlink(b"stolen", format!("{escape}/sentinel").as_bytes());
    cases.push(("hardlink with dotdot", hard_rel));
    let mut wh = LayerBuilder::new();
    wh.raw_file(format!("{escape}/.wh.sentinel").as_bytes(), b"", 0o644);
    cases.push(("whiteout outside", wh));
    let mut wh_link = LayerBuilder::new();
    wh_link
        .raw_symlink(b"l", outside.to_string_lossy().as_bytes())
        .raw_file(b"l/.wh.sentinel", b"", 0o644);
    cases.push(("whiteout through symlink", wh_link));

    for (name, layer) in cases {
        let before = t.tree_listing();
        let image = ImageBuilder::new(vec![layer.build()], &["hostile/case:latest"]);
        if let Err(e) = t.try_import(&image.docker_save_legacy()) {
            eprintln!("{name}: refused: {e}");
            assert_eq!(e.kind(), ErrorKind::Invalid, "{name}: {e}");
            assert_eq!(
                t.tree_listing(),
                before,
                "{name}: refused import left a trace"
            );
        } else {
            eprintln!("{name}: confined");
            // Confined: whatever was written is inside the layer.
            let view = t.view("hostile/case:latest");
            assert!(
                !view.nodes.keys().any(|p| p.contains("..")),
                "{name}: {view:?}"
            );
            t.store()
                .remove_image("hostile/case:latest", false)
                .unwrap();
        }
        assert_eq!(
            std::fs::read(outside.join("sentinel")).unwrap(),
            b"untouched",
            "{name}"
        );
        let outside_entries: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            outside_entries.len(),
            1,
            "{name}: created {outside_entries:?}"
        );
        let top: Vec<_> = std::fs::read_dir(t.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut top = top;
        top.sort();
        assert_eq!(top, vec!["outside".to_owned(), "root".to_owned()], "{name}");
    }
}

/// A symlink planted by an earlier layer cannot redirect a later layer's writes: each layer is
/// extracted into its own directory, where the symlink does not exist, and in the merged view
/// the later layer's directory hides the symlink (as with Docker).
#[test]
fn a_symlink_planted_by_an_earlier_layer_is_hidden_not_followed() {
    let t = TestStore::new("overlay2");
    let outside = t.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let mut plant = LayerBuilder::new();
    plant.raw_symlink(b"etc2", outside.to_string_lossy().as_bytes());
    let mut follow = LayerBuilder::new();
    follow
        .raw_dir(b"etc2", 0o755)
        .raw_file(b"etc2/sentinel", b"pwned", 0o644);
    let image = ImageBuilder::new(vec![plant.build(), follow.build()], &["planted:latest"]);
    t.import(&image.docker_save_legacy());
    let view = t.view("planted:latest");
    assert_eq!(view.nodes["etc2"].kind, strata_testkit::NodeKind::Dir);
    assert_eq!(view.nodes["etc2/sentinel"].size, 5);
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote through the planted symlink"
    );
}

#[test]
fn dockers_128_layer_limit_and_overlays_500_layer_limit_mount() {
    let t = TestStore::new("overlay2");
    for n in [128, 500] {
        let tag = format!("tall/{n}:latest");
        t.import(&tall_image(n, &tag).docker_save_oci());
        let view = t.view(&tag);
        assert_eq!(
            view.nodes
                .keys()
                .filter(|p| p.starts_with("layers/"))
                .count(),
            n
        );
        assert_eq!(
            view.nodes["top"].sha256,
            TreeSnapshot::from_tar(tall_image(n, &tag).layers[n - 1].as_slice())
                .unwrap()
                .nodes["top"]
                .sha256
        );
    }
    let err = t
        .try_import(&tall_image(501, "tall/501:latest").docker_save_oci())
        .unwrap_err();
    assert!(err.to_string().contains("501"), "{err}");
}

#[test]
fn start_up_removes_orphans_and_staging_leftovers() {
    let mut t = TestStore::new("overlay2");
    t.import(&rich_image().docker_save_legacy());
    let listing = t.tree_listing();
    let orphan = t.root().join("overlay2").join("ab".repeat(32));
    std::fs::create_dir_all(orphan.join("diff/etc")).unwrap();
    // An import cut off before the `link` file: the short link is all that names the orphan.
    let link = "ORPHANLINK0000000000000000";
    std::os::unix::fs::symlink(
        format!("../{}/diff", "ab".repeat(32)),
        t.root().join("overlay2/l").join(link),
    )
    .unwrap();
    // A commit cut off after the `link` file, before its record: the directory names its link.
    let named = t.root().join("overlay2").join("cd".repeat(32));
    std::fs::create_dir_all(named.join("diff")).unwrap();
    let named_link = "ORPHANLINK1111111111111111";
    std::fs::write(named.join("link"), named_link).unwrap();
    std::os::unix::fs::symlink(
        format!("../{}/diff", "cd".repeat(32)),
        t.root().join("overlay2/l").join(named_link),
    )
    .unwrap();
    std::fs::write(t.root().join("tmp/junk"), b"x").unwrap();
    std::fs::create_dir_all(t.root().join("tmp/import-dead/layer")).unwrap();
    let report = t.reopen();
    let mut removed = report.removed_orphans.clone();
    removed.sort();
    assert_eq!(
        removed,
        vec![
            "ab".repeat(32),
            "cd".repeat(32),
            format!("overlay2/l/{link}"),
            format!("overlay2/l/{named_link}"),
        ]
    );
    assert_eq!(report.removed_tmp.len(), 2);
    assert_eq!(t.tree_listing(), listing);
    // The image still mounts after the restart.
    assert!(t.view(RICH_IMAGE_TAG).nodes.contains_key("etc/passwd"));
}

#[test]
fn a_second_store_on_the_same_root_is_refused() {
    let t = TestStore::new("overlay2");
    let err = strata_store::Store::open(&strata_store::StoreOptions::new(t.root())).unwrap_err();
    assert!(err.to_string().contains("another stratad"), "{err}");
}

#[test]
fn exported_layers_reimport_to_the_same_tree() {
    let t = TestStore::new("overlay2");
    let image = rich_image();
    t.import(&image.docker_save_legacy());
    let mut exported = Vec::new();
    for layer in t.store().inspect_image(RICH_IMAGE_TAG).unwrap().layers {
        let mut tar = Vec::new();
        t.store()
            .export_layer(&layer.chain_id.to_string(), &mut tar)
            .unwrap();
        exported.push(tar);
    }
    let mut copy = ImageBuilder::new(exported, &["copy/rich:latest"]);
    copy.created = image.created.clone();
    let other = TestStore::new("overlay2");
    other.import(&copy.docker_save_legacy());
    let diff = t
        .view(RICH_IMAGE_TAG)
        .diff(&other.view("copy/rich:latest"), &[]);
    assert!(diff.is_empty(), "{}", diff.join("\n"));
}
