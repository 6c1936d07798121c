//! The store: a root directory holding `meta.redb`, a driver home and `tmp/`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::container::MountTable;
use crate::driver::{self, Driver};
use crate::error::{Error, OpenError};
use crate::ids::CacheId;
use crate::janitor::Janitor;
use crate::meta::{DbLock, MetaDb, Reads, SCHEMA_VERSION};
use crate::mounts;

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub root: PathBuf,
    /// `overlay2` (default) or `vfs`.
    pub driver: String,
}

impl StoreOptions {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            driver: "overlay2".into(),
        }
    }
}

/// What start-up reconcile found and did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReconcileReport {
    pub removed_tmp: Vec<PathBuf>,
    pub removed_orphans: Vec<String>,
    pub unmounted_stale: Vec<PathBuf>,
    pub reset_views: Vec<String>,
    /// Container overlays the kernel had mounted, adopted as one mount reference each.
    pub adopted_mounts: Vec<PathBuf>,
}

/// An open store. Shareable across threads; write operations serialise on redb's write lock.
pub struct Store {
    pub(crate) root: PathBuf,
    pub(crate) db: MetaDb,
    pub(crate) driver: Box<dyn Driver>,
    /// Processes started by `exec`, per container: they live only as long as this process,
    /// so they are not recorded in the database.
    execs: Mutex<HashMap<CacheId, Vec<i32>>>,
    /// Told when container overlays come and go (the daemon's copy-up attribution).
    observer: std::sync::RwLock<Option<MountObserver>>,
    /// Mount references per container; the kernel's mount table is their truth at start-up.
    pub(crate) container_mounts: Arc<MountTable>,
    /// Deletes discarded directories and finishes unmounts in the background.
    pub(crate) janitor: Janitor,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("driver", &self.driver.name())
            .finish_non_exhaustive()
    }
}

/// A container's merged overlay was mounted, or is about to be unmounted. `dev` is the
/// overlay's device number as `stat(2)` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountEvent {
    Mounted { container: CacheId, dev: u64 },
    Unmounting { container: CacheId, dev: u64 },
}

/// A callback for [`MountEvent`]s. It runs on the thread doing the mount; keep it short.
pub type MountObserver = Box<dyn Fn(MountEvent) + Send + Sync>;

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// Opens the store at `opts.root` (creating it), migrates the database, and reconciles the
    /// directories with the records (see [`ReconcileReport`]). Fails with
    /// [`crate::meta::MetaError::Locked`] when another process has the database open.
    pub fn open(opts: &StoreOptions) -> Result<(Self, ReconcileReport), Error> {
        let root = &opts.root;
        for dir in [root.clone(), root.join("tmp"), root.join("views")] {
            driver::ensure_dir(&dir).map_err(OpenError::from)?;
        }
        let root = root.canonicalize().map_err(|source| OpenError::Root {
            path: root.clone(),
            source,
        })?;
        let lock = DbLock::acquire(&root.join("meta.redb")).map_err(OpenError::from)?;
        Self::open_locked(root, &opts.driver, lock)
    }

    /// [`Store::open`] of the canonical `root`, its database's lock already taken.
    pub(crate) fn open_locked(
        root: PathBuf,
        driver: &str,
        lock: DbLock,
    ) -> Result<(Self, ReconcileReport), Error> {
        let db = MetaDb::open_locked(&root.join("meta.redb"), lock).map_err(OpenError::from)?;
        let driver = driver::by_name(driver, &root).map_err(OpenError::from)?;
        let janitor = Janitor::start().map_err(OpenError::Janitor)?;
        let store = Self {
            root,
            db,
            driver,
            execs: Mutex::new(HashMap::new()),
            observer: std::sync::RwLock::new(None),
            container_mounts: Arc::default(),
            janitor,
        };
        let report = store.reconcile()?;
        Ok((store, report))
    }

    /// Registers the observer of container mounts (one; a second call replaces it).
    pub fn set_mount_observer(&self, observer: MountObserver) {
        *self
            .observer
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(observer);
    }

    /// Tells the observer, if any, about a container mount that exists at `merged`.
    pub(crate) fn notify_mount(&self, container: CacheId, merged: &Path, mounted: bool) {
        use std::os::unix::fs::MetadataExt;
        let guard = self
            .observer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (Some(observer), Ok(meta)) = (guard.as_ref(), std::fs::metadata(merged)) else {
            return;
        };
        let dev = meta.dev();
        observer(if mounted {
            MountEvent::Mounted { container, dev }
        } else {
            MountEvent::Unmounting { container, dev }
        });
    }

    /// Device numbers of every mounted container overlay, for an observer starting up.
    pub fn mounted_container_devices(&self) -> Vec<(CacheId, u64)> {
        use std::os::unix::fs::MetadataExt;
        self.container_mounts
            .mounted()
            .into_keys()
            .filter_map(|id| {
                std::fs::metadata(self.driver.merged_dir(id))
                    .ok()
                    .map(|m| (id, m.dev()))
            })
            .collect()
    }

    /// Removes a directory whose record is gone: renamed into `tmp/` at once (one syscall, so
    /// the caller need not wait for a deep tree), deleted by the janitor. A crash in between
    /// leaves it in `tmp/`, which start-up empties.
    pub(crate) fn discard(&self, dir: &Path) -> Result<(), Error> {
        if let Some(trash) = self.move_to_trash(dir)? {
            self.janitor.delete(trash);
        }
        Ok(())
    }

    /// [`Self::discard`] for the directory of an overlay just released (`release_overlay`):
    /// the janitor deletes it only after that overlay's teardown.
    pub(crate) fn discard_after_teardown(&self, dir: &Path) -> Result<(), Error> {
        if let Some(trash) = self.move_to_trash(dir)? {
            self.janitor.delete_after_releases(trash);
        }
        Ok(())
    }

    /// Renames `dir` into `tmp/`; `None` if it was not there.
    fn move_to_trash(&self, dir: &Path) -> Result<Option<PathBuf>, Error> {
        let trash = self
            .tmp_dir()
            .join(format!("discard-{}", CacheId::random()));
        match std::fs::rename(dir, &trash) {
            Ok(()) => Ok(Some(trash)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("moving to the trash", dir)(e)),
        }
    }

    pub(crate) fn track_exec(&self, id: CacheId, pid: i32, running: bool) {
        let mut execs = self
            .execs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pids = execs.entry(id).or_default();
        if running {
            pids.push(pid);
        } else {
            pids.retain(|p| *p != pid);
        }
    }

    pub(crate) fn exec_pids(&self, id: CacheId) -> Vec<i32> {
        let execs = self
            .execs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        execs.get(&id).cloned().unwrap_or_default()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn driver_name(&self) -> &'static str {
        self.driver.name()
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn views_dir(&self) -> PathBuf {
        self.root.join("views")
    }

    /// The database is the truth: empty `tmp/`, unmount what no record wants mounted, and
    /// remove driver directories that no record names.
    fn reconcile(&self) -> Result<ReconcileReport, Error> {
        let mut report = ReconcileReport::default();
        let tmp = self.tmp_dir();
        for entry in std::fs::read_dir(&tmp).map_err(Error::io("listing", &tmp))? {
            let path = entry.map_err(Error::io("listing", &tmp))?.path();
            if mounts::mounts_under(&path)
                .map_err(Error::io("reading mountinfo for", &path))?
                .is_empty()
            {
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(Error::io("removing", &path))?;
                tracing::info!(path = %path.display(), "removed leftover staging");
                report.removed_tmp.push(path);
            }
        }

        let views = self.views_dir();
        let mounted: HashSet<PathBuf> = mounts::mounts_under(&views)
            .map_err(Error::io("reading mountinfo for", &views))?
            .into_iter()
            .collect();
        let txn = self.db.write()?;
        let mut wanted = HashSet::new();
        for mut image in txn.images()? {
            if image.view_mounts == 0 {
                continue;
            }
            let path = views.join(image.id.0.hex());
            if mounted.contains(&path) {
                wanted.insert(path);
            } else {
                tracing::info!(image = %image.id, "view was mounted before a restart; resetting its mount count");
                report.reset_views.push(image.id.to_string());
                image.view_mounts = 0;
                txn.put_image(&image)?;
            }
        }
        let layers = txn.layers()?;
        let containers = txn.containers()?;
        let all_mounts: HashSet<PathBuf> = mounts::mounts_under(&self.root)
            .map_err(Error::io("reading mountinfo for", &self.root))?
            .into_iter()
            .collect();
        for c in &containers {
            let merged = self.driver.merged_dir(c.id);
            if !merged.exists() {
                // A crash right after `create` may lose its (unsynced, still empty) dirs.
                tracing::info!(container = %c.name, "re-creating the container's directories");
                let mut chain = Vec::with_capacity(c.chain.len());
                for id in &c.chain {
                    if let Some(l) = txn.layer(id)? {
                        chain.push((l.cache_id, l.short_link));
                    }
                }
                self.driver.create_rw(c.id, &chain)?;
            }
            if all_mounts.contains(&merged) {
                tracing::info!(container = %c.name, "adopting the container's mount as one reference");
                self.container_mounts.adopt(c.id);
                self.janitor.hold(c.id, merged.clone());
                report.adopted_mounts.push(merged);
            }
        }
        txn.commit()?;
        for path in mounted.difference(&wanted) {
            mounts::unmount(path)?;
            tracing::info!(path = %path.display(), "unmounted stale view");
            report.unmounted_stale.push(path.clone());
        }
        for entry in std::fs::read_dir(&views).map_err(Error::io("listing", &views))? {
            let path = entry.map_err(Error::io("listing", &views))?.path();
            if !wanted.contains(&path) {
                std::fs::remove_dir(&path).map_err(Error::io("removing", &path))?;
            }
        }

        self.remove_orphans(&layers, &containers, &mut report)?;
        Ok(report)
    }

    /// The driver's directories no layer or container record names, and its short links no
    /// layer names (start-up removes them; fsck reports them).
    pub(crate) fn unnamed_driver_entries(
        &self,
        layers: &[crate::meta::LayerRecord],
        containers: &[crate::meta::ContainerRecord],
    ) -> Result<UnnamedEntries, Error> {
        let named: HashSet<String> = layers
            .iter()
            .map(|l| l.cache_id.hex())
            .chain(containers.iter().map(|c| c.id.hex()))
            .collect();
        let links: HashSet<&str> = layers.iter().map(|l| l.short_link.as_str()).collect();
        Ok(UnnamedEntries {
            dirs: (self.driver.stored_ids()?.into_iter())
                .filter(|dir| !named.contains(dir))
                .collect(),
            links: (self.driver.link_names()?.into_iter())
                .filter(|link| !links.contains(link.as_str()))
                .collect(),
        })
    }

    /// Removes what no record names: driver directories (unmounting what a crash left mounted
    /// inside them) and short links, and empty volume directories; settles interrupted volume
    /// removals.
    fn remove_orphans(
        &self,
        layers: &[crate::meta::LayerRecord],
        containers: &[crate::meta::ContainerRecord],
        report: &mut ReconcileReport,
    ) -> Result<(), Error> {
        let unnamed = self.unnamed_driver_entries(layers, containers)?;
        for name in unnamed.dirs {
            // A container removed while mounted can be cut off between its record's removal
            // and its unmount: its overlay is still mounted inside the orphan.
            let dir = self.root.join(self.driver.name()).join(&name);
            for mount in
                mounts::mounts_under(&dir).map_err(Error::io("reading mountinfo for", &dir))?
            {
                mounts::detach(&mount)?;
                report.unmounted_stale.push(mount);
            }
            self.driver.remove_orphan(&name)?;
            tracing::info!(driver = self.driver.name(), dir = %name, "removed orphan directory");
            report.removed_orphans.push(name);
        }
        // An import cut off between making a layer's short link and writing the `link` file
        // that names it leaves the link behind its orphan directory.
        for link in unnamed.links {
            self.driver.remove_link(&link)?;
            tracing::info!(driver = self.driver.name(), link = %link, "removed orphan short link");
            report
                .removed_orphans
                .push(format!("{}/l/{link}", self.driver.name()));
        }
        // A create that made a new volume's directory and then did not commit leaves it empty;
        // anything with data in it is left for the operator (fsck reports it).
        let volumes = self.db.read()?.volumes()?;
        let recorded: HashSet<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
        for what in self.settle_withdrawn_volumes(&recorded)? {
            tracing::info!("{what}");
        }
        for orphan in self.unrecorded_volumes(&recorded) {
            if orphan.empty {
                self.remove_empty_volume(&orphan.name)?;
                tracing::info!(volume = %orphan.name, "removed the empty directory of a volume that was never recorded");
                report
                    .removed_orphans
                    .push(format!("volumes/{}", orphan.name));
            } else {
                tracing::warn!(volume = %orphan.name, "volume directory without a record holds data; left alone (see `strata system fsck`)");
            }
        }
        Ok(())
    }

    /// A summary for `system info`.
    pub fn info(&self) -> Result<StoreInfo, Error> {
        let counts = self.db.read()?.counts()?;
        let fs = nix::sys::statvfs::statvfs(&self.root)
            .map_err(|e| Error::io("statvfs", &self.root)(e.into()))?;
        let frsize = fs.fragment_size();
        Ok(StoreInfo {
            root: self.root.clone(),
            driver: self.driver.name().to_owned(),
            overlay_mount_api: mounts::overlay_api_name().to_owned(),
            schema_version: SCHEMA_VERSION,
            layers: counts.layers,
            images: counts.images,
            containers: counts.containers,
            volumes: counts.volumes,
            fs_size_bytes: fs.blocks() * frsize,
            fs_avail_bytes: fs.blocks_available() * frsize,
            fs_files: fs.files(),
            fs_files_free: fs.files_available(),
        })
    }
}

/// What [`Store::unnamed_driver_entries`] found.
pub(crate) struct UnnamedEntries {
    /// Directory names under the driver's home (cache ids).
    pub(crate) dirs: Vec<String>,
    /// Short link names under `l/`.
    pub(crate) links: Vec<String>,
}

/// `system info`.
#[derive(Debug, Clone, Serialize)]
pub struct StoreInfo {
    pub root: PathBuf,
    pub driver: String,
    pub overlay_mount_api: String,
    pub schema_version: u64,
    pub layers: usize,
    pub images: usize,
    pub containers: usize,
    pub volumes: usize,
    pub fs_size_bytes: u64,
    pub fs_avail_bytes: u64,
    pub fs_files: u64,
    pub fs_files_free: u64,
}
