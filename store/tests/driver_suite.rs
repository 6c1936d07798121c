//! One conformance suite, run against every driver: overlay2 (real overlay mounts) and vfs
//! (full copies, bind mounts). It guards against a driver that stores layers but shows the
//! wrong merged tree: whiteouts not hiding lower files, opaque directories leaking lower
//! contents, type changes between layers, or metadata (modes, owners, xattrs, hardlinks,
//! devices) lost on the way. The two drivers must also agree with each other exactly.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

mod common;

use common::TestStore;
use strata_testkit::{
    NodeKind, RICH_IMAGE_TAG, RICH_XATTR_PATH, TreeSnapshot, rich_deep_path, rich_image,
    rich_long_name,
};

fn rich_view(driver: &str) -> TreeSnapshot {
    let t = TestStore::new(driver);
    t.import(&rich_image().docker_save_legacy());
    t.view(RICH_IMAGE_TAG)
}

fn driver_suite(driver: &str) {
    let t = TestStore::new(driver);
    let imported = t.import(&rich_image().docker_save_legacy());
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].layers, 3);
    assert_eq!(imported[0].new_layers, 3);

    // Mounts are reference-counted and return the same path.
    let first = t.store().mount_image(RICH_IMAGE_TAG).unwrap();
    let second = t.store().mount_image(RICH_IMAGE_TAG).unwrap();
    assert_eq!(first, second);
    let view = TreeSnapshot::from_dir(&first).unwrap();
    assert_eq!(t.store().unmount_image(RICH_IMAGE_TAG, false).unwrap(), 1);
    assert!(
        first.join("etc/passwd").exists(),
        "still mounted after one of two unmounts"
    );
    assert_eq!(t.store().unmount_image(RICH_IMAGE_TAG, false).unwrap(), 0);
    assert!(
        !first.exists(),
        "view directory removed after the last unmount"
    );

    let n = &view.nodes;
    for gone in [
        "etc/delete-me",
        "usr/share/doomed",
        "usr/share/doomed/a",
        "opt/old/a",
        "opt/old/sub",
        "usr/bin/tool-same-dir",
        "données/removed-later",
    ] {
        assert!(
            !n.contains_key(gone),
            "{driver}: {gone} should be deleted by a whiteout or opaque dir"
        );
    }
    assert!(
        !n.values()
            .any(|node| node.kind == NodeKind::Char && node.rdev == Some((0, 0))),
        "{driver}: a whiteout device is visible"
    );
    assert_eq!(n["opt/old/new"].kind, NodeKind::File);
    assert_eq!(n["opt/dir-becomes-file"].kind, NodeKind::File);
    assert_eq!(n["opt/dir-becomes-file"].mode, 0o600);
    assert_eq!(n["opt/file-becomes-dir"].kind, NodeKind::Dir);
    assert_eq!(n["opt/file-becomes-dir/child"].kind, NodeKind::File);
    assert_eq!(n["etc/becomes-file"].kind, NodeKind::File);
    assert_eq!(n["usr/bin/su"].mode, 0o4755);
    assert_eq!(n["usr/bin/wall"].mode, 0o2755);
    assert_eq!((n["usr/bin/wall"].uid, n["usr/bin/wall"].gid), (0, 5));
    assert_eq!(n["tmp"].mode, 0o1777);
    assert_eq!(n["var/fifo"].kind, NodeKind::Fifo);
    assert_eq!(n["usr/lib/null-device"].rdev, Some((1, 3)));
    assert_eq!(
        n["etc/abs-link"].link_target.as_deref(),
        Some("/usr/bin/tool")
    );
    assert_eq!(n[RICH_XATTR_PATH].xattrs["user.test"], b"hello xattr");
    assert_eq!(
        n["var/h1"].hardlinks,
        vec!["var/h1".to_owned(), "var/h2".to_owned()]
    );
    assert_eq!(
        n["usr/bin/tool"].hardlinks,
        vec![
            "usr/bin/tool".to_owned(),
            "usr/lib/tool-other-dir".to_owned()
        ]
    );
    assert!(n.contains_key(&rich_deep_path()));
    assert!(n.contains_key(&rich_long_name()));
    assert_eq!(n["usr/lib/big.bin"].size, 1 << 20);
    let deep = &n[&rich_deep_path()];
    assert_eq!((deep.uid, deep.gid), (123_456, 654_321));

    // Removing the image removes its layer directories; nothing else remains.
    let before = t.tree_listing();
    assert!(before.len() > 3);
    let removed = t.store().remove_image(RICH_IMAGE_TAG, false).unwrap();
    assert_eq!(removed.deleted_layers.len(), 3);
    let driver_home: Vec<String> = t
        .tree_listing()
        .into_iter()
        .filter(|p| p.starts_with(driver))
        .collect();
    let expected: Vec<String> = match driver {
        "overlay2" => vec![
            "overlay2".into(),
            "overlay2/empty".into(),
            "overlay2/init".into(),
            "overlay2/init/dev".into(),
            "overlay2/init/proc".into(),
            "overlay2/l".into(),
        ],
        _ => vec!["vfs".into()],
    };
    assert_eq!(driver_home, expected);
}

#[test]
fn overlay2_driver_conformance() {
    driver_suite("overlay2");
}

#[test]
fn vfs_driver_conformance() {
    driver_suite("vfs");
}

#[test]
fn overlay2_and_vfs_show_identical_trees() {
    let overlay = rich_view("overlay2");
    let vfs = rich_view("vfs");
    let diff = overlay.diff(&vfs, &[]);
    assert!(diff.is_empty(), "drivers disagree:\n{}", diff.join("\n"));
}
