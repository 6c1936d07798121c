//! Layer tars from the fuzzer, applied by `archive::extract_layer` (what image import runs on
//! every layer) to a layer directory inside a store-shaped root.
//!
//! Asserts, for every input: the call returns (`Ok` or an `ExtractError`) instead of
//! panicking; nothing outside the layer directory was created, changed or removed (content,
//! mode, owner, times, inode, link count, xattrs); the layer directory itself is still a
//! directory; a successful call hashed and counted exactly the input; and its tape, if it
//! recorded one, plays back to exactly the input (what `layer export` relies on).
//!
//! The root is made once per process, not per input: every input asserts that the tree outside
//! the layer directory is as it was, so each input starts from the same state at a fraction of
//! the cost. Only the layer directory is fresh each time. Run as root (like the tests): owners,
//! device nodes and `trusted.*` xattrs need it, and without it most entries fail early.
//!
//! Escapes to absolute host paths outside the root (`/etc/...`) would not show in the snapshot;
//! the seeds aim absolute names and symlinks at the root's own sentinels instead.
//!
//! Run it with `-detect_leaks=0` (`cargo xtask fuzz` does): after a failed extraction the
//! store's hashing thread, detached, may still be draining its queue when the leak sanitizer
//! looks, which then reports a leak now and then.
//!
//! Files are capped at [`MAX_FILE_BYTES`]: a GNU sparse entry of a few hundred bytes can
//! declare up to 16 GiB of holes per layer, which extraction keeps as holes but reads through
//! as zeros (seconds per input; see Fuzzing in README.md). Past the cap a write or the final
//! length fails with `EFBIG`, and extraction returns an I/O error like any other.
#![no_main]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};
use strata_store::archive::extract_layer;
use strata_store::fuzzing::play_tape;

/// The store root, shaped like `/var/lib/strata` while a layer is being imported.
struct StoreRoot {
    dir: tempfile::TempDir,
}

/// What a snapshot records of one path outside the layer directory.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    mode: u32,
    uid: u32,
    gid: u32,
    ino: u64,
    nlink: u64,
    rdev: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// File content or symlink target.
    data: Vec<u8>,
    xattrs: Vec<(OsString, Option<Vec<u8>>)>,
}

static ROOT: OnceLock<StoreRoot> = OnceLock::new();

/// Far more than any file in an input of libFuzzer's size limits, far less than a disk.
const MAX_FILE_BYTES: libc::rlim_t = 64 << 20;

/// Lowers the soft file-size limit to [`MAX_FILE_BYTES`], and makes crossing it an `EFBIG`
/// error rather than the `SIGXFSZ` that would end the process (libFuzzer's handler would
/// report it as a crash).
fn cap_file_size() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the one struct passed; signal() installs
    // SIG_IGN, which runs no code.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &raw mut limit), 0);
        limit.rlim_cur = limit.rlim_cur.min(MAX_FILE_BYTES);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &raw const limit), 0);
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// libFuzzer leaves with `exit()` when its time is up, which runs no Rust destructors: remove
/// the root from an `atexit` handler so runs leave nothing in the temp dir. After a crash
/// (`_Exit`) the root stays, to look at.
extern "C" fn remove_root() {
    if let Some(root) = ROOT.get() {
        let _ = fs::remove_dir_all(root.dir.path());
    }
}

impl StoreRoot {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("strata-fuzz-archive-")
            .tempdir()
            .expect("creating the fuzz store root");
        let root = dir.path();
        let cache_id = "ab".repeat(32);
        let diff = root.join("overlay2").join(&cache_id).join("diff");
        fs::create_dir_all(diff.join("etc")).expect("layer dir");
        fs::write(diff.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").expect("sentinel");
        fs::create_dir_all(root.join("overlay2/l")).expect("short links");
        symlink(
            format!("../{cache_id}/diff"),
            root.join("overlay2/l/ABCDEFGH"),
        )
        .expect("link");
        fs::write(root.join("meta.redb"), b"the database").expect("sentinel");
        fs::create_dir_all(root.join("volumes/data/_data")).expect("volume");
        fs::write(root.join("volumes/data/_data/file"), b"volume data").expect("sentinel");
        // A sibling staging directory, as a concurrent import of another layer would have.
        fs::create_dir_all(root.join("tmp/layer-other")).expect("sibling");
        fs::write(root.join("tmp/layer-other/file"), b"other layer").expect("sentinel");
        xattr::set(root.join("meta.redb"), "user.strata", b"sentinel").expect("xattr");
        // SAFETY: `remove_root` is a plain function that stays valid for the whole process.
        unsafe { libc::atexit(remove_root) };
        cap_file_size();
        Self { dir }
    }

    fn layer_dir(&self) -> PathBuf {
        self.dir.path().join("tmp/layer-fuzz")
    }

    /// Every path under the root except the layer directory and what is below it.
    fn snapshot(&self) -> BTreeMap<PathBuf, Node> {
        let layer = self.layer_dir();
        let mut out = BTreeMap::new();
        let mut pending = vec![self.dir.path().to_path_buf()];
        while let Some(path) = pending.pop() {
            let meta = fs::symlink_metadata(&path).expect("lstat outside the layer");
            let kind = meta.file_type();
            let data = if kind.is_file() {
                fs::read(&path).expect("reading a file outside the layer")
            } else if kind.is_symlink() {
                fs::read_link(&path)
                    .expect("readlink outside the layer")
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                Vec::new()
            };
            if kind.is_dir() {
                for entry in fs::read_dir(&path).expect("listing a directory outside the layer") {
                    let child = entry.expect("directory entry").path();
                    if child != layer {
                        pending.push(child);
                    }
                }
            }
            let xattrs = xattr::list(&path)
                .expect("listing xattrs")
                .map(|name| {
                    let value = xattr::get(&path, &name).expect("reading an xattr");
                    (name, value)
                })
                .collect();
            let node = Node {
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                ino: meta.ino(),
                nlink: meta.nlink(),
                rdev: meta.rdev(),
                size: meta.size(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ctime: (meta.ctime(), meta.ctime_nsec()),
                data,
                xattrs,
            };
            out.insert(path, node);
        }
        out
    }
}

/// The paths whose snapshot differs, for the panic message.
fn differences(before: &BTreeMap<PathBuf, Node>, after: &BTreeMap<PathBuf, Node>) -> String {
    let mut lines = Vec::new();
    for (path, node) in before {
        match after.get(path) {
            None => lines.push(format!("removed {}", path.display())),
            Some(now) if now != node => {
                lines.push(format!("changed {}: {node:?} -> {now:?}", path.display()));
            }
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        lines.push(format!("created {}", path.display()));
    }
    lines.join("\n")
}

fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

fuzz_target!(|data: &[u8]| {
    let root = ROOT.get_or_init(StoreRoot::new);
    let layer = root.layer_dir();
    fs::create_dir(&layer).expect("creating the layer directory");
    let before = root.snapshot();

    let result = extract_layer(data, &layer);

    let after = root.snapshot();
    assert!(
        before == after,
        "extracting the layer touched the store outside it ({result:?}):\n{}",
        differences(&before, &after)
    );
    assert!(
        is_real_dir(&layer),
        "the layer directory is no longer a directory ({result:?})"
    );
    match result {
        Ok(stats) => {
            assert_eq!(stats.tar_bytes, data.len() as u64, "tar_bytes");
            let digest: [u8; 32] = Sha256::digest(data).into();
            assert_eq!(stats.diff_id.0.as_bytes(), &digest, "diff_id");
            if let Some(tape) = &stats.tape {
                let played = play_tape(tape, &layer).expect("the recorded tape plays back");
                assert!(
                    played == data,
                    "the tape played back {} bytes that differ from the {}-byte input",
                    played.len(),
                    data.len()
                );
            }
        }
        // The message is what import shows the user: building it must not panic either.
        Err(e) => drop(e.to_string()),
    }
    // std's remove_dir_all does not follow symlinks (CVE-2022-21658 fixed), so whatever the
    // layer left inside is removed without reaching outside it.
    fs::remove_dir_all(&layer).expect("removing the layer directory");
});
