//! Golden bytes pin the on-disk encoding of every record: if one of these fails, a field was
//! added, removed, reordered or retyped, and databases written by earlier builds would no longer
//! decode. Bump `SCHEMA_VERSION`, write a migration, then update the bytes.

use std::collections::BTreeMap;

use super::*;
use crate::ids::CacheId;

fn d(byte: u8) -> Digest {
    Digest::from_bytes([byte; 32])
}

fn hexs(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn layer() -> LayerRecord {
    LayerRecord {
        chain_id: ChainId(d(1)),
        diff_id: DiffId(d(2)),
        parent: Some(ChainId(d(3))),
        cache_id: "ab".repeat(32).parse::<CacheId>().unwrap(),
        short_link: "ABCDEFGHIJKLMNOPQRSTUVWXYZ".into(),
        size: 300,
        tar_bytes: 10240,
        files: 7,
        image_users: 2,
        created: 1_700_000_000,
    }
}

fn image() -> ImageRecord {
    ImageRecord {
        id: ImageId(d(4)),
        config: ImageConfigRecord {
            os: Some("linux".into()),
            architecture: Some("amd64".into()),
            created: None,
            author: None,
            env: vec!["A=1".into()],
            entrypoint: None,
            cmd: Some(vec!["sh".into()]),
            working_dir: Some("/".into()),
            user: None,
            labels: BTreeMap::from([("k".into(), "v".into())]),
        },
        config_json: b"{}".to_vec(),
        diff_ids: vec![DiffId(d(2))],
        chain: vec![ChainId(d(2))],
        tags: vec!["a:b".parse().unwrap()],
        size: 300,
        imported: 1_700_000_001,
        view_mounts: 0,
        container_users: 1,
    }
}

#[test]
fn layer_record_encoding_is_stable() {
    let bytes = codec::encode(&layer());
    let golden = format!(
        "01{}{}01{}{}1a{}{}",
        "01".repeat(32),
        "02".repeat(32),
        "03".repeat(32),
        "ab".repeat(32),
        hexs(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
        "fb2c01fb00280702fc00f15365"
    );
    assert_eq!(hexs(&bytes), golden);
    assert_eq!(codec::decode::<LayerRecord>(&bytes).unwrap(), layer());
}

#[test]
fn image_record_encoding_is_stable() {
    let bytes = codec::encode(&image());
    let golden = [
        "01".to_owned(),                  // format byte
        "04".repeat(32),                  // id
        "01056c696e7578".to_owned(),      // os: Some("linux")
        "0105616d643634".to_owned(),      // architecture: Some("amd64")
        "0000".to_owned(),                // created, author: None
        "0103413d31".to_owned(),          // env: ["A=1"]
        "00".to_owned(),                  // entrypoint: None
        "0101027368".to_owned(),          // cmd: Some(["sh"])
        "01012f".to_owned(),              // working_dir: Some("/")
        "00".to_owned(),                  // user: None
        "01016b0176".to_owned(),          // labels: {k: v}
        "027b7d".to_owned(),              // config_json: b"{}"
        format!("01{}", "02".repeat(32)), // diff_ids
        format!("01{}", "02".repeat(32)), // chain
        "01016101".to_owned() + "62",     // tags: [a:b]
        "fb2c01".to_owned(),              // size 300
        "fc01f15365".to_owned(),          // imported
        "0001".to_owned(),                // view_mounts, container_users
    ]
    .concat();
    assert_eq!(hexs(&bytes), golden, "image record encoding changed");
    assert_eq!(codec::decode::<ImageRecord>(&bytes).unwrap(), image());
}

fn container() -> ContainerRecord {
    ContainerRecord {
        id: "cd".repeat(32).parse().unwrap(),
        name: "web".into(),
        image: ImageId(d(5)),
        chain: vec![ChainId(d(6))],
        config: ContainerConfig {
            env: vec!["A=1".into()],
            entrypoint: None,
            cmd: Some(vec!["sh".into()]),
            working_dir: None,
            user: Some("1".into()),
        },
        mounts: vec![ContainerMount {
            kind: ContainerMountKind::Volume,
            source: "data".into(),
            target: "/d".into(),
            readonly: true,
        }],
        created: 5,
        rw_size: Some((7, 8)),
    }
}

/// The encoding of [`container`], with `mounted` (schema 1 only) after `created`.
fn container_golden(mounted: Option<&str>) -> String {
    [
        "01".to_owned(),
        "cd".repeat(32),                         // id
        format!("03{}", hexs(b"web")),           // name
        "05".repeat(32),                         // image
        format!("01{}", "06".repeat(32)),        // chain
        "0103413d31".to_owned(),                 // env
        "00".to_owned(),                         // entrypoint
        "0101027368".to_owned(),                 // cmd
        "00".to_owned(),                         // working_dir
        "010131".to_owned(),                     // user
        format!("0101{}022f6401", "0464617461"), // mounts: [Volume, "data", "/d", ro]
        "05".to_owned(),                         // created
        mounted.unwrap_or_default().to_owned(),  // schema 1: mounted
        "010708".to_owned(),                     // rw_size
    ]
    .concat()
}

#[test]
fn container_and_volume_encodings_are_stable() {
    let c = container();
    let v = VolumeRecord {
        name: "data".into(),
        labels: BTreeMap::new(),
        created: 6,
        users: 0,
        size: Some((9, 10)),
    };
    assert_eq!(hexs(&codec::encode(&c)), container_golden(None));
    assert_eq!(
        hexs(&codec::encode(&v)),
        format!("0104{}00060001090a", hexs(b"data"))
    );
    assert_eq!(
        codec::decode::<ContainerRecord>(&codec::encode(&c)).unwrap(),
        c
    );
    assert_eq!(
        codec::decode::<VolumeRecord>(&codec::encode(&v)).unwrap(),
        v
    );
}

/// A database at `path` as a schema-1 build left it, holding `c` (mount count 2) by id and name.
fn write_schema_1_container(path: &Path, c: &ContainerRecord) {
    let db = MetaDb::open(path).unwrap();
    schema::set_version(&db.current().unwrap(), 1);
    let v1 = hex::decode(container_golden(Some("02"))).unwrap();
    let txn = db.current().unwrap().begin_write().unwrap();
    txn.open_table(CONTAINERS)
        .unwrap()
        .insert(c.id.as_bytes(), v1.as_slice())
        .unwrap();
    txn.open_table(CONTAINER_NAMES)
        .unwrap()
        .insert(c.name.as_str(), c.id.as_bytes())
        .unwrap();
    txn.commit().unwrap();
}

/// Schema 1 stored a mount count in each container record; schema 2 keeps mount counts in
/// memory. A database written by a schema-1 build must open with every container intact.
#[test]
fn schema_1_container_records_migrate_without_their_mount_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let c = container();
    write_schema_1_container(&path, &c);
    let db = MetaDb::open(&path).unwrap();
    let r = db.read().unwrap();
    assert_eq!(r.container(&c.id).unwrap(), Some(c.clone()));
    assert_eq!(r.container_by_name("web").unwrap(), Some(c));
    drop(r);
    drop(db);
    // The migration ran once: the version is current and the record is stored in the new form.
    let db = redb::Database::open(&path).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let stored = txn.open_table(CONTAINERS).unwrap();
    let bytes = stored.get(container().id.as_bytes()).unwrap().unwrap();
    assert_eq!(hexs(bytes.value()), container_golden(None));
    let meta = txn.open_table(META).unwrap();
    assert_eq!(
        meta.get("schema_version").unwrap().unwrap().value(),
        SCHEMA_VERSION
    );
}

/// Salvage decodes records as the schema the file says wrote them: a schema-1 file's
/// containers are salvaged, not reported lost. A file from a newer schema is refused.
#[test]
fn salvage_reads_a_schema_1_file_and_refuses_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let c = container();
    write_schema_1_container(&path, &c);
    let lock = DbLock::acquire(&path).unwrap();
    let salvaged = salvage_records(&path, &lock, &dir.path().join("scratch")).unwrap();
    assert_eq!(salvaged.containers, vec![c]);
    assert!(salvaged.lost.is_empty(), "{:?}", salvaged.lost);

    schema::set_version(&redb::Database::open(&path).unwrap(), SCHEMA_VERSION + 1);
    let e = salvage_records(&path, &lock, &dir.path().join("scratch")).unwrap_err();
    assert!(matches!(e, MetaError::NewerSchema { .. }), "{e}");
}

#[test]
fn decode_refuses_unknown_format_and_trailing_bytes() {
    let mut bytes = codec::encode(&layer());
    bytes[0] = 9;
    assert!(matches!(
        codec::decode::<LayerRecord>(&bytes),
        Err(CodecError::UnknownFormat(9))
    ));
    let mut bytes = codec::encode(&layer());
    bytes.push(0);
    assert!(matches!(
        codec::decode::<LayerRecord>(&bytes),
        Err(CodecError::Corrupt(_))
    ));
    assert!(matches!(
        codec::decode::<LayerRecord>(&[]),
        Err(CodecError::Empty)
    ));
}

#[test]
fn records_round_trip_through_a_real_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    {
        let db = MetaDb::open(&path).unwrap();
        let w = db.write().unwrap();
        w.put_layer(&layer()).unwrap();
        w.put_image(&image()).unwrap();
        w.put_tag(&"a:b".parse().unwrap(), &ImageId(d(4))).unwrap();
        w.put_blob_key(&d(9), &DiffId(d(2))).unwrap();
        w.commit().unwrap();
    }
    let db = MetaDb::open(&path).unwrap();
    let r = db.read().unwrap();
    assert_eq!(r.layer(&ChainId(d(1))).unwrap(), Some(layer()));
    assert_eq!(r.image(&ImageId(d(4))).unwrap(), Some(image()));
    assert_eq!(r.tag(&"a:b".parse().unwrap()).unwrap(), Some(ImageId(d(4))));
    assert_eq!(r.blob_key(&d(9)).unwrap(), Some(DiffId(d(2))));
    assert_eq!(r.layers().unwrap().len(), 1);
}

#[test]
fn a_second_open_of_the_same_file_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let _first = MetaDb::open(&path).unwrap();
    let err = MetaDb::open(&path).unwrap_err();
    assert!(matches!(err, MetaError::Locked(_)), "{err}");
    assert!(err.to_string().contains("another stratad"), "{err}");
}

#[test]
fn a_database_from_a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    {
        let db = MetaDb::open(&path).unwrap();
        schema::set_version(&db.current().unwrap(), SCHEMA_VERSION + 1);
    }
    let err = MetaDb::open(&path).unwrap_err();
    assert!(
        matches!(err, MetaError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade strata"));
}

#[test]
fn a_fresh_database_is_migrated_to_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let db = MetaDb::open(&path).unwrap();
    let r = db.read().unwrap();
    assert!(r.layers().unwrap().is_empty());
    assert!(r.volumes().unwrap().is_empty());
}

/// bincode reads a string's length and allocates that much before reading its bytes: without
/// a limit, a few corrupt bytes in a record made decoding allocate up to 2^64 bytes, a panic
/// ("capacity overflow") or an abort of the whole daemon instead of a `CodecError`. Found by
/// the `record_decode` fuzz target.
#[test]
fn decode_refuses_a_string_longer_than_the_limit_without_allocating_it() {
    // A volume record whose name claims u64::MAX bytes (varint 0xfd + 8 bytes), then 1 GiB.
    let mut huge = vec![codec::FORMAT_BINCODE2, 0xfd];
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    let mut big = vec![codec::FORMAT_BINCODE2, 0xfc];
    big.extend_from_slice(&(1u32 << 30).to_le_bytes());
    for bytes in [huge, big] {
        assert!(
            matches!(
                codec::decode::<VolumeRecord>(&bytes),
                Err(CodecError::Corrupt(_))
            ),
            "{}",
            hexs(&bytes)
        );
    }
}
