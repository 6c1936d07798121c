//! Layer extraction: fidelity of what lands in the diff directory, and hostile layers that must
//! never create, change or read anything outside it (each case checks the host side of a
//! tempdir is byte-for-byte unchanged).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use super::{ExtractError, export_layer, extract_layer};

/// Builds layer tars, including names the `tar` crate's safe setters would refuse.
pub(super) struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
}

impl LayerTar {
    pub(super) fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    /// An entry with raw `name` and `link` bytes (each under 100 bytes).
    pub(super) fn raw(
        &mut self,
        kind: EntryType,
        name: &str,
        link: &str,
        data: &[u8],
        mode: u32,
    ) -> &mut Self {
        let mut h = Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(kind);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        self.builder.append(&h, data).expect("append");
        self
    }

    pub(super) fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(EntryType::Regular, name, "", data, 0o644)
    }

    pub(super) fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(EntryType::Directory, name, "", b"", 0o755)
    }

    pub(super) fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(EntryType::Symlink, name, target, b"", 0o777)
    }

    pub(super) fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(EntryType::Link, name, target, b"", 0o644)
    }

    /// A GNU sparse file of `real_size` bytes holding `chunks` (offset, data; in order, each
    /// a multiple of 512 bytes long but the last), holes elsewhere: what `tar -S` writes.
    pub(super) fn sparse(
        &mut self,
        name: &str,
        chunks: &[(u64, &[u8])],
        real_size: u64,
    ) -> &mut Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::GNUSparse);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        let stored: Vec<u8> = chunks.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        h.set_size(stored.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        let gnu = h.as_gnu_mut().expect("a GNU header");
        for (slot, (offset, data)) in gnu.sparse.iter_mut().zip(chunks) {
            slot.set_offset(*offset);
            slot.set_length(data.len() as u64);
        }
        gnu.set_real_size(real_size);
        h.set_cksum();
        self.builder.append(&h, stored.as_slice()).expect("append");
        self
    }

    pub(super) fn finish(&mut self) -> Vec<u8> {
        let builder = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new()));
        builder.into_inner().expect("finish")
    }
}

/// A tempdir with `dest/` (the layer root), and outside it a sentinel file and directory.
struct Host {
    tmp: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir(tmp.path().join("dest")).expect("dest");
        fs::write(tmp.path().join("sentinel"), b"host data").expect("sentinel");
        fs::create_dir(tmp.path().join("outside")).expect("outside");
        fs::write(tmp.path().join("outside/file"), b"more host data").expect("outside file");
        Self { tmp }
    }

    fn dest(&self) -> PathBuf {
        self.tmp.path().join("dest")
    }

    fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }

    /// Everything outside `dest`: path -> (mode, mtime, content or link target).
    fn snapshot(&self) -> BTreeMap<PathBuf, (u32, i64, Vec<u8>)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.tmp.path().to_owned()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).expect("read_dir") {
                let p = e.expect("entry").path();
                if p == self.dest() {
                    continue;
                }
                let m = fs::symlink_metadata(&p).expect("lstat");
                let content = if m.is_file() {
                    fs::read(&p).expect("read")
                } else if m.file_type().is_symlink() {
                    fs::read_link(&p)
                        .expect("readlink")
                        .into_os_string()
                        .into_encoded_bytes()
                } else {
                    stack.push(p.clone());
                    Vec::new()
                };
                out.insert(p, (m.mode(), m.mtime(), content));
            }
        }
        let root = fs::metadata(self.tmp.path()).expect("root");
        out.insert(
            self.tmp.path().to_owned(),
            (root.mode(), root.mtime(), Vec::new()),
        );
        out
    }

    /// Extracts `tar`, asserting nothing outside `dest` changed whatever the result.
    fn extract(&self, tar: &[u8]) -> Result<super::LayerStats, ExtractError> {
        let before = self.snapshot();
        let result = extract_layer(tar, &self.dest());
        assert_eq!(before, self.snapshot(), "host outside dest changed");
        result
    }
}

fn expect_err(result: Result<super::LayerStats, ExtractError>, needles: &[&str]) -> ExtractError {
    let err = result.expect_err("extraction should fail");
    let msg = err.to_string();
    for needle in needles {
        assert!(
            msg.contains(needle),
            "error {msg:?} should mention {needle:?}"
        );
    }
    assert!(!msg.contains('\n'), "one-line error: {msg:?}");
    err
}

#[test]
fn regular_files_dirs_and_stats_are_faithful() {
    let host = Host::new();
    let mut t = LayerTar::new();
    t.dir("etc/")
        .file("etc/hosts", b"127.0.0.1 localhost\n")
        .file("etc/empty", b"");
    let mut bytes = t.finish();
    bytes.extend_from_slice(&[0u8; 4096]); // trailing padding belongs to the DiffID too
    let stats = host.extract(&bytes).expect("extract");
    let d = host.dest();
    assert_eq!(
        fs::read(d.join("etc/hosts")).expect("read"),
        b"127.0.0.1 localhost\n"
    );
    assert_eq!(stats.tar_bytes, bytes.len() as u64);
    assert_eq!(
        stats.diff_id.0.as_bytes(),
        &<[u8; 32]>::from(Sha256::digest(&bytes))
    );
    assert_eq!(stats.size, 20);
    assert_eq!(stats.files, 3);
    let m = fs::metadata(d.join("etc")).expect("etc");
    assert_eq!(m.mtime(), 1_600_000_000, "dir mtime set after its contents");
    assert_eq!(m.mode() & 0o7777, 0o755);
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one layer with every kind of entry, then its checks"
)]
fn metadata_owner_mode_xattrs_links_and_devices_are_faithful() {
    let host = Host::new();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_ustar();
    h.set_size(0);
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o4755);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_mtime(1_500_000_000);
    h.set_size(3);
    b.append_pax_extensions([
        ("SCHILY.xattr.user.test", b"hello".as_slice()),
        (
            "SCHILY.xattr.security.capability",
            &[
                1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ),
        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ("mtime", b"1500000000.25"),
    ])
    .expect("pax");
    b.append_data(&mut h, "bin/ping", b"elf".as_slice())
        .expect("file");
    let long = format!("deep/{}/{}", "d".repeat(120), "f".repeat(120));
    let mut h = Header::new_gnu();
    h.set_size(0);
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o600);
    h.set_size(4);
    h.set_mtime(1);
    b.append_data(&mut h, &long, b"long".as_slice())
        .expect("long");
    let mut h = Header::new_gnu();
    h.set_size(0);
    h.set_entry_type(EntryType::Link);
    h.set_mode(0o600);
    b.append_link(&mut h, "bin/ping-link", &long)
        .expect("hardlink with long target");
    let mut h = Header::new_gnu();
    h.set_size(0);
    h.set_entry_type(EntryType::Symlink);
    h.set_mtime(1_400_000_000);
    h.set_uid(7);
    h.set_gid(8);
    b.append_link(&mut h, "bin/sl", "/nowhere/at/all")
        .expect("symlink");
    for (name, kind, major, minor, mode) in [
        ("dev/null", EntryType::Char, 1, 3, 0o666),
        ("dev/sda", EntryType::Block, 8, 0, 0o660),
        ("dev/fifo", EntryType::Fifo, 0, 0, 0o1644),
    ] {
        let mut h = Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        h.set_mtime(1_300_000_000);
        b.append_data(&mut h, name, std::io::empty())
            .expect("device");
    }
    let bytes = b.into_inner().expect("tar");
    let stats = host.extract(&bytes).expect("extract");
    let d = host.dest();

    let ping = fs::symlink_metadata(d.join("bin/ping")).expect("ping");
    assert_eq!(ping.mode() & 0o7777, 0o4755, "setuid survives chown");
    assert_eq!((ping.uid(), ping.gid()), (1234, 5678));
    assert_eq!(
        (ping.mtime(), ping.mtime_nsec()),
        (1_500_000_000, 250_000_000)
    );
    assert_eq!(
        xattr::get(d.join("bin/ping"), "user.test")
            .expect("xattr")
            .as_deref(),
        Some(&b"hello"[..])
    );
    assert!(
        xattr::get(d.join("bin/ping"), "security.capability")
            .expect("cap")
            .is_some()
    );
    assert!(
        xattr::get(d.join("bin/ping"), "trusted.overlay.redirect")
            .expect("x")
            .is_none(),
        "overlay xattrs from tars are dropped"
    );

    let link = fs::symlink_metadata(d.join("bin/ping-link")).expect("link");
    let target = fs::symlink_metadata(d.join(&long)).expect("long");
    assert_eq!(link.ino(), target.ino());
    assert_eq!(stats.size, 3 + 4, "hardlinked bytes counted once");

    let sl = fs::symlink_metadata(d.join("bin/sl")).expect("symlink");
    assert!(sl.file_type().is_symlink());
    assert_eq!(
        fs::read_link(d.join("bin/sl")).expect("readlink"),
        Path::new("/nowhere/at/all")
    );
    assert_eq!((sl.uid(), sl.gid(), sl.mtime()), (7, 8, 1_400_000_000));

    let null = fs::symlink_metadata(d.join("dev/null")).expect("null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    assert!(
        fs::symlink_metadata(d.join("dev/sda"))
            .expect("sda")
            .file_type()
            .is_block_device()
    );
    let fifo = fs::symlink_metadata(d.join("dev/fifo")).expect("fifo");
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o1644);
}

#[test]
fn whiteouts_become_overlay_devices_and_opaque_xattrs() {
    let host = Host::new();
    let mut t = LayerTar::new();
    t.dir("a/")
        .file("a/.wh.gone", b"")
        .file("b/c/.wh..wh..opq", b"")
        .file(".wh..wh..opq", b"")
        .file(".wh..wh.plnk/123", b"aufs")
        .file("a/.wh..wh.aufs", b"");
    host.extract(&t.finish()).expect("extract");
    let d = host.dest();
    let wh = fs::symlink_metadata(d.join("a/gone")).expect("whiteout");
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert_eq!(
        xattr::get(d.join("b/c"), "trusted.overlay.opaque")
            .expect("x")
            .as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        xattr::get(&d, "trusted.overlay.opaque")
            .expect("x")
            .as_deref(),
        Some(&b"y"[..])
    );
    assert!(!d.join(".wh..wh.plnk").exists());
    assert!(!d.join("a/.wh..wh.aufs").exists());
    assert!(!d.join("b/c/.wh..wh..opq").exists());
}

#[test]
fn later_entries_replace_earlier_ones() {
    let host = Host::new();
    let mut t = LayerTar::new();
    t.dir("x/")
        .file("x/inner", b"1")
        .file("x", b"now a file")
        .file("y", b"file")
        .dir("y/")
        .dir("z/")
        .raw(EntryType::Directory, "z/", "", b"", 0o700)
        .file("z/keep", b"k")
        .file("w", b"old")
        .file("w", b"new");
    host.extract(&t.finish()).expect("extract");
    let d = host.dest();
    assert_eq!(fs::read(d.join("x")).expect("x"), b"now a file");
    assert!(fs::metadata(d.join("y")).expect("y").is_dir());
    assert_eq!(
        fs::metadata(d.join("z")).expect("z").permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(fs::read(d.join("z/keep")).expect("keep"), b"k");
    assert_eq!(fs::read(d.join("w")).expect("w"), b"new");
}

#[test]
fn empty_layer_and_bad_streams() {
    let host = Host::new();
    host.extract(&[0u8; 1024])
        .expect("1024 zero bytes is an empty layer");
    expect_err(host.extract(b""), &["empty layer stream"]);
    expect_err(host.extract(&[0x42; 3000]), &["not a tar stream"]);
    expect_err(
        host.extract(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]),
        &["not a tar stream", "gzip"],
    );
    let mut t = LayerTar::new();
    t.file("a", &[7u8; 5000]).file("b", b"x");
    let full = t.finish();
    expect_err(host.extract(&full[..3000]), &["truncated", "'a'"]);
    // Cut exactly at an entry boundary: no end-of-archive marker.
    let fresh = Host::new();
    expect_err(fresh.extract(&full[..512 + 5120]), &["truncated"]);
}

#[test]
fn absolute_names_are_confined_to_dest() {
    let host = Host::new();
    let mut t = LayerTar::new();
    let abs = format!("{}/pwned", host.outside().display());
    t.file("/etc/passwd", b"root").file(&abs, b"x");
    host.extract(&t.finish()).expect("extract");
    assert_eq!(
        fs::read(host.dest().join("etc/passwd")).expect("read"),
        b"root"
    );
    assert!(host.dest().join(abs.trim_start_matches('/')).exists());
}

#[test]
fn dotdot_that_escapes_is_refused_and_inner_dotdot_is_folded() {
    for name in ["../x", "a/../../x", "./../sentinel", "/../x"] {
        let host = Host::new();
        let mut t = LayerTar::new();
        t.file(name, b"evil");
        expect_err(host.extract(&t.finish()), &[name, "escapes"]);
    }
    let host = Host::new();
    let mut t = LayerTar::new();
    t.file("a/../b", b"inside");
    host.extract(&t.finish()).expect("extract");
    assert_eq!(fs::read(host.dest().join("b")).expect("b"), b"inside");
}

#[test]
fn paths_through_symlinks_are_refused() {
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (vec![("l", "/".to_owned())], "l/etc/x"),
        (vec![("l", "../..".to_owned())], "l/x"),
        (vec![("l", "OUTSIDE".to_owned())], "l/pwned"),
        (
            vec![("l1", "l2".to_owned()), ("l2", "..".to_owned())],
            "l1/x",
        ),
        (vec![("d/l", "../d".to_owned())], "d/l/x"),
        (vec![("l", ".".to_owned())], "l/l/x"),
    ];
    for (links, entry) in cases {
        let host = Host::new();
        let mut t = LayerTar::new();
        t.dir("d/");
        for (name, target) in &links {
            let target = target.replace("OUTSIDE", &host.outside().display().to_string());
            t.symlink(name, &target);
        }
        t.file(entry, b"evil");
        let err = expect_err(host.extract(&t.finish()), &[entry, links[0].0]);
        assert!(matches!(err, ExtractError::ThroughSymlink { .. }), "{err}");
    }
}

#[test]
fn entries_replacing_symlinks_never_write_through_them() {
    let host = Host::new();
    let sentinel = host.tmp.path().join("sentinel");
    let mut t = LayerTar::new();
    t.symlink("f", &sentinel.display().to_string())
        .file("f", b"overwritten?")
        .symlink("d", &host.outside().display().to_string())
        .dir("d/")
        .symlink("s", &sentinel.display().to_string())
        .raw(EntryType::Fifo, "s", "", b"", 0o644);
    host.extract(&t.finish()).expect("extract");
    assert_eq!(fs::read(host.dest().join("f")).expect("f"), b"overwritten?");
    assert!(
        fs::symlink_metadata(host.dest().join("d"))
            .expect("d")
            .is_dir()
    );
}

/// Symlinks to create first (name, target), the entry or link target under test, and a word
/// the error must contain.
type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);

#[test]
fn bad_hardlinks_are_refused() {
    let host_probe = Host::new();
    let sentinel_abs = host_probe.tmp.path().join("sentinel").display().to_string();
    drop(host_probe);
    let cases: Vec<Case<'_>> = vec![
        (vec![], "../sentinel", "escapes"),
        (vec![], "a/../../sentinel", "escapes"),
        (vec![], "missing", "does not exist"),
        (vec![], "SENTINEL", "does not exist"), // absolute: confined, and not in this layer
        (vec![("l", "..")], "l/sentinel", "symlink"),
        (vec![("l", "/")], "l/etc/passwd", "symlink"),
        (vec![], "d", "directory"),
    ];
    for (links, target, why) in cases {
        let host = Host::new();
        let target = target.replace("SENTINEL", &sentinel_abs);
        let mut t = LayerTar::new();
        t.dir("d/");
        for (name, to) in &links {
            t.symlink(name, to);
        }
        t.hardlink("hl", &target);
        let err = expect_err(host.extract(&t.finish()), &["'hl'", why]);
        assert!(matches!(err, ExtractError::BadHardlink { .. }), "{err}");
    }
}

#[test]
fn whiteouts_outside_or_through_symlinks_are_refused() {
    let cases: Vec<Case<'_>> = vec![
        (vec![], "../.wh.sentinel", "escapes"),
        (vec![], "a/../../.wh.x", "escapes"),
        (vec![("l", "..")], "l/.wh.sentinel", "symlink"),
        (vec![("l", "..")], "l/.wh..wh..opq", "symlink"),
        (vec![("l", "/")], "l/etc/.wh.passwd", "symlink"),
        (vec![], ".wh..", "whiteout"),
        (vec![], "a/.wh...", "whiteout"),
    ];
    for (links, entry, why) in cases {
        let host = Host::new();
        let mut t = LayerTar::new();
        for (name, to) in &links {
            t.symlink(name, to);
        }
        t.file(entry, b"");
        expect_err(host.extract(&t.finish()), &[entry, why]);
    }
}

#[test]
fn symlinks_may_point_anywhere_and_devices_are_allowed() {
    let host = Host::new();
    let mut t = LayerTar::new();
    t.symlink("abs", "/etc/shadow")
        .symlink("up", "../../../../etc")
        .raw(EntryType::Char, "console", "", b"", 0o600);
    host.extract(&t.finish()).expect("extract");
    assert_eq!(
        fs::read_link(host.dest().join("up")).expect("up"),
        Path::new("../../../../etc")
    );
}

/// Everything under `root` as comparable data (path -> type, mode, owner, mtime, content, xattrs).
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    let mut inodes = BTreeMap::new();
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let p = e.expect("entry").path();
            let m = fs::symlink_metadata(&p).expect("lstat");
            let rel = p.strip_prefix(root).expect("rel").display().to_string();
            let content = if m.is_file() {
                format!("{:?}", fs::read(&p).expect("read"))
            } else if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).expect("readlink").display())
            } else if m.is_dir() {
                stack.push(p.clone());
                String::new()
            } else {
                format!("rdev {}", m.rdev())
            };
            let mut xattrs: Vec<String> = xattr::list(&p)
                .expect("list")
                .map(|k| {
                    format!(
                        "{}={:?}",
                        k.to_string_lossy(),
                        xattr::get(&p, &k).expect("get")
                    )
                })
                .collect();
            xattrs.sort();
            let link_group = if m.nlink() > 1 && !m.is_dir() {
                let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone());
                format!("link-group {first}")
            } else {
                String::new()
            };
            let mtime = if m.is_dir() { 0 } else { m.mtime() };
            out.insert(
                rel,
                format!(
                    "{:o} {}:{} {} {} {:?} {}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    mtime,
                    content,
                    xattrs,
                    link_group
                ),
            );
        }
    }
    out
}

#[test]
fn export_round_trips_through_extract() {
    let host = Host::new();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_ustar();
    h.set_size(0);
    h.set_entry_type(EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o1777);
    h.set_uid(3);
    h.set_gid(4);
    h.set_mtime(1_234);
    b.append_pax_extensions([("SCHILY.xattr.user.dir", b"d".as_slice())])
        .expect("pax");
    b.append_data(&mut h, "tmp/", std::io::empty())
        .expect("dir");
    let long = format!("tmp/{}/{}", "n".repeat(150), "m".repeat(80));
    let mut h = Header::new_gnu();
    h.set_size(0);
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o2755);
    h.set_uid(10);
    h.set_gid(20);
    h.set_mtime(99);
    h.set_size(5);
    b.append_pax_extensions([("SCHILY.xattr.user.k", b"v".as_slice())])
        .expect("pax");
    b.append_data(&mut h, &long, b"hello".as_slice())
        .expect("long");
    let mut h = Header::new_gnu();
    h.set_size(0);
    h.set_entry_type(EntryType::Link);
    b.append_link(&mut h, "tmp/hard", &long).expect("hardlink");
    let mut h = Header::new_gnu();
    h.set_size(0);
    h.set_entry_type(EntryType::Symlink);
    h.set_mtime(77);
    b.append_link(&mut h, "tmp/sym", format!("/{}", "t".repeat(200)))
        .expect("symlink");
    let mut inner = LayerTar::new();
    inner
        .file("w/.wh.gone", b"")
        .file("o/.wh..wh..opq", b"")
        .file("o/kept", b"k")
        .raw(EntryType::Fifo, "w/fifo", "", b"", 0o640);
    let tail = inner.finish();
    let mut bytes = b.into_inner().expect("tar");
    bytes.truncate(bytes.len() - 1024);
    bytes.extend_from_slice(&tail);

    host.extract(&bytes).expect("first extract");
    let first = tree(&host.dest());
    let mut exported = Vec::new();
    export_layer(&host.dest(), &mut exported).expect("export");
    let again = tempfile::tempdir().expect("tempdir");
    extract_layer(exported.as_slice(), again.path()).expect("second extract");
    assert_eq!(first, tree(again.path()));
    assert!(first.contains_key("w/gone") && first.contains_key("tmp/hard"));

    let mut twice = Vec::new();
    export_layer(again.path(), &mut twice).expect("export again");
    assert_eq!(exported, twice, "export is deterministic");
    let names: Vec<String> = tar::Archive::new(exported.as_slice())
        .entries()
        .expect("entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    let opq = names
        .iter()
        .position(|n| n == "o/.wh..wh..opq")
        .expect("opaque marker");
    assert_eq!(
        names[opq - 1],
        "o/",
        "opaque marker right after its directory: {names:?}"
    );
    assert!(names.contains(&"w/.wh.gone".to_owned()), "{names:?}");
}

/// Throughput check against GNU tar: `STRATA_BENCH_LAYER=/path/layer.tar cargo test --release
/// -p strata-store --lib extract_throughput -- --ignored --nocapture` (extracts next to the tar).
#[test]
#[ignore = "benchmark: needs STRATA_BENCH_LAYER"]
fn extract_throughput() {
    let layer = PathBuf::from(std::env::var("STRATA_BENCH_LAYER").expect("STRATA_BENCH_LAYER"));
    let parent = layer.parent().expect("parent").to_owned();
    let dest = tempfile::tempdir_in(&parent).expect("dest");
    let file = fs::File::open(&layer).expect("open");
    let start = std::time::Instant::now();
    let stats = extract_layer(file, dest.path()).expect("extract");
    let secs = start.elapsed().as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let mb = stats.tar_bytes as f64 / 1e6;
    println!(
        "extract_layer: {mb:.0} MB, {} files in {secs:.2}s = {:.0} MB/s ({})",
        stats.files,
        mb / secs,
        stats.diff_id
    );
}

/// A reader that returns odd-sized pieces, so chunks end at arbitrary offsets.
struct Ragged<'a>(&'a [u8], usize);

impl std::io::Read for Ragged<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.1 = (self.1 * 7 + 13) % 300_000 + 1;
        let n = self.1.min(buf.len()).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// Files of every size against the hashing reader's 1 MiB chunks and the 512-byte blocks, fed
/// in ragged pieces, land whole; the entries after them still parse; the `DiffID` and the tape
/// cover every byte; a pax `size` record, which overrides the header's, is obeyed; and a
/// stream cut inside a file's contents is reported as truncated there.
#[test]
fn file_contents_across_chunk_and_block_boundaries_land_whole() {
    let sizes = [
        0,
        1,
        511,
        512,
        513,
        (1 << 20) - 1,
        1 << 20,
        (1 << 20) + 1,
        2_500_001,
        3,
    ];
    let content = |i: usize, len: usize| -> Vec<u8> {
        (0..len)
            .map(|j| u8::try_from((j * 131 + i * 17) % 251).expect("a byte"))
            .collect()
    };
    let mut t = LayerTar::new();
    t.dir("d/");
    for (i, &len) in sizes.iter().enumerate() {
        t.file(&format!("d/f{i}"), &content(i, len));
    }
    // The header says 0 bytes, the pax record 3000: 3000 it is.
    t.builder
        .append_pax_extensions([("size", b"3000".as_slice())])
        .expect("pax");
    let mut h = Header::new_gnu();
    h.set_path("d/pax").expect("path");
    h.set_size(0);
    h.set_mode(0o644);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    t.builder
        .append(&h, content(99, 3000).as_slice())
        .expect("append");
    t.file("after", b"still parsed");
    let tar = t.finish();

    let host = Host::new();
    let stats = extract_layer(Ragged(&tar, 0), &host.dest()).expect("extract");
    let d = host.dest();
    for (i, &len) in sizes.iter().enumerate() {
        let got = fs::read(d.join(format!("d/f{i}"))).expect("file");
        assert!(
            got == content(i, len),
            "d/f{i}: {} bytes of {len}",
            got.len()
        );
    }
    assert!(fs::read(d.join("d/pax")).expect("pax file") == content(99, 3000));
    assert_eq!(fs::read(d.join("after")).expect("after"), b"still parsed");
    assert_eq!(stats.tar_bytes, tar.len() as u64);
    assert_eq!(
        stats.diff_id.0.as_bytes(),
        &<[u8; 32]>::from(Sha256::digest(&tar))
    );
    let mut played = Vec::new();
    super::tape::play(stats.tape.expect("a tape").as_slice(), &d, &mut played).expect("play");
    assert!(played == tar, "the tape plays back the tar");

    let cut = Host::new();
    let inside = 512
        + tar
            .windows(5)
            .position(|w| w == b"d/f8\0")
            .expect("f8's header");
    expect_err(
        extract_layer(Ragged(&tar[..inside + 1_000_000], 0), &cut.dest()),
        &["truncated", "d/f8"],
    );
}

/// The hashing thread must see every byte once and in order, however the reader is called:
/// a chunk reused too early or skipped would give a wrong `DiffID` for large layers only.
#[test]
fn hashing_reader_digest_matches_across_chunks_and_read_sizes() {
    use std::io::Read as _;

    use super::extract::HashingReader;
    use crate::ids::Digest;

    let data: Vec<u8> = (0..9_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    for read_size in [1, 512, 4096, 1 << 20, 3 << 20] {
        let mut reader = HashingReader::new(Ragged(&data, 0));
        let mut out = Vec::new();
        let mut buf = vec![0; read_size];
        loop {
            let n = reader.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if read_size == 1 && out.len() > 100_000 {
                reader.read_to_end(&mut out).expect("read");
            }
        }
        assert_eq!(out, data, "read size {read_size}");
        assert_eq!(reader.len, data.len() as u64);
        assert_eq!(
            reader.digest(),
            Some(Digest::of(&data)),
            "read size {read_size}"
        );
    }
    let mut counting = HashingReader::counting(&data[..]);
    std::io::copy(&mut counting, &mut std::io::sink()).expect("copy");
    assert_eq!(counting.len, data.len() as u64);
    assert_eq!(counting.digest(), None);
    assert_eq!(HashingReader::new(&b""[..]).digest(), Some(Digest::of(b"")));
}

#[test]
fn sparse_entries_keep_their_holes_and_declaring_too_many_is_refused() {
    let host = Host::new();
    let data = [7u8; 4096];
    let tail = b"end";
    let real = 64 << 20;
    let tar = LayerTar::new()
        .sparse(
            "disk.img",
            &[
                (0, &data[..]),
                ((1 << 20) * 3, &data[..]),
                (real - 3, &tail[..]),
            ],
            real,
        )
        .finish();
    let stats = host.extract(&tar).expect("a sparse file extracts");
    assert_eq!(stats.size, real);
    let path = host.dest().join("disk.img");
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), real);
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "64 MiB declared, 8 KiB stored: {} bytes allocated",
        meta.blocks() * 512
    );
    let bytes = fs::read(&path).unwrap();
    assert_eq!(&bytes[..4096], &data[..]);
    assert!(bytes[4096..3 << 20].iter().all(|&b| b == 0));
    assert_eq!(&bytes[3 << 20..(3 << 20) + 4096], &data[..]);
    assert_eq!(&bytes[bytes.len() - 3..], tail);

    // Refused before a byte of it is read: the holes alone would take seconds of zeros.
    let host = Host::new();
    let over = crate::archive::extract::MAX_SPARSE_HOLES + 4;
    let tar = LayerTar::new()
        .file("first", b"x")
        .sparse("huge", &[(over - 3, &tail[..])], over)
        .finish();
    let err = expect_err(
        host.extract(&tar),
        &["huge", "bytes of holes", "a layer may hold"],
    );
    assert!(matches!(err, ExtractError::Invalid { .. }), "{err:?}");
}
