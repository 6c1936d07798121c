//! Graph drivers: where layer bytes live and how a chain of layers becomes a mount.
//!
//! Vocabulary (after containerd's snapshotter):
//! - a **layer** is one image layer's files, stored once per [`ChainId`](crate::ids::ChainId)
//!   in a directory named by a random [`CacheId`];
//! - a **chain** is a layer and all its parents, bottom first;
//! - a **view** is a read-only mount of a chain (`image mount`);
//! - an **upper** is a container's writable layer over a chain (copy-on-write happens there).
//!
//! Lifecycle of an image layer: the archive code extracts it into `tmp/` in overlay format
//! (whiteouts as 0/0 character devices, opaque directories marked with an xattr); the driver
//! [`Driver::create_layer`] moves it into place; the store commits the record; views and
//! containers mount it; when no image uses it, the store deletes the record and then calls
//! [`Driver::remove_layer`].
//!
//! Drivers never call mount(2): they describe mounts as [`MountSpec`] data, and
//! [`crate::mounts`] carries them out.

mod overlay2;
mod spares;
mod vfs;

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};

pub use overlay2::Overlay2;
pub use vfs::Vfs;
pub(crate) use vfs::copy_tree;

use crate::ids::CacheId;
use crate::mounts::MountSpec;

/// A driver operation failed; the path says where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("unknown storage driver {0:?} (known: overlay2, vfs)")]
    Unknown(String),
    #[error("the {driver} driver does not support {what}")]
    Unsupported {
        driver: &'static str,
        what: &'static str,
    },
}

pub(crate) fn io_err(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DriverError {
    let path = path.to_path_buf();
    move |source| DriverError::Io {
        context,
        path,
        source,
    }
}

/// A layer as placed by a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedLayer {
    /// Short link name (overlay2's `l/<name>`); empty for drivers without one.
    pub short_link: String,
}

/// What the store asks of a storage backend.
pub trait Driver: Send + Sync + Debug {
    /// `overlay2` or `vfs`: the directory name under the store root, and what `system info` shows.
    fn name(&self) -> &'static str;

    /// Moves the staged overlay-format diff `staged` (a directory on the same filesystem) into
    /// place as layer `id` on top of `parent`. On error, `staged` may be left behind for the
    /// caller's `tmp/` cleanup and nothing is left under the driver's home.
    fn create_layer(
        &self,
        id: CacheId,
        parent: Option<CacheId>,
        staged: &Path,
    ) -> Result<PlacedLayer, DriverError>;

    /// Removes a layer's directory (and short link). Idempotent.
    fn remove_layer(&self, id: CacheId, short_link: &str) -> Result<(), DriverError>;

    /// The layer's own changes in overlay format: what `layer export` reads.
    fn diff_dir(&self, id: CacheId) -> PathBuf;

    /// Where the layer's tape is kept, beside its files (see `archive::tape`).
    fn tape_path(&self, id: CacheId) -> PathBuf;

    /// Describes a read-only mount of `chain` (bottom first). Pure: touches nothing.
    fn view(&self, chain: &[(CacheId, String)]) -> MountSpec;

    /// Creates the writable directories of container `id` over `chain` (bottom first).
    /// Idempotent: existing directories are kept (start-up reconcile re-creates lost ones).
    fn create_rw(&self, id: CacheId, chain: &[(CacheId, String)]) -> Result<(), DriverError>;

    /// Describes the read-write mount of container `id` over `chain`. Pure.
    fn rw_mount(&self, id: CacheId, chain: &[(CacheId, String)]) -> MountSpec;

    /// The directory holding everything of container `id` (upper, work, mount point).
    fn container_dir(&self, id: CacheId) -> PathBuf;

    /// Where container `id` is mounted.
    fn merged_dir(&self, id: CacheId) -> PathBuf;

    /// The container's own changes in overlay format (the overlay upper dir).
    fn upper_dir(&self, id: CacheId) -> PathBuf;

    /// Every directory name in the driver's home that could be a layer, for orphan collection.
    fn stored_ids(&self) -> Result<Vec<String>, DriverError>;

    /// Removes a directory found by [`Driver::stored_ids`] that no record names. Its short
    /// link, if it had one, is no record's either: [`Driver::remove_link`] removes it (the
    /// directory's own `link` file is not trusted to name which).
    fn remove_orphan(&self, name: &str) -> Result<(), DriverError>;

    /// What is wrong with stored layer `id` on disk (`fsck`); empty when nothing is.
    fn check_layer(&self, id: CacheId, short_link: &str) -> Vec<LayerDamage>;

    /// Rewrites the layer's [`LayerDamage::Link`] bookkeeping from its record.
    fn repair_layer_link(&self, id: CacheId, short_link: &str) -> Result<(), DriverError>;

    /// Names of the driver's layer links (overlay2's `l/`), for orphan collection; none for
    /// drivers without them.
    fn link_names(&self) -> Result<Vec<String>, DriverError>;

    /// Removes a link found by [`Driver::link_names`] that no record names.
    fn remove_link(&self, name: &str) -> Result<(), DriverError>;
}

/// A stored layer's directory as `fsck` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerDamage {
    /// The layer's files are gone: nothing can bring them back but a re-import.
    Missing(PathBuf),
    /// The short link or the `link` file does not match the record: rewritable.
    Link(String),
}

/// Builds the named driver under `root`.
pub fn by_name(name: &str, root: &Path) -> Result<Box<dyn Driver>, DriverError> {
    match name {
        "overlay2" => Ok(Box::new(Overlay2::new(root)?)),
        "vfs" => Ok(Box::new(Vfs::new(root)?)),
        other => Err(DriverError::Unknown(other.to_owned())),
    }
}

/// Creates `path` with mode 0700 if missing.
pub(crate) fn ensure_dir(path: &Path) -> Result<(), DriverError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err("creating", path))
}

/// fsyncs a directory so a rename into it survives a crash.
pub(crate) fn sync_dir(path: &Path) -> Result<(), DriverError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", path))
}
