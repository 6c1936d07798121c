//! A damaged `meta.redb`: truncated, bit-flipped, or holding records that no longer decode.
//!
//! Guards against the worst thing a store can do with a damaged database: open it anyway and
//! carry on with records missing, after which start-up would delete the "orphaned"
//! directories of the lost records. The store must refuse with a message that says what is
//! wrong and where to go, leave the file exactly as it was, and `Store::salvage` must keep
//! whatever can be read and set aside (never delete) what it cannot place.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

mod common;

use std::fmt::Write as _;
use std::path::Path;

use common::TestStore;
use strata_store::mountspec::parse_volume_flag;
use strata_store::{CreateOptions, FsckOptions, Store, StoreOptions};
use strata_testkit::busybox_image;

const IMAGE: &str = "busybox/test:latest";

/// A store with an image, a container with a volume, and some churn so the file has history.
fn populated() -> TestStore {
    let t = TestStore::new("overlay2");
    t.import(&busybox_image(IMAGE).docker_save_legacy());
    for i in 0..20 {
        let c = t
            .store()
            .create_container(&CreateOptions {
                name: Some(format!("c{i}")),
                image: IMAGE.into(),
                mounts: vec![parse_volume_flag(&format!("v{i}:/data")).unwrap()],
                ..CreateOptions::default()
            })
            .unwrap();
        if i % 3 == 0 {
            t.store().remove_container(&c.name, false).unwrap();
        }
    }
    t
}

/// Everything the records say, as text, to tell "intact" from "something went missing".
fn listing(store: &Store) -> String {
    let mut out = String::new();
    for l in store.list_layers().unwrap() {
        writeln!(out, "layer {} {} {}", l.chain_id, l.cache_id, l.images).unwrap();
    }
    for i in store.list_images().unwrap() {
        writeln!(out, "image {} {:?} {}", i.id, i.tags, i.containers).unwrap();
    }
    for c in store.list_containers().unwrap() {
        writeln!(out, "container {} {} {:?}", c.name, c.id, c.mounts).unwrap();
    }
    for v in store.list_volumes(None).unwrap() {
        writeln!(out, "volume {} {}", v.name, v.users).unwrap();
    }
    out
}

fn open(root: &Path) -> Result<Store, strata_store::Error> {
    Store::open(&StoreOptions::new(root)).map(|(s, _)| s)
}

fn assert_refusal(e: &strata_store::Error, what: &str) {
    let message = e.to_string();
    assert!(
        message.contains("is corrupt") || message.contains("do not decode"),
        "{what}: {message}"
    );
    assert!(message.contains("docs/recovery.md"), "{what}: {message}");
    assert!(!message.contains('\n'), "{what}: one line: {message}");
}

#[test]
fn a_truncated_database_is_refused_and_left_as_it_was() {
    let mut t = populated();
    t.store = None;
    let db = t.root().join("meta.redb");
    let original = std::fs::read(&db).unwrap();
    let len = original.len();
    for cut in [0, 100, 4096, len / 2, len - 1] {
        std::fs::write(&db, &original[..cut]).unwrap();
        let e = open(&t.root())
            .err()
            .unwrap_or_else(|| panic!("opened a file cut to {cut}"));
        assert_refusal(&e, &format!("cut to {cut}"));
        assert!(
            std::fs::read(&db).unwrap() == original[..cut],
            "cut to {cut}: file changed"
        );
    }
    std::fs::write(&db, &original).unwrap();
    t.reopen();
    assert_eq!(t.store().list_containers().unwrap().len(), 13);
}

/// Flips one bit at 200 places spread over the file. Each open must either refuse or see the
/// records exactly as they were (a flip in free space is harmless); never open with less.
#[test]
fn a_flipped_bit_is_refused_or_harmless_never_a_silent_loss() {
    let mut t = populated();
    let expected = listing(t.store());
    t.store = None;
    let db = t.root().join("meta.redb");
    let original = std::fs::read(&db).unwrap();
    let (mut refused, mut harmless) = (0, 0);
    for k in 0..200u64 {
        let offset = usize::try_from(k * 2_654_435_761 % original.len() as u64).unwrap();
        let mut damaged = original.clone();
        damaged[offset] ^= 1 << (k % 8);
        std::fs::write(&db, &damaged).unwrap();
        match open(&t.root()) {
            Ok(store) => {
                assert_eq!(
                    listing(&store),
                    expected,
                    "bit {k} at {offset}: opened with other records"
                );
                harmless += 1;
            }
            Err(e) => {
                assert_refusal(&e, &format!("bit {k} at {offset}"));
                assert!(
                    std::fs::read(&db).unwrap() == damaged,
                    "bit {k} at {offset}: file changed"
                );
                refused += 1;
            }
        }
    }
    eprintln!("200 flipped bits: {refused} refused, {harmless} harmless (free space)");
    assert!(refused > 0, "no flip was caught at all");
    // A flip inside a live record must always be caught: find one in the file and flip it.
    let needle = b"schema_version";
    let at = original
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the meta table's key is in the file");
    for bit in 0..8 {
        let mut damaged = original.clone();
        damaged[at + 3] ^= 1 << bit;
        std::fs::write(&db, &damaged).unwrap();
        let e = open(&t.root())
            .err()
            .unwrap_or_else(|| panic!("opened with a flipped bit in a live key (bit {bit})"));
        assert_refusal(&e, &format!("live key, bit {bit}"));
    }
    std::fs::write(&db, &original).unwrap();
    t.reopen();
    assert_eq!(listing(t.store()), expected);
}

/// Overwrites the value of one container record with bytes that are not a record.
fn garbage_container_record(t: &mut TestStore, name: &str) -> strata_store::ids::CacheId {
    let id = t.store().inspect_container(name).unwrap().id;
    t.store = None;
    let db = redb::Database::open(t.root().join("meta.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    let table: redb::TableDefinition<&[u8; 32], &[u8]> = redb::TableDefinition::new("containers");
    txn.open_table(table)
        .unwrap()
        .insert(id.as_bytes(), [1u8, 0xff, 0xff, 0xff].as_slice())
        .unwrap();
    txn.commit().unwrap();
    id
}

#[test]
fn an_undecodable_record_is_refused_by_name() {
    let mut t = populated();
    let id = garbage_container_record(&mut t, "c5");
    let e = open(&t.root()).err().unwrap();
    assert_refusal(&e, "garbage record");
    assert!(
        e.to_string().contains(&format!("containers record {id}")),
        "{e}"
    );
}

#[test]
fn salvage_keeps_what_reads_sets_aside_what_it_cannot_place_and_deletes_nothing() {
    let mut t = populated();
    let expected = listing(t.store());
    let lost = garbage_container_record(&mut t, "c5");
    let upper = t.root().join("overlay2").join(lost.hex());
    std::fs::write(upper.join("diff/precious"), b"user data").unwrap();

    let report = Store::salvage(&StoreOptions::new(t.root())).unwrap();
    assert_eq!(
        (
            report.layers,
            report.images,
            report.containers,
            report.volumes
        ),
        (2, 1, 12, 20)
    );
    assert_eq!(report.lost.len(), 1, "{:?}", report.lost);
    assert!(report.lost[0].contains(&lost.hex()), "{:?}", report.lost);
    assert!(report.damaged_copy.exists());
    assert_eq!(report.set_aside.len(), 1, "{:?}", report.set_aside);
    assert_eq!(
        std::fs::read(report.set_aside[0].join("diff/precious")).unwrap(),
        b"user data"
    );
    // The lost container's image and volume counts were recomputed by the repair.
    assert!(
        report.fsck.findings.iter().all(|f| f.repaired),
        "{:#?}",
        report.fsck.findings
    );

    t.reopen();
    let after = listing(t.store());
    // Image and volume counts changed with the lost container: compare the rest.
    let comparable = |l: &&str| !l.starts_with("image ") && !l.starts_with("volume v5 ");
    let without_c5: Vec<&str> = expected
        .lines()
        .filter(comparable)
        .filter(|l| !l.starts_with("container c5 "))
        .collect();
    let after_filtered: Vec<&str> = after.lines().filter(comparable).collect();
    assert_eq!(after_filtered, without_c5);
    assert!(after.contains("volume v5 0"), "{after}");
    let report = t
        .store()
        .fsck(FsckOptions {
            repair: false,
            verify: false,
        })
        .unwrap();
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    let merged = t.store().mount_container("c7").unwrap();
    assert!(merged.join("bin/busybox").exists());
}

#[test]
fn salvage_of_an_unreadable_file_sets_everything_aside() {
    let mut t = populated();
    let containers = t.store().list_containers().unwrap().len();
    t.store = None;
    let db = t.root().join("meta.redb");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let report = Store::salvage(&StoreOptions::new(t.root())).unwrap();
    assert_eq!((report.layers, report.containers), (0, 0));
    assert!(
        report.lost[0].contains("cannot be opened"),
        "{:?}",
        report.lost
    );
    assert_eq!(
        report.set_aside.len(),
        2 + containers,
        "every layer and container dir"
    );
    // Volume data is never set aside: every volume directory is recorded again.
    assert_eq!(
        report.adopted_volumes.len(),
        20,
        "{:?}",
        report.adopted_volumes
    );
    assert_eq!(report.volumes, 20);
    t.reopen();
    assert!(t.store().list_images().unwrap().is_empty());
    assert_eq!(t.store().list_volumes(None).unwrap().len(), 20);
    assert!(t.root().join("volumes/v1/_data").exists());
}

#[test]
fn salvage_refuses_while_the_store_is_open() {
    let t = populated();
    let e = Store::salvage(&StoreOptions::new(t.root())).unwrap_err();
    assert!(e.to_string().contains("another stratad"), "{e}");
}
