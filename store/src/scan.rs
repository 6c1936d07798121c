//! The copy-up scanner: what each container's writable layer holds, measured from the files,
//! for hosts where the eBPF probe cannot run (and for `rw_bytes` everywhere).
//!
//! A regular file in the upper dir that also exists in a lower layer (not hidden by a
//! whiteout or an opaque directory above it) is a copy-up; its size counts as copied-up bytes.
//! Directories whose mtime and ctime have not changed since the last scan reuse their entry
//! list and classification, so a re-scan of an unchanged tree costs one `stat` per entry and
//! no lower-layer lookups.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;
use crate::ids::CacheId;
use crate::meta::Reads;
use crate::store::{Store, now};

/// One container's writable layer, measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LayerScan {
    /// Bytes of regular files in the upper dir (hardlinks once).
    pub rw_bytes: u64,
    /// Regular files that shadow a lower file.
    pub copied_up_files: u64,
    /// Their bytes.
    pub copied_up_bytes: u64,
}

/// A directory as last seen: its change times and its entries, classified.
#[derive(Debug, Clone)]
struct DirMemo {
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// `(name, is_dir, copied_up)` for each entry that is a regular file or a directory.
    entries: Vec<(std::ffi::OsString, bool, bool)>,
}

/// What the scanner remembers between runs, per container.
#[derive(Debug, Default)]
pub struct ScanCache {
    dirs: HashMap<CacheId, HashMap<PathBuf, DirMemo>>,
}

/// Whether `rel` exists in the lower layers (top first), honouring whiteouts and opaque
/// directories the way overlayfs does.
fn in_lower(lowers: &[PathBuf], rel: &Path) -> bool {
    for layer in lowers {
        let path = layer.join(rel);
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            return !(meta.file_type().is_char_device() && meta.rdev() == 0);
        }
        // An opaque ancestor in this layer hides everything below it in deeper layers.
        let mut ancestor = rel.parent();
        while let Some(dir) = ancestor.filter(|d| !d.as_os_str().is_empty()) {
            if xattr::get(layer.join(dir), "trusted.overlay.opaque")
                .ok()
                .flatten()
                .is_some_and(|v| v == b"y")
            {
                return false;
            }
            ancestor = dir.parent();
        }
    }
    false
}

fn times(meta: &std::fs::Metadata) -> ((i64, i64), (i64, i64)) {
    (
        (meta.mtime(), meta.mtime_nsec()),
        (meta.ctime(), meta.ctime_nsec()),
    )
}

fn scan_dir(
    upper: &Path,
    rel: &Path,
    hidden: bool,
    lowers: &[PathBuf],
    memo: &mut HashMap<PathBuf, DirMemo>,
    seen_inodes: &mut std::collections::HashSet<u64>,
    out: &mut LayerScan,
) {
    let dir = upper.join(rel);
    let Ok(meta) = std::fs::symlink_metadata(&dir) else {
        return;
    };
    let (mtime, ctime) = times(&meta);
    // Below an opaque upper directory nothing of the lower layers shows: all files are new.
    let hidden = hidden
        || xattr::get(&dir, "trusted.overlay.opaque")
            .ok()
            .flatten()
            .is_some_and(|v| v == b"y");
    let cached = memo
        .get(rel)
        .filter(|m| m.mtime == mtime && m.ctime == ctime)
        .map(|m| m.entries.clone());
    let entries = if let Some(entries) = cached {
        entries
    } else {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            let child = rel.join(entry.file_name());
            if ft.is_dir() {
                entries.push((entry.file_name(), true, false));
            } else if ft.is_file() {
                entries.push((
                    entry.file_name(),
                    false,
                    !hidden && in_lower(lowers, &child),
                ));
            }
        }
        memo.insert(
            rel.to_path_buf(),
            DirMemo {
                mtime,
                ctime,
                entries: entries.clone(),
            },
        );
        entries
    };
    for (name, is_dir, copied_up) in entries {
        let child = rel.join(&name);
        if is_dir {
            scan_dir(upper, &child, hidden, lowers, memo, seen_inodes, out);
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(upper.join(&child)) else {
            continue;
        };
        if meta.nlink() > 1 && !seen_inodes.insert(meta.ino()) {
            continue;
        }
        out.rw_bytes += meta.len();
        if copied_up {
            out.copied_up_files += 1;
            out.copied_up_bytes += meta.len();
        }
    }
}

impl Store {
    /// Scans every container's writable layer and records its size (`rw_size`), so listings
    /// stay O(records). `cache` carries directory memos between runs.
    pub fn scan_writable_layers(
        &self,
        cache: &mut ScanCache,
    ) -> Result<HashMap<CacheId, LayerScan>, Error> {
        let (containers, layers) = {
            let r = self.db.read()?;
            let layers: HashMap<_, _> = r
                .layers()?
                .into_iter()
                .map(|l| (l.chain_id, l.cache_id))
                .collect();
            (r.containers()?, layers)
        };
        let mut results = HashMap::new();
        for c in &containers {
            let lowers: Vec<PathBuf> = c
                .chain
                .iter()
                .rev()
                .filter_map(|chain| layers.get(chain))
                .map(|id| self.driver.diff_dir(*id))
                .collect();
            let memo = cache.dirs.entry(c.id).or_default();
            let mut scan = LayerScan::default();
            let mut inodes = std::collections::HashSet::new();
            scan_dir(
                &self.driver.upper_dir(c.id),
                Path::new(""),
                false,
                &lowers,
                memo,
                &mut inodes,
                &mut scan,
            );
            results.insert(c.id, scan);
        }
        cache.dirs.retain(|id, _| results.contains_key(id));
        let txn = self.db.write()?;
        let at = now();
        for (id, scan) in &results {
            if let Some(mut c) = txn.container(id)? {
                c.rw_size = Some((scan.rw_bytes, at));
                txn.put_container(&c)?;
            }
        }
        txn.commit()?;
        Ok(results)
    }
}
