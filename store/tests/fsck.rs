//! `fsck` against a real store on real overlay mounts: each invariant broken on purpose, the
//! exact finding expected, `--repair` doing only what is safe, and a clean check afterwards.
//!
//! Guards against: an fsck that misses damage (so the crash and disk-full tests that rely on
//! "fsck is clean" would prove nothing), one that reports a healthy store as damaged, and a
//! repair that deletes what could be user data or "fixes" what it cannot know.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

mod common;

use std::path::PathBuf;

use common::{TestStore, overlay_in_use_warnings};
use strata_store::meta::{MetaDb, Reads};
use strata_store::mountspec::parse_volume_flag;
use strata_store::{Check, CreateOptions, FsckOptions, FsckReport};
use strata_testkit::busybox_image;

const IMAGE: &str = "busybox/test:latest";

fn store() -> TestStore {
    let t = TestStore::new("overlay2");
    t.import(&busybox_image(IMAGE).docker_save_legacy());
    t.store()
        .create_container(&CreateOptions {
            name: Some("web".into()),
            image: IMAGE.into(),
            mounts: vec![parse_volume_flag("data:/data").unwrap()],
            ..CreateOptions::default()
        })
        .unwrap();
    t
}

fn check(t: &TestStore) -> FsckReport {
    t.store()
        .fsck(FsckOptions {
            repair: false,
            verify: false,
        })
        .unwrap()
}

fn repair(t: &TestStore) -> FsckReport {
    t.store()
        .fsck(FsckOptions {
            repair: true,
            verify: false,
        })
        .unwrap()
}

/// The findings as `(check, object)`, sorted, for exact comparison.
fn found(report: &FsckReport) -> Vec<(Check, String)> {
    let mut out: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.check, f.object.clone()))
        .collect();
    out.sort();
    out
}

fn assert_clean(t: &TestStore, when: &str) {
    let report = check(t);
    assert!(report.findings.is_empty(), "{when}: {:#?}", report.findings);
}

/// Edits the database with the store closed, then opens the store again (without the
/// start-up reconcile getting a say: it does not touch what these edits break).
fn edit_db(t: &mut TestStore, edit: impl FnOnce(&strata_store::meta::WriteTxn)) {
    t.store = None;
    {
        let db = MetaDb::open(&t.root().join("meta.redb")).unwrap();
        let txn = db.write().unwrap();
        edit(&txn);
        txn.commit().unwrap();
    }
    t.reopen();
}

fn layer_dir(t: &TestStore) -> (PathBuf, String) {
    let layer = &t.store().list_layers().unwrap()[0];
    let dir = t.root().join("overlay2").join(&layer.cache_id);
    let short = std::fs::read_to_string(dir.join("link")).unwrap();
    (dir, short)
}

#[test]
fn a_healthy_store_is_clean_mounted_or_not() {
    let t = store();
    let report = check(&t);
    assert_eq!(
        (
            report.layers,
            report.images,
            report.containers,
            report.volumes
        ),
        (2, 1, 1, 1)
    );
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    t.store().mount_container("web").unwrap();
    t.store().mount_image(IMAGE).unwrap();
    assert_clean(&t, "with a container and a view mounted");
}

#[test]
fn broken_links_and_orphans_are_found_and_repaired_but_volume_data_is_left_alone() {
    let t = store();
    let (dir, short) = layer_dir(&t);
    std::fs::remove_file(t.root().join("overlay2/l").join(&short)).unwrap();
    std::fs::write(dir.join("link"), "WRONG").unwrap();
    let orphan = "ab".repeat(32);
    std::fs::create_dir_all(t.root().join("overlay2").join(&orphan).join("diff")).unwrap();
    // The orphan names its link, as a commit cut off before its record leaves it: repairing the
    // directory must not take the link from under the link's own repair.
    std::fs::write(
        t.root().join("overlay2").join(&orphan).join("link"),
        "ORPHANLINK",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        format!("../{orphan}/diff"),
        t.root().join("overlay2/l/ORPHANLINK"),
    )
    .unwrap();
    std::fs::create_dir_all(t.root().join("volumes/stray/_data")).unwrap();
    std::fs::write(t.root().join("volumes/stray/_data/precious"), b"x").unwrap();
    std::fs::create_dir_all(t.root().join("volumes/unfinished/_data")).unwrap();

    let layer = t.store().list_layers().unwrap()[0].chain_id;
    let report = check(&t);
    assert_eq!(
        found(&report),
        vec![
            (Check::LayerLink, format!("layer {layer}")),
            (Check::LayerLink, format!("layer {layer}")),
            (Check::Orphan, format!("overlay2/{orphan}")),
            (Check::Orphan, "overlay2/l/ORPHANLINK".into()),
            (Check::Orphan, "volumes/stray".into()),
            (Check::Orphan, "volumes/unfinished".into()),
        ]
    );
    assert_eq!(report.outstanding(), 6, "nothing repaired without --repair");
    assert!(t.root().join("overlay2").join(&orphan).exists());

    let repaired = repair(&t);
    assert_eq!(repaired.outstanding(), 1, "{:#?}", repaired.findings);
    let left = repaired.findings.iter().find(|f| !f.repaired).unwrap();
    assert_eq!(left.object, "volumes/stray");
    assert!(left.repair.is_none(), "volume data is never deleted");
    assert!(t.root().join("volumes/stray/_data/precious").exists());
    assert!(!t.root().join("overlay2").join(&orphan).exists());
    assert!(!t.root().join("overlay2/l/ORPHANLINK").exists());
    assert!(
        !t.root().join("volumes/unfinished").exists(),
        "an empty one is removed"
    );
    std::fs::remove_dir_all(t.root().join("volumes/stray")).unwrap();
    assert_clean(&t, "after repair");
    // The repaired link serves a mount again.
    let merged = t.store().mount_container("web").unwrap();
    assert!(merged.join("bin/busybox").exists());
}

#[test]
fn missing_directories_are_recreated_and_missing_layer_files_only_reported() {
    let t = store();
    let web = t.store().inspect_container("web").unwrap();
    std::fs::remove_dir_all(t.root().join("overlay2").join(web.id.to_string())).unwrap();
    std::fs::remove_dir_all(t.root().join("volumes/data/_data")).unwrap();
    let report = repair(&t);
    assert_eq!(
        found(&report),
        vec![
            (Check::ContainerDirs, "container web".into()),
            (Check::VolumeDir, "volume data".into()),
        ]
    );
    assert_eq!(report.outstanding(), 0);
    assert_clean(&t, "after re-creating");

    let (dir, _) = layer_dir(&t);
    std::fs::remove_dir_all(dir.join("diff")).unwrap();
    let report = repair(&t);
    let layer = t.store().list_layers().unwrap()[0].chain_id;
    assert_eq!(
        found(&report),
        vec![(Check::LayerFiles, format!("layer {layer}"))]
    );
    assert_eq!(
        report.outstanding(),
        1,
        "lost layer files cannot be repaired"
    );
    assert!(report.findings[0].problem.contains("import them again"));
}

#[test]
fn reference_counts_and_indexes_are_recomputed_from_the_records() {
    let mut t = store();
    let image = t.store().resolve_image(IMAGE).unwrap();
    let tag = image.tags[0].clone();
    let web = t.store().inspect_container("web").unwrap();
    edit_db(&mut t, |txn| {
        let mut layer = txn.layer(&image.chain[0]).unwrap().unwrap();
        layer.image_users = 7;
        txn.put_layer(&layer).unwrap();
        let mut img = txn.image(&image.id).unwrap().unwrap();
        img.container_users = 0;
        txn.put_image(&img).unwrap();
        let mut vol = txn.volume("data").unwrap().unwrap();
        vol.users = 3;
        txn.put_volume(&vol).unwrap();
        txn.delete_tag(&tag).unwrap();
        txn.put_tag(&"ghost:tag".parse().unwrap(), &image.id)
            .unwrap();
        txn.delete_container_name("web").unwrap();
        txn.put_blob_key(
            &strata_store::ids::Digest::of(b"some blob"),
            &strata_store::ids::DiffId(strata_store::ids::Digest::of(b"no such layer")),
        )
        .unwrap();
    });
    let report = check(&t);
    let checks: Vec<Check> = found(&report).into_iter().map(|(c, _)| c).collect();
    assert_eq!(
        checks,
        vec![
            Check::RefCount,
            Check::RefCount,
            Check::RefCount,
            Check::Tags,
            Check::Tags,
            Check::Names,
            Check::BlobKey,
        ],
        "{:#?}",
        report.findings
    );
    assert!(
        report.findings.iter().all(|f| f.repair.is_some()),
        "all of these are safe to repair"
    );
    assert_eq!(repair(&t).outstanding(), 0);
    assert_clean(&t, "after repair");
    assert_eq!(t.store().inspect_container("web").unwrap().id, web.id);
    assert_eq!(t.store().resolve_image(IMAGE).unwrap().id, image.id);
    assert!(t.store().resolve_image("ghost:tag").is_err());
}

#[test]
fn broken_chains_are_reported_not_guessed_at() {
    let mut t = store();
    let image = t.store().resolve_image(IMAGE).unwrap();
    let gone = strata_store::ids::ChainId(strata_store::ids::Digest::of(b"gone"));
    edit_db(&mut t, |txn| {
        let mut layer = txn.layer(&image.chain[0]).unwrap().unwrap();
        layer.parent = Some(gone);
        txn.put_layer(&layer).unwrap();
    });
    let report = repair(&t);
    let name = format!("layer {}", image.chain[0]);
    assert_eq!(
        found(&report),
        vec![(Check::Chain, name.clone()), (Check::Chain, name)],
        "{:#?}",
        report.findings
    );
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.repair.is_none() && !f.repaired)
    );
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.problem.contains(&gone.to_string()))
    );
}

#[test]
fn mount_counts_are_checked_against_the_kernel() {
    let t = store();
    let warnings_before = overlay_in_use_warnings();
    let merged = t.store().mount_container("web").unwrap();
    // Unmounted behind the store's back: the count says mounted, the kernel does not.
    nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).unwrap();
    // And something mounted under the root that nothing explains.
    let stray = t.root().join("tmp/stray-mount");
    std::fs::create_dir_all(&stray).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &stray,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let report = repair(&t);
    assert_eq!(
        found(&report),
        vec![
            (Check::MountState, stray.display().to_string()),
            (Check::MountState, "container web".into()),
        ]
    );
    assert_eq!(report.outstanding(), 0);
    assert!(!t.store().inspect_container("web").unwrap().mounted);
    assert!(
        !strata_store::mounts::mounts_under(&t.root())
            .unwrap()
            .contains(&stray)
    );
    assert_clean(&t, "after repair");
    // The detached overlay is gone for good: mounting again stacks no second overlay on the
    // container's upper dir (the kernel would say so in its log).
    t.store().mount_container("web").unwrap();
    t.store().unmount_container("web", false).unwrap();
    assert_eq!(overlay_in_use_warnings(), warnings_before);
}

/// `--verify` puts every layer's tar together again from its tape and files: a healthy store
/// verifies, `layer export` is byte for byte the imported tar, and one changed byte in a
/// layer's files is a finding no repair can fix.
#[test]
fn verify_recomputes_diff_ids_and_catches_one_changed_byte() {
    let t = store();
    let verify = |t: &TestStore| {
        t.store()
            .fsck(FsckOptions {
                repair: true,
                verify: true,
            })
            .unwrap()
    };
    let report = verify(&t);
    assert_eq!(report.verified_layers, 2);
    assert!(
        report.unverifiable_layers.is_empty(),
        "{:?}",
        report.unverifiable_layers
    );
    assert!(report.findings.is_empty(), "{:#?}", report.findings);

    let layers = t.store().list_layers().unwrap();
    let built = busybox_image(IMAGE);
    let originals: std::collections::HashMap<String, &Vec<u8>> =
        built.diff_ids().into_iter().zip(&built.layers).collect();
    for layer in &layers {
        let original = originals[&layer.diff_id.to_string()];
        let mut exported = Vec::new();
        t.store()
            .export_layer(&layer.chain_id.to_string(), &mut exported)
            .unwrap();
        assert!(
            exported == *original,
            "export of {} is not the imported tar",
            layer.chain_id
        );
    }

    let top = layers
        .iter()
        .find(|l| l.diff_path.join("etc/motd").exists())
        .unwrap();
    let motd = top.diff_path.join("etc/motd");
    let mut bytes = std::fs::read(&motd).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&motd, bytes).unwrap();
    let report = verify(&t);
    assert_eq!(
        found(&report),
        vec![(Check::DiffId, format!("layer {}", top.chain_id))]
    );
    assert_eq!(report.outstanding(), 1);
    let e = t
        .store()
        .export_layer(&top.chain_id.to_string(), std::io::sink())
        .unwrap_err();
    assert!(e.to_string().contains("changed since the import"), "{e}");
}
