//! Writes the checked-in seed corpora, `fuzz/corpus/<target>/`, from scratch:
//!
//! ```sh
//! cd fuzz && cargo run --example write_seeds   # as root: it also extracts each tar seed
//! ```
//!
//! Fuzzer input is mostly garbage; seeds that are real tars, specs and records let coverage
//! reach the interesting code from the first second. Each tar seed holds one hostile idea
//! (after whatever benign entries it needs), since extraction stops at the first refused
//! entry. The tar seeds aim at the store root `archive_extract` builds around the layer
//! directory `tmp/layer-fuzz`: `../layer-other` is a sibling staging directory and
//! `../../meta.redb` the database. Reproducers of bugs the targets found are seeds too, so
//! they are replayed on every run.
//!
//! Prints what the store makes of each seed, to show the seeds reach past the parsers.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use strata_store::archive::extract_layer;
use strata_store::fuzzing::encode;
use strata_store::ids::{CacheId, ChainId, DiffId, Digest, ImageId, ImageRef};
use strata_store::meta::{
    ContainerConfig, ContainerMount, ContainerMountKind, ContainerRecord, ImageConfigRecord,
    ImageRecord, LayerRecord, VolumeRecord,
};
use strata_store::mountspec::{parse_mount_flag, parse_volume_flag};
use strata_testkit::LayerBuilder;
use tar::{EntryType, Header};

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let tars = tar_seeds();
    for (name, bytes) in &tars {
        let dir = tempfile::tempdir().expect("tempdir");
        let outcome = match extract_layer(bytes.as_slice(), dir.path()) {
            Ok(stats) => format!("ok, {} files", stats.files),
            Err(e) => format!("refused: {e}"),
        };
        println!("archive_extract/{name}: {} bytes, {outcome}", bytes.len());
    }
    write_corpus(&corpus.join("archive_extract"), &tars);

    let specs = mount_spec_seeds();
    for (name, text) in &specs {
        let text = std::str::from_utf8(text).expect("specs are UTF-8");
        let parsed: Vec<&str> = text
            .split('\n')
            .map(
                |line| match (parse_volume_flag(line), parse_mount_flag(line)) {
                    (Ok(_), _) => "-v ok",
                    (_, Ok(_)) => "--mount ok",
                    _ => "refused",
                },
            )
            .collect();
        println!("mount_spec/{name}: {}", parsed.join(", "));
    }
    write_corpus(&corpus.join("mount_spec"), &specs);

    let records = record_seeds();
    for (name, bytes) in &records {
        println!("record_decode/{name}: {} bytes", bytes.len());
    }
    write_corpus(&corpus.join("record_decode"), &records);
}

/// Replaces `dir` with exactly these files.
fn write_corpus(dir: &Path, seeds: &BTreeMap<&'static str, Vec<u8>>) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).expect("removing the old corpus");
    }
    std::fs::create_dir_all(dir).expect("creating the corpus directory");
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).expect("writing a seed");
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one seed per entry: the list is the point"
)]
fn tar_seeds() -> BTreeMap<&'static str, Vec<u8>> {
    let mut seeds = BTreeMap::new();

    let mut rich = LayerBuilder::new();
    rich.dir("etc", 0o755)
        .file("etc/motd", &[b'x'; 700], 0o644)
        .owner(1000, 1000)
        .xattr("user.test", b"value")
        .file("bin/su", b"#!/bin/sh\n", 0o4755)
        .symlink("etc/alt", "/etc/motd")
        .hardlink("etc/motd.link", "etc/motd")
        .fifo("run/fifo")
        .dir("tmp", 0o1777)
        .mtime(1);
    add(&mut seeds, "layer-rich.tar", &mut rich);
    let mut truncated = rich.build();
    truncated.truncate(512 * 3 + 300);
    seeds.insert("truncated-inside-a-file.tar", truncated);

    add(
        &mut seeds,
        "escape-dotdot.tar",
        LayerBuilder::new().raw_file(b"../escape", b"bad", 0o644),
    );
    add(
        &mut seeds,
        "escape-dotdot-folded.tar",
        LayerBuilder::new()
            .dir("a", 0o755)
            .raw_file(b"a/../b", b"inside", 0o644)
            .raw_file(b"a/../../../meta.redb", b"bad", 0o644),
    );
    add(
        &mut seeds,
        "absolute-names.tar",
        LayerBuilder::new()
            .raw_dir(b"/", 0o755)
            .raw_file(b"/meta.redb", b"confined", 0o644)
            .raw_file(b"/tmp/layer-other/file", b"confined", 0o644),
    );
    add(
        &mut seeds,
        "root-entry.tar",
        LayerBuilder::new()
            .raw_dir(b"./", 0o700)
            .mtime(5)
            .raw_symlink(b".", b"../layer-other"),
    );
    add(
        &mut seeds,
        "symlink-parent-then-file.tar",
        LayerBuilder::new().file_through_symlink("up", "..", "layer-other/file", b"bad"),
    );
    add(
        &mut seeds,
        "symlink-absolute-then-file.tar",
        LayerBuilder::new().file_through_symlink("etc", "/etc", "passwd", b"bad"),
    );
    add(
        &mut seeds,
        "symlink-sibling-then-dir.tar",
        LayerBuilder::new()
            .symlink("other", "../layer-other")
            .dir("other/sub", 0o755),
    );
    add(
        &mut seeds,
        "symlink-chain-then-file.tar",
        LayerBuilder::new()
            .symlink("a", "b")
            .symlink("b", "../..")
            .file("a/meta.redb", b"bad", 0o644),
    );
    add(
        &mut seeds,
        "hardlink-outside.tar",
        LayerBuilder::new().hardlink("x", "../layer-other/file"),
    );
    add(
        &mut seeds,
        "hardlink-absolute.tar",
        LayerBuilder::new()
            .file("meta.redb", b"inside", 0o644)
            .hardlink("x", "/meta.redb")
            .hardlink("y", "/tmp/layer-other/file"),
    );
    add(
        &mut seeds,
        "hardlink-through-symlink.tar",
        LayerBuilder::new()
            .symlink("l", "../layer-other")
            .hardlink("x", "l/file"),
    );
    add(
        &mut seeds,
        "hardlink-to-dir.tar",
        LayerBuilder::new().dir("d", 0o755).hardlink("x", "d"),
    );
    add(
        &mut seeds,
        "whiteouts.tar",
        LayerBuilder::new()
            .dir("a", 0o755)
            .file("a/b", b"", 0o644)
            .whiteout("a/b")
            .whiteout("top")
            .whiteout("new/dir/gone"),
    );
    add(
        &mut seeds,
        "whiteout-escape.tar",
        LayerBuilder::new().raw_file(b"../.wh.layer-other", b"", 0o644),
    );
    add(
        &mut seeds,
        "whiteout-of-dotdot.tar",
        LayerBuilder::new().raw_file(b"d/.wh..", b"", 0o644),
    );
    add(
        &mut seeds,
        "opaque.tar",
        LayerBuilder::new()
            .dir("d", 0o755)
            .opaque("d")
            .opaque("e/f")
            .raw_file(b".wh..wh.plnk/123", b"", 0o644),
    );
    add(
        &mut seeds,
        "opaque-through-symlink.tar",
        LayerBuilder::new()
            .symlink("o", "../layer-other")
            .opaque("o"),
    );
    add(
        &mut seeds,
        "devices.tar",
        LayerBuilder::new()
            .dir("dev", 0o755)
            .char_dev("dev/null", 1, 3)
            .block_dev("dev/sda", 8, 0)
            .fifo("dev/initctl")
            .char_dev("dev/.wh.x", 0, 0),
    );
    let long = "n".repeat(150);
    let deep = format!("{}/file", vec!["p".repeat(90); 4].join("/"));
    add(
        &mut seeds,
        "long-names.tar",
        LayerBuilder::new()
            .file(&long, b"long", 0o644)
            .file(&deep, b"deep", 0o644)
            .symlink("s", &format!("/{}", "t".repeat(200)))
            .hardlink("h", &long)
            .raw_file(format!("../{long}").as_bytes(), b"bad", 0o644),
    );
    add(
        &mut seeds,
        "pax-xattrs.tar",
        LayerBuilder::new()
            .file("f", b"x", 0o644)
            .xattr("user.a", b"1")
            .xattr("trusted.overlay.redirect", b"/etc")
            .xattr("trusted.strata", b"kept")
            .dir("d", 0o755)
            .xattr("trusted.overlay.opaque", b"y"),
    );
    add(
        &mut seeds,
        "duplicates.tar",
        LayerBuilder::new()
            .file("f", b"one", 0o644)
            .file("f", b"two", 0o600)
            .dir("d", 0o755)
            .dir("d", 0o700)
            .file("x", b"file first", 0o644)
            .dir("x", 0o755)
            .symlink("s", "x")
            .dir("s", 0o755),
    );
    add(
        &mut seeds,
        "dir-replaced-by-file.tar",
        LayerBuilder::new()
            .dir("d", 0o755)
            .file("d/inner", b"inner", 0o644)
            .dir("d/sub", 0o755)
            .file("d", b"now a file", 0o644),
    );
    add(
        &mut seeds,
        "dir-replaced-by-symlink-then-file.tar",
        LayerBuilder::new()
            .dir("d", 0o755)
            .file("d/f", b"", 0o644)
            .symlink("d", "../layer-other")
            .file("d/g", b"bad", 0o644),
    );
    seeds.insert("empty-layer.tar", vec![0; 1024]);
    seeds.insert("pax-path-escape.tar", pax_tar(b'x', "path", "../escape"));
    seeds.insert(
        "pax-linkpath-escape.tar",
        pax_tar(b'x', "linkpath", "../layer-other/file"),
    );
    seeds.insert("pax-global-header.tar", pax_tar(b'g', "comment", "hello"));
    seeds.insert("old-style-dir.tar", old_style_dir_tar());
    seeds.insert("gnu-sparse.tar", sparse_tar());
    // The `archive_extract` target's find once it checked tapes: a file whose name is not
    // UTF-8 extracted fine, but its tape could not be played back.
    add(
        &mut seeds,
        "repro-tape-non-utf8-name.tar",
        LayerBuilder::new()
            .dir("etc", 0o755)
            .raw_file(b"etc/caf\xe9", b"latin-1 name", 0o644)
            .raw_file(b"n\xffme", b"", 0o644),
    );
    seeds
}

fn add(seeds: &mut BTreeMap<&'static str, Vec<u8>>, name: &'static str, layer: &mut LayerBuilder) {
    seeds.insert(name, layer.build());
}

/// A file `target`, then a PAX header of `kind` (`x`: for the next entry, `g`: global) with one
/// record, then a hardlink `name -> target` (a hardlink, so both `path` and `linkpath` matter).
fn pax_tar(kind: u8, key: &str, value: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append(&file_header("target", EntryType::Regular, 4), &b"data"[..])
        .expect("target");
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len != body.len() + len.to_string().len() {
        len = body.len() + len.to_string().len();
    }
    let record = format!("{len}{body}");
    let mut header = Header::new_ustar();
    header.set_entry_type(EntryType::new(kind));
    header.set_path("PaxHeaders/name").expect("pax header name");
    header.set_size(record.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append(&header, record.as_bytes())
        .expect("pax header");
    let mut link = file_header("name", EntryType::Link, 0);
    link.set_link_name("target").expect("link name");
    link.set_cksum();
    builder.append(&link, std::io::empty()).expect("link");
    builder.into_inner().expect("tar")
}

/// A pre-POSIX directory: a regular entry whose name ends in `/`.
fn old_style_dir_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = Header::new_old();
    header.as_old_mut().name[..4].copy_from_slice(b"old/");
    header.set_entry_type(EntryType::Regular);
    header.set_size(0);
    header.set_mode(0o755);
    header.set_cksum();
    builder.append(&header, std::io::empty()).expect("dir");
    builder
        .append(
            &file_header("old/file", EntryType::Regular, 4),
            &b"data"[..],
        )
        .expect("file");
    builder.into_inner().expect("tar")
}

/// A GNU sparse file (`tar -S`): 1 MiB declared, two 512-byte fragments stored, holes between.
fn sparse_tar() -> Vec<u8> {
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::GNUSparse);
    header.as_old_mut().name[..6].copy_from_slice(b"sparse");
    header.set_size(1024);
    header.set_mode(0o644);
    let gnu = header.as_gnu_mut().expect("a GNU header");
    for (slot, offset) in gnu.sparse.iter_mut().zip([0, (1 << 20) - 512]) {
        slot.set_offset(offset);
        slot.set_length(512);
    }
    gnu.set_real_size(1 << 20);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &[b'x'; 1024][..]).expect("sparse");
    builder.into_inner().expect("tar")
}

fn file_header(name: &str, kind: EntryType, size: u64) -> Header {
    let mut header = Header::new_ustar();
    header.set_path(name).expect("name");
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    header
}

fn mount_spec_seeds() -> BTreeMap<&'static str, Vec<u8>> {
    let specs: &[(&str, &str)] = &[
        ("v-anonymous", "/data"),
        ("v-named", "myvol:/data"),
        ("v-named-ro", "my_vol.1-x:/data:ro"),
        ("v-nocopy", "vol:/data:ro,nocopy"),
        ("v-bind-unclean", "/host//a/./b/../c:/data:rw"),
        ("v-bind-root-ro", "/:/host:ro"),
        ("v-conflicting-modes", "/h:/d:ro,rw"),
        ("v-unsupported-mode", "/h:/d:Z"),
        ("v-short-volume-name", "a:/d"),
        ("v-relative-source", "./x:/d"),
        ("v-target-dotdot", "/h:/a/.."),
        ("v-inside-store-lexically", "/srv/store/volumes:/x"),
        ("v-inside-store-real", "/var/lib/strata/overlay2:/x"),
        ("v-relative-symlink-into-store", "/srv/layers/abc:/x"),
        (
            "v-dotdot-symlink-into-store",
            "/srv/up/var/lib/strata/new/dir:/x",
        ),
        ("v-chained-symlink-into-store", "/home/user/link/store/x:/x"),
        ("v-dangling-symlink", "/srv/dangling/x:/x"),
        ("v-symlink-loop", "/srv/loop/x:/x"),
        ("v-below-a-file", "/srv/data/file/x:/x"),
        ("v-beside-the-store", "/var/lib/strata-other:/x"),
        ("v-store-root-link", "/var/lib/strata-link/x:/x"),
        ("m-bind-ro", "type=bind,src=/srv,dst=/x,readonly"),
        ("m-bind-missing", "type=bind,src=/srv/missing,dst=/x"),
        ("m-bind-store-root", "type=bind,src=/srv/store,dst=/x"),
        ("m-bind-upper-case", "TYPE=Bind,SRC=/srv,DST=/x,ro=1"),
        (
            "m-volume-nocopy",
            "type=volume,source=v1,target=/d,volume-nocopy",
        ),
        (
            "m-tmpfs-sized",
            "type=tmpfs,target=/run,tmpfs-size=64m,tmpfs-mode=1770",
        ),
        ("m-tmpfs-fraction", "type=tmpfs,dst=/t,tmpfs-size=1.5 KiB"),
        (
            "m-quoted-commas",
            "\"type=bind\",\"source=/h,with,commas\",target=/d",
        ),
        (
            "m-quoted-quotes",
            "type=bind,\"source=/h \"\"q\"\"\",target=/d",
        ),
        ("m-quoted-newline", "type=volume,\"target=/a\nb\""),
        ("m-unsupported-type", "type=npipe,target=/x"),
        ("m-mixed-options", "type=volume,target=/d,tmpfs-size=1m"),
        (
            "m-unsupported-option",
            "type=bind,src=/srv,dst=/x,bind-propagation=rshared",
        ),
        (
            "set-duplicate-targets",
            "v1:/data\ntype=volume,src=v2,dst=/data/",
        ),
        (
            "set-mixed",
            "/srv:/a\ntype=tmpfs,dst=/b\nvol:/c:ro\ntype=bind,src=/home/user,dst=/d,readonly",
        ),
        // 30 fraction digits times 2^50 overflowed u128 (seen while writing this target).
        (
            "repro-tmpfs-size-overflow",
            "type=tmpfs,dst=/t,tmpfs-size=0.999999999999999999999999999999p",
        ),
    ];
    specs
        .iter()
        .map(|(name, spec)| (*name, spec.as_bytes().to_vec()))
        .collect()
}

fn digest(byte: u8) -> Digest {
    Digest::from_bytes([byte; 32])
}

/// A container record as schema 1 stored it: a mount count between `created` and `rw_size`.
#[derive(Serialize)]
struct ContainerRecordV1 {
    id: CacheId,
    name: String,
    image: ImageId,
    chain: Vec<ChainId>,
    config: ContainerConfig,
    mounts: Vec<ContainerMount>,
    created: u64,
    mounted: u32,
    rw_size: Option<(u64, u64)>,
}

/// The records of `store/src/meta/tests.rs`, whose encodings are pinned there.
fn record_seeds() -> BTreeMap<&'static str, Vec<u8>> {
    let layer = LayerRecord {
        chain_id: ChainId(digest(1)),
        diff_id: DiffId(digest(2)),
        parent: Some(ChainId(digest(3))),
        cache_id: "ab".repeat(32).parse().expect("cache id"),
        short_link: "ABCDEFGHIJKLMNOPQRSTUVWXYZ".into(),
        size: 300,
        tar_bytes: 10240,
        files: 7,
        image_users: 2,
        created: 1_700_000_000,
    };
    let image = ImageRecord {
        id: ImageId(digest(4)),
        config: ImageConfigRecord {
            os: Some("linux".into()),
            architecture: Some("amd64".into()),
            env: vec!["A=1".into()],
            cmd: Some(vec!["sh".into()]),
            working_dir: Some("/".into()),
            labels: BTreeMap::from([("k".into(), "v".into())]),
            ..ImageConfigRecord::default()
        },
        config_json: b"{}".to_vec(),
        diff_ids: vec![DiffId(digest(2))],
        chain: vec![ChainId(digest(2))],
        tags: vec!["a:b".parse::<ImageRef>().expect("reference")],
        size: 300,
        imported: 1_700_000_001,
        view_mounts: 0,
        container_users: 1,
    };
    let container = ContainerRecord {
        id: "cd".repeat(32).parse().expect("cache id"),
        name: "web".into(),
        image: ImageId(digest(5)),
        chain: vec![ChainId(digest(6))],
        config: ContainerConfig {
            env: vec!["A=1".into()],
            cmd: Some(vec!["sh".into()]),
            user: Some("1".into()),
            ..ContainerConfig::default()
        },
        mounts: vec![ContainerMount {
            kind: ContainerMountKind::Volume,
            source: "data".into(),
            target: "/d".into(),
            readonly: true,
        }],
        created: 5,
        rw_size: Some((7, 8)),
    };
    let container_v1 = ContainerRecordV1 {
        id: container.id,
        name: container.name.clone(),
        image: container.image,
        chain: container.chain.clone(),
        config: container.config.clone(),
        mounts: container.mounts.clone(),
        created: container.created,
        mounted: 2,
        rw_size: container.rw_size,
    };
    let volume = VolumeRecord {
        name: "data".into(),
        labels: BTreeMap::from([("com.example".into(), "x".into())]),
        created: 6,
        users: 0,
        size: Some((9, 10)),
    };
    BTreeMap::from([
        ("layer", encode(&layer)),
        ("image", encode(&image)),
        ("container", encode(&container)),
        ("container-schema-1", encode(&container_v1)),
        ("volume", encode(&volume)),
        // The `record_decode` target's first find: a volume name claiming 0xe5e5e5e5 bytes was
        // allocated before bincode noticed the record is 6 bytes long.
        (
            "repro-string-length-allocation",
            vec![0x01, 0xfc, 0xe5, 0xe5, 0xe5, 0xe5],
        ),
    ])
}
