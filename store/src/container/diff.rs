//! `container diff`: what changed in the writable layer, as `docker diff` prints it.
//!
//! The upper dir holds every change in overlay format: a 0/0 character device is a deletion,
//! an `trusted.overlay.opaque=y` directory replaced the lower one, anything else was added or
//! changed. Added versus changed needs the lower tree, so the image chain is mounted
//! read-only for the walk and each path is looked up there: overlayfs resolves whiteouts and
//! opaque directories of the lower layers exactly as the container sees them.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::resolve_container;
use crate::error::Error;
use crate::ids::CacheId;
use crate::meta::Reads;
use crate::mounts;
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    #[serde(rename = "A")]
    Added,
    #[serde(rename = "C")]
    Changed,
    #[serde(rename = "D")]
    Deleted,
}

/// One line of `container diff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    /// Absolute path inside the container.
    pub path: String,
}

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// A read-only mount removed on drop.
struct TempMount(PathBuf);

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Err(e) = mounts::unmount(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "could not unmount temporary view");
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

impl Store {
    /// Changes in the container's writable layer, sorted by path.
    pub fn container_changes(&self, reference: &str) -> Result<Vec<Change>, Error> {
        let (upper, lower) = {
            let r = self.db.read()?;
            let c = resolve_container(&r, reference)?;
            let mut chain = Vec::with_capacity(c.chain.len());
            for id in &c.chain {
                let l = r.layer(id)?.ok_or_else(|| Error::NotFound {
                    kind: "layer",
                    name: id.to_string(),
                })?;
                chain.push((l.cache_id, l.short_link));
            }
            let target = self.tmp_dir().join(format!("diff-{}", CacheId::random()));
            std::fs::create_dir(&target).map_err(Error::io("creating", &target))?;
            if let Err(e) = mounts::mount(&self.driver.view(&chain), &target) {
                let _ = std::fs::remove_dir(&target);
                return Err(e.into());
            }
            (self.driver.upper_dir(c.id), TempMount(target))
        };
        let mut changes = Vec::new();
        walk(&upper, &lower.0, Path::new(""), false, &mut changes)?;
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(changes)
    }
}

fn walk(
    upper: &Path,
    lower: &Path,
    rel: &Path,
    parent_opaque: bool,
    out: &mut Vec<Change>,
) -> Result<(), Error> {
    let dir = upper.join(rel);
    let entries = std::fs::read_dir(&dir).map_err(Error::io("listing", &dir))?;
    for entry in entries {
        let entry = entry.map_err(Error::io("listing", &dir))?;
        let rel_path = rel.join(entry.file_name());
        let path = upper.join(&rel_path);
        let meta = std::fs::symlink_metadata(&path).map_err(Error::io("reading", &path))?;
        let shown = format!("/{}", rel_path.display());
        let in_lower = !parent_opaque && std::fs::symlink_metadata(lower.join(&rel_path)).is_ok();
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            if in_lower {
                out.push(Change {
                    kind: ChangeKind::Deleted,
                    path: shown,
                });
            }
            continue;
        }
        out.push(Change {
            kind: if in_lower {
                ChangeKind::Changed
            } else {
                ChangeKind::Added
            },
            path: shown,
        });
        if meta.is_dir() {
            let opaque = xattr::get(&path, OPAQUE_XATTR)
                .ok()
                .flatten()
                .is_some_and(|v| v == b"y");
            walk(
                upper,
                lower,
                &rel_path,
                parent_opaque || opaque || !in_lower,
                out,
            )?;
        }
    }
    Ok(())
}
