//! vfs: full copies, no overlay, for filesystems overlayfs cannot sit on. Each layer keeps its
//! overlay-format `diff/` (for export and sizes) and a complete `fs/` tree: its parent's tree
//! with the diff applied (whiteouts delete, opaque directories are emptied first). A view is a
//! read-only bind mount of the top layer's `fs/`. Space grows with every layer; that is the
//! price of working anywhere.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::overlay2::{list_names, remove_tree};
use super::{Driver, DriverError, LayerDamage, PlacedLayer, ensure_dir, io_err, sync_dir};
use crate::ids::CacheId;
use crate::mounts::MountSpec;

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

#[derive(Debug)]
pub struct Vfs {
    home: PathBuf,
}

impl Vfs {
    /// Uses (creating) `<root>/vfs`.
    pub fn new(root: &Path) -> Result<Self, DriverError> {
        let home = root.join("vfs");
        ensure_dir(&home)?;
        Ok(Self { home })
    }
}

impl Driver for Vfs {
    fn name(&self) -> &'static str {
        "vfs"
    }

    fn create_layer(
        &self,
        id: CacheId,
        parent: Option<CacheId>,
        staged: &Path,
    ) -> Result<PlacedLayer, DriverError> {
        let dir = self.home.join(id.hex());
        let built = (|| {
            ensure_dir(&dir)?;
            let diff = dir.join("diff");
            fs::rename(staged, &diff).map_err(io_err("moving staged layer to", &diff))?;
            let tree = dir.join("fs");
            match parent {
                Some(p) => copy_tree(&self.home.join(p.hex()).join("fs"), &tree)?,
                None => ensure_dir(&tree)?,
            }
            apply_diff(&diff, &tree)?;
            sync_dir(&dir)?;
            sync_dir(&self.home)
        })();
        if built.is_err() {
            let _ = remove_tree(&dir);
        }
        built.map(|()| PlacedLayer {
            short_link: String::new(),
        })
    }

    fn remove_layer(&self, id: CacheId, _short_link: &str) -> Result<(), DriverError> {
        remove_tree(&self.home.join(id.hex()))
    }

    fn diff_dir(&self, id: CacheId) -> PathBuf {
        self.home.join(id.hex()).join("diff")
    }

    fn tape_path(&self, id: CacheId) -> PathBuf {
        self.home.join(id.hex()).join("tape")
    }

    fn view(&self, chain: &[(CacheId, String)]) -> MountSpec {
        let top = chain.last().map_or_else(
            || self.home.clone(),
            |(id, _)| self.home.join(id.hex()).join("fs"),
        );
        MountSpec::Bind {
            source: top,
            readonly: true,
        }
    }

    fn create_rw(&self, _id: CacheId, _chain: &[(CacheId, String)]) -> Result<(), DriverError> {
        Err(DriverError::Unsupported {
            driver: "vfs",
            what: "containers yet (use overlay2)",
        })
    }

    fn rw_mount(&self, id: CacheId, _chain: &[(CacheId, String)]) -> MountSpec {
        MountSpec::Bind {
            source: self.home.join(id.hex()).join("fs"),
            readonly: false,
        }
    }

    fn container_dir(&self, id: CacheId) -> PathBuf {
        self.home.join(id.hex())
    }

    fn merged_dir(&self, id: CacheId) -> PathBuf {
        self.home.join(id.hex()).join("merged")
    }

    fn upper_dir(&self, id: CacheId) -> PathBuf {
        self.home.join(id.hex()).join("fs")
    }

    fn stored_ids(&self) -> Result<Vec<String>, DriverError> {
        list_names(&self.home, &[])
    }

    fn remove_orphan(&self, name: &str) -> Result<(), DriverError> {
        remove_tree(&self.home.join(name))
    }

    fn check_layer(&self, id: CacheId, _short_link: &str) -> Vec<LayerDamage> {
        let dir = self.home.join(id.hex());
        ["diff", "fs"]
            .iter()
            .map(|sub| dir.join(sub))
            .filter(|d| !d.is_dir())
            .map(LayerDamage::Missing)
            .collect()
    }

    fn repair_layer_link(&self, _id: CacheId, _short_link: &str) -> Result<(), DriverError> {
        Ok(())
    }

    fn link_names(&self) -> Result<Vec<String>, DriverError> {
        Ok(Vec::new())
    }

    fn remove_link(&self, _name: &str) -> Result<(), DriverError> {
        Err(DriverError::Unsupported {
            driver: "vfs",
            what: "short links",
        })
    }
}

/// Hardlinks seen so far in one copy: source inode -> first destination path.
type LinkMap = HashMap<(u64, u64), PathBuf>;

/// Copies the tree at `src` to a new `dst`, keeping types, owners, modes, xattrs, times and
/// hardlinks.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<(), DriverError> {
    let mut links = LinkMap::new();
    let mut dirs = Vec::new();
    copy_node(src, dst, &mut links, &mut dirs, &[])?;
    finish_dirs(&dirs)
}

/// Applies an overlay-format diff onto a full tree.
fn apply_diff(diff: &Path, tree: &Path) -> Result<(), DriverError> {
    let mut links = LinkMap::new();
    let mut dirs = Vec::new();
    apply_dir(diff, tree, &mut links, &mut dirs)?;
    finish_dirs(&dirs)
}

fn apply_dir(
    diff: &Path,
    tree: &Path,
    links: &mut LinkMap,
    dirs: &mut Vec<(PathBuf, fs::Metadata)>,
) -> Result<(), DriverError> {
    let mut entries: Vec<_> = fs::read_dir(diff)
        .map_err(io_err("listing", diff))?
        .collect::<Result<_, _>>()
        .map_err(io_err("listing", diff))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let src = entry.path();
        let dst = tree.join(entry.file_name());
        let meta = fs::symlink_metadata(&src).map_err(io_err("reading", &src))?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            remove_any(&dst)?;
            continue;
        }
        let existing = fs::symlink_metadata(&dst).ok();
        if ft.is_dir() {
            let opaque = xattr::get(&src, OPAQUE_XATTR)
                .ok()
                .flatten()
                .is_some_and(|v| v == b"y");
            match existing {
                Some(m) if m.is_dir() && !opaque => {}
                Some(_) => {
                    remove_any(&dst)?;
                    fs::create_dir(&dst).map_err(io_err("creating", &dst))?;
                }
                None => fs::create_dir(&dst).map_err(io_err("creating", &dst))?,
            }
            apply_dir(&src, &dst, links, dirs)?;
            copy_owner_mode_xattrs(&src, &dst, &meta, &[OPAQUE_XATTR])?;
            dirs.push((dst, meta));
        } else {
            if existing.is_some() {
                remove_any(&dst)?;
            }
            copy_node(&src, &dst, links, dirs, &[])?;
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> Result<(), DriverError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io_err("removing", path)),
        Ok(_) => fs::remove_file(path).map_err(io_err("removing", path)),
        Err(_) => Ok(()),
    }
}

fn copy_node(
    src: &Path,
    dst: &Path,
    links: &mut LinkMap,
    dirs: &mut Vec<(PathBuf, fs::Metadata)>,
    skip_xattrs: &[&str],
) -> Result<(), DriverError> {
    let meta = fs::symlink_metadata(src).map_err(io_err("reading", src))?;
    let ft = meta.file_type();
    if !ft.is_dir() && meta.nlink() > 1 {
        if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
            return fs::hard_link(first, dst).map_err(io_err("linking", dst));
        }
        links.insert((meta.dev(), meta.ino()), dst.to_path_buf());
    }
    if ft.is_dir() {
        fs::create_dir(dst).map_err(io_err("creating", dst))?;
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(io_err("listing", src))?
            .collect::<Result<_, _>>()
            .map_err(io_err("listing", src))?;
        entries.sort_by_key(fs::DirEntry::file_name);
        for e in entries {
            copy_node(
                &e.path(),
                &dst.join(e.file_name()),
                links,
                dirs,
                skip_xattrs,
            )?;
        }
        copy_owner_mode_xattrs(src, dst, &meta, skip_xattrs)?;
        dirs.push((dst.to_path_buf(), meta));
        return Ok(());
    }
    if ft.is_symlink() {
        let target = fs::read_link(src).map_err(io_err("reading link", src))?;
        std::os::unix::fs::symlink(&target, dst).map_err(io_err("creating symlink", dst))?;
    } else if ft.is_file() {
        fs::copy(src, dst).map_err(io_err("copying to", dst))?;
    } else {
        let kind = if ft.is_fifo() {
            nix::sys::stat::SFlag::S_IFIFO
        } else if ft.is_char_device() {
            nix::sys::stat::SFlag::S_IFCHR
        } else if ft.is_block_device() {
            nix::sys::stat::SFlag::S_IFBLK
        } else {
            nix::sys::stat::SFlag::S_IFSOCK
        };
        nix::sys::stat::mknod(
            dst,
            kind,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            meta.rdev(),
        )
        .map_err(|e| io_err("creating node", dst)(e.into()))?;
    }
    copy_owner_mode_xattrs(src, dst, &meta, skip_xattrs)?;
    set_times(dst, &meta)
}

fn copy_owner_mode_xattrs(
    src: &Path,
    dst: &Path,
    meta: &fs::Metadata,
    skip: &[&str],
) -> Result<(), DriverError> {
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
        .map_err(io_err("chown", dst))?;
    if !meta.file_type().is_symlink() {
        // After chown, which clears setuid/setgid.
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err("chmod", dst))?;
    }
    if let Ok(names) = xattr::list(src) {
        for name in names {
            if skip.iter().any(|s| name.as_encoded_bytes() == s.as_bytes()) {
                continue;
            }
            if let Some(value) = xattr::get(src, &name).map_err(io_err("reading xattr of", src))? {
                xattr::set(dst, &name, &value).map_err(io_err("setting xattr on", dst))?;
            }
        }
    }
    Ok(())
}

fn set_times(dst: &Path, meta: &fs::Metadata) -> Result<(), DriverError> {
    let atime = filetime::FileTime::from_last_access_time(meta);
    let mtime = filetime::FileTime::from_last_modification_time(meta);
    filetime::set_symlink_file_times(dst, atime, mtime).map_err(io_err("setting times on", dst))
}

/// Directory times last, once nothing more is written inside them.
fn finish_dirs(dirs: &[(PathBuf, fs::Metadata)]) -> Result<(), DriverError> {
    for (dir, meta) in dirs {
        set_times(dir, meta)?;
    }
    Ok(())
}
