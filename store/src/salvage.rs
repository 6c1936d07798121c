//! `stratad --salvage`: the recovery path for a database that `Store::open` refuses.
//!
//! Nothing is thrown away. Every record that can still be read goes into a fresh database; the
//! damaged file is kept beside it as `meta.redb.corrupt-<time>`; directories that no surviving
//! record names are moved to `lost+found/<time>/` (start-up would otherwise delete them as
//! orphans); then the store opens as usual and `fsck --repair` recomputes what the lost records
//! held (reference counts, indexes). See `docs/recovery.md`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::driver;
use crate::error::{Error, OpenError};
use crate::fsck::{FsckOptions, FsckReport};
use crate::meta::{DbLock, MetaDb, Salvaged, VolumeRecord, salvage_records};
use crate::mountspec::valid_volume_name;
use crate::store::{Store, StoreOptions, now};

/// What a salvage kept, lost and set aside.
#[derive(Debug, Clone, Serialize)]
pub struct SalvageReport {
    /// Where the damaged database now is.
    pub damaged_copy: PathBuf,
    pub layers: usize,
    pub images: usize,
    pub containers: usize,
    pub volumes: usize,
    /// What could not be read, one line each.
    pub lost: Vec<String>,
    /// Directories moved out of the way, under `lost+found/`.
    pub set_aside: Vec<PathBuf>,
    /// Volume directories whose records were lost, recorded again (without their labels).
    pub adopted_volumes: Vec<String>,
    /// The repair run on the salvaged store.
    pub fsck: FsckReport,
}

fn write_records(db: &MetaDb, s: &Salvaged) -> Result<(), Error> {
    let txn = db.write()?;
    for l in &s.layers {
        txn.put_layer(l)?;
    }
    for i in &s.images {
        txn.put_image(i)?;
        for tag in &i.tags {
            txn.put_tag(tag, &i.id)?;
        }
    }
    for c in &s.containers {
        txn.put_container(c)?;
    }
    for v in &s.volumes {
        txn.put_volume(v)?;
    }
    txn.commit()?;
    Ok(())
}

impl Store {
    /// Rebuilds the database of the (stopped) store at `opts.root` from what can be read of it.
    /// Fails without changing anything while another process has the database open. On error
    /// after the swap, the damaged file is at `damaged_copy` and the partial result in place.
    pub fn salvage(opts: &StoreOptions) -> Result<SalvageReport, Error> {
        let root = opts.root.canonicalize().map_err(|source| OpenError::Root {
            path: opts.root.clone(),
            source,
        })?;
        let db_path = root.join("meta.redb");
        if !db_path.exists() {
            return Err(Error::Invalid(format!(
                "{} does not exist: there is nothing to salvage",
                db_path.display()
            )));
        }
        // Held throughout, until the salvaged store is open: no stratad starts meanwhile.
        let lock = DbLock::acquire(&db_path).map_err(OpenError::from)?;
        let stamp = now();
        let scratch = root.join("tmp").join(format!("salvage-read-{stamp}.redb"));
        driver::ensure_dir(&root.join("tmp")).map_err(OpenError::from)?;
        let salvaged = salvage_records(&db_path, &lock, &scratch).map_err(OpenError::from);
        let _ = std::fs::remove_file(&scratch);
        let mut salvaged = salvaged?;
        let adopted_volumes = adopt_volume_dirs(&root, &mut salvaged);

        let fresh = root.join(format!("meta.redb.salvaged-{stamp}"));
        {
            let db = MetaDb::open(&fresh).map_err(OpenError::from)?;
            write_records(&db, &salvaged)?;
        }
        let mut fresh_lock = fresh.clone().into_os_string();
        fresh_lock.push(".lock");
        let _ = std::fs::remove_file(fresh_lock);
        let damaged_copy = root.join(format!("meta.redb.corrupt-{stamp}"));
        std::fs::rename(&db_path, &damaged_copy).map_err(Error::io("moving aside", &db_path))?;
        std::fs::rename(&fresh, &db_path).map_err(Error::io("moving into place", &fresh))?;
        driver::sync_dir(&root).map_err(OpenError::from)?;

        let set_aside = set_aside_unnamed(&root, &opts.driver, &salvaged, stamp)?;
        let (store, _) = Store::open_locked(root, &opts.driver, lock)?;
        let fsck = store.fsck(FsckOptions {
            repair: true,
            verify: false,
        })?;
        Ok(SalvageReport {
            damaged_copy,
            layers: salvaged.layers.len(),
            images: salvaged.images.len(),
            containers: salvaged.containers.len(),
            volumes: salvaged.volumes.len(),
            lost: salvaged.lost,
            set_aside,
            adopted_volumes,
            fsck,
        })
    }
}

/// Volume data is never set aside: a directory under `volumes/` whose record was lost gets a
/// new record (no labels, used by no one until `fsck --repair` counts its containers).
fn adopt_volume_dirs(root: &Path, salvaged: &mut Salvaged) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.join("volumes")) else {
        return Vec::new();
    };
    let mut adopted = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !valid_volume_name(&name) || salvaged.volumes.iter().any(|v| v.name == name) {
            continue;
        }
        salvaged.volumes.push(VolumeRecord {
            name: name.clone(),
            labels: std::collections::BTreeMap::new(),
            created: now(),
            users: 0,
            size: None,
        });
        adopted.push(name);
    }
    adopted
}

/// Moves the driver directories no salvaged record names to `lost+found/<stamp>/<driver>/`.
fn set_aside_unnamed(
    root: &Path,
    driver_name: &str,
    salvaged: &Salvaged,
    stamp: u64,
) -> Result<Vec<PathBuf>, Error> {
    let named: std::collections::HashSet<String> = salvaged
        .layers
        .iter()
        .map(|l| l.cache_id.hex())
        .chain(salvaged.containers.iter().map(|c| c.id.hex()))
        .collect();
    let driver = driver::by_name(driver_name, root).map_err(OpenError::from)?;
    let home = root.join(driver.name());
    let aside = root
        .join("lost+found")
        .join(stamp.to_string())
        .join(driver.name());
    let mut moved = Vec::new();
    for name in driver.stored_ids()? {
        if named.contains(&name) {
            continue;
        }
        driver::ensure_dir(&aside).map_err(OpenError::from)?;
        let from = home.join(&name);
        let to = aside.join(&name);
        std::fs::rename(&from, &to).map_err(Error::io("setting aside", &from))?;
        moved.push(to);
    }
    Ok(moved)
}
