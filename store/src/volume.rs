//! Local volumes: `volumes/<name>/_data`, data that outlives every container.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ids::CacheId;
use crate::meta::{ContainerMountKind, Reads, VolumeRecord, WriteTxn};
use crate::mountspec::valid_volume_name;
use crate::store::{Store, now};

/// Docker's label for volumes created without a name (Docker >= 23 prunes only these by
/// default).
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// `volume ls` / `volume inspect`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeSummary {
    pub name: String,
    pub driver: String,
    pub mountpoint: PathBuf,
    pub labels: BTreeMap<String, String>,
    pub created: u64,
    pub anonymous: bool,
    /// Containers using the volume.
    pub users: u32,
    /// Bytes in the volume, as last measured.
    pub size: Option<u64>,
    /// Names of those containers (inspect only; empty in listings).
    pub used_by: Vec<String>,
}

/// What `volume prune` removed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PrunedVolumes {
    pub removed: Vec<String>,
    pub reclaimed_bytes: u64,
}

/// Prefix of a volume directory moved aside while its removal commits.
const WITHDRAWN: &str = ".removing-";

/// A directory under `volumes/` that no record names.
#[derive(Debug)]
pub(crate) struct UnrecordedVolume {
    pub(crate) name: String,
    /// It holds nothing but an empty `_data`: made by a create that did not commit.
    pub(crate) empty: bool,
}

impl Store {
    /// Directories under `volumes/` whose names are not in `recorded`.
    pub(crate) fn unrecorded_volumes(&self, recorded: &HashSet<&str>) -> Vec<UnrecordedVolume> {
        let Ok(entries) = std::fs::read_dir(self.root.join("volumes")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !recorded.contains(name.as_str()) && !name.starts_with(WITHDRAWN))
            .map(|name| {
                let dir = self.volume_dir(&name);
                let only_data = std::fs::read_dir(&dir)
                    .is_ok_and(|d| d.flatten().all(|e| e.file_name() == "_data"));
                let data_empty =
                    std::fs::read_dir(dir.join("_data")).map_or(true, |mut d| d.next().is_none());
                UnrecordedVolume {
                    empty: only_data && data_empty,
                    name,
                }
            })
            .collect()
    }

    /// Removes an unrecorded volume directory that holds nothing: non-recursive removals, so
    /// anything written there since makes this fail rather than disappear.
    pub(crate) fn remove_empty_volume(&self, name: &str) -> Result<(), Error> {
        let dir = self.volume_dir(name);
        let data = dir.join("_data");
        match std::fs::remove_dir(&data) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("removing", &data)(e));
            }
            _ => {}
        }
        std::fs::remove_dir(&dir).map_err(Error::io("removing", &dir))
    }

    pub(crate) fn volume_dir(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }

    /// The directory mounted into containers.
    pub fn volume_data(&self, name: &str) -> PathBuf {
        self.volume_dir(name).join("_data")
    }

    fn volume_summary(&self, v: VolumeRecord, used_by: Vec<String>) -> VolumeSummary {
        VolumeSummary {
            mountpoint: self.volume_data(&v.name),
            anonymous: v.labels.contains_key(ANONYMOUS_LABEL),
            name: v.name,
            driver: "local".into(),
            labels: v.labels,
            created: v.created,
            users: v.users,
            size: v.size.map(|(bytes, _)| bytes),
            used_by,
        }
    }

    /// Creates the record (and directory) of a volume inside `txn`, or returns the existing
    /// one. Returns the directories it made, for cleanup if `txn` does not commit.
    pub(crate) fn ensure_volume(
        &self,
        txn: &WriteTxn,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
        made: &mut Vec<PathBuf>,
    ) -> Result<VolumeRecord, Error> {
        let (name, labels) = if let Some(n) = name {
            if !valid_volume_name(n) {
                return Err(Error::Invalid(format!(
                    "invalid volume name {n:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-]+ is allowed"
                )));
            }
            (n.to_owned(), labels)
        } else {
            let mut labels = labels;
            labels.insert(ANONYMOUS_LABEL.into(), String::new());
            (CacheId::random().hex(), labels)
        };
        if let Some(existing) = txn.volume(&name)? {
            return Ok(existing);
        }
        let data = self.volume_data(&name);
        // A directory without a record (after a salvage, say) is adopted, never cleaned up:
        // only a directory made here is removed should the transaction not commit.
        let dir = self.volume_dir(&name);
        let existed = dir.exists();
        std::fs::create_dir_all(&data).map_err(Error::io("creating volume directory", &data))?;
        if !existed {
            made.push(dir);
        }
        let rec = VolumeRecord {
            name,
            labels,
            created: now(),
            users: 0,
            size: Some((0, now())),
        };
        txn.put_volume(&rec)?;
        Ok(rec)
    }

    /// `volume create [NAME] [--label k=v]`. Creating an existing name returns it unchanged.
    pub fn create_volume(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<VolumeSummary, Error> {
        let txn = self.db.write()?;
        let mut made = Vec::new();
        let created = self
            .ensure_volume(&txn, name, labels, &mut made)
            .and_then(|rec| {
                txn.commit()?;
                Ok(rec)
            });
        match created {
            Ok(rec) => Ok(self.volume_summary(rec, Vec::new())),
            Err(e) => {
                remove_dirs(&made);
                Err(e)
            }
        }
    }

    /// `volume ls [--filter dangling=true|false]`.
    pub fn list_volumes(&self, dangling: Option<bool>) -> Result<Vec<VolumeSummary>, Error> {
        let r = self.db.read()?;
        let mut out: Vec<_> = r
            .volumes()?
            .into_iter()
            .filter(|v| dangling.is_none_or(|d| d == (v.users == 0)))
            .map(|v| self.volume_summary(v, Vec::new()))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// `volume inspect NAME`.
    pub fn inspect_volume(&self, name: &str) -> Result<VolumeSummary, Error> {
        let r = self.db.read()?;
        let v = r.volume(name)?.ok_or_else(|| Error::NotFound {
            kind: "volume",
            name: name.to_owned(),
        })?;
        let used_by = r
            .containers()?
            .into_iter()
            .filter(|c| {
                c.mounts
                    .iter()
                    .any(|m| m.kind == ContainerMountKind::Volume && m.source == name)
            })
            .map(|c| c.name)
            .collect();
        Ok(self.volume_summary(v, used_by))
    }

    /// `volume rm NAME`: refused while a container uses it. On error the volume is as it was.
    pub fn remove_volume(&self, name: &str) -> Result<(), Error> {
        let txn = self.db.write()?;
        let v = txn.volume(name)?.ok_or_else(|| Error::NotFound {
            kind: "volume",
            name: name.to_owned(),
        })?;
        if v.users > 0 {
            return Err(Error::InUse(format!(
                "volume {name} is in use by {} container(s)",
                v.users
            )));
        }
        txn.delete_volume(name)?;
        self.commit_volume_removals(txn, &[name.to_owned()])
    }

    /// Commits `txn`, which deletes the records of `names`, with their directories moved out
    /// of the way first (`volumes/.removing-NAME`): a crash before the commit leaves a record
    /// and a withdrawn directory, which start-up moves back; after it, a withdrawn directory
    /// without a record, which start-up deletes. The data is never in doubt. On error the
    /// directories are back in place.
    fn commit_volume_removals(&self, txn: WriteTxn, names: &[String]) -> Result<(), Error> {
        let mut withdrawn = Vec::new();
        let moved = names.iter().try_for_each(|name| {
            let (dir, aside) = (self.volume_dir(name), self.withdrawn_volume_dir(name));
            match std::fs::rename(&dir, &aside) {
                Ok(()) => {
                    withdrawn.push((dir, aside));
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io("moving aside", &dir)(e)),
            }
        });
        // The renames are durable before the commit is: after a power cut, no record may be
        // gone while its directory is back under its own name (start-up would keep it).
        let volumes = self.root.join("volumes");
        let committed = moved
            .and_then(|()| {
                if withdrawn.is_empty() {
                    Ok(())
                } else {
                    crate::driver::sync_dir(&volumes).map_err(Error::from)
                }
            })
            .and_then(|()| Ok(txn.commit()?));
        if let Err(e) = committed {
            for (dir, aside) in withdrawn {
                if let Err(undo) = std::fs::rename(&aside, &dir) {
                    tracing::error!(path = %aside.display(), error = %undo, "could not move a volume directory back; start-up will");
                }
            }
            return Err(e);
        }
        // Removed once committed: a directory left behind is start-up's to delete.
        for (_, aside) in withdrawn {
            if let Err(e) = self.discard(&aside) {
                tracing::warn!(path = %aside.display(), error = %e, "could not move a removed volume's directory away; start-up deletes it");
            }
        }
        Ok(())
    }

    fn withdrawn_volume_dir(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(format!("{WITHDRAWN}{name}"))
    }

    /// After a crash mid-removal: a withdrawn directory goes back if its record is still there
    /// (the removal did not commit), and away if not. Returns what was done, for the log.
    pub(crate) fn settle_withdrawn_volumes(
        &self,
        recorded: &HashSet<&str>,
    ) -> Result<Vec<String>, Error> {
        let Ok(entries) = std::fs::read_dir(self.root.join("volumes")) else {
            return Ok(Vec::new());
        };
        let mut done = Vec::new();
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file_name.strip_prefix(WITHDRAWN) else {
                continue;
            };
            let aside = entry.path();
            if recorded.contains(name) {
                let dir = self.volume_dir(name);
                std::fs::rename(&aside, &dir).map_err(Error::io("moving back", &aside))?;
                done.push(format!(
                    "volume {name}: removal did not commit, directory moved back"
                ));
            } else {
                self.discard(&aside)?;
                done.push(format!(
                    "volume {name}: removal committed, directory deleted"
                ));
            }
        }
        Ok(done)
    }

    /// Measures the volumes whose recorded size is older than `max_age` and records the new
    /// sizes (containers' writable layers are measured by [`Store::scan_writable_layers`]).
    /// Meant for a background task: it walks volumes outside any transaction. Returns how
    /// many volumes were measured.
    pub fn refresh_volume_sizes(&self, max_age: std::time::Duration) -> Result<usize, Error> {
        let stale: Vec<String> = self
            .db
            .read()?
            .volumes()?
            .into_iter()
            .filter(|v| {
                v.size.is_none_or(|(_, at)| {
                    crate::store::now().saturating_sub(at) >= max_age.as_secs()
                })
            })
            .map(|v| v.name)
            .collect();
        let measured: Vec<_> = stale
            .iter()
            .map(|name| {
                (
                    name,
                    crate::usage::dir_bytes(&self.volume_data(name)),
                    crate::store::now(),
                )
            })
            .collect();
        let txn = self.db.write()?;
        for (name, bytes, at) in &measured {
            if let Some(mut v) = txn.volume(name)? {
                v.size = Some((*bytes, *at));
                txn.put_volume(&v)?;
            }
        }
        txn.commit()?;
        Ok(measured.len())
    }

    /// `volume prune [--all]`: unused anonymous volumes, or with `all` every unused volume
    /// (Docker >= 23's behaviour).
    pub fn prune_volumes(&self, all: bool) -> Result<PrunedVolumes, Error> {
        let txn = self.db.write()?;
        let mut pruned = PrunedVolumes::default();
        for v in txn.volumes()? {
            if v.users == 0 && (all || v.labels.contains_key(ANONYMOUS_LABEL)) {
                txn.delete_volume(&v.name)?;
                pruned.reclaimed_bytes += crate::usage::dir_bytes(&self.volume_dir(&v.name));
                pruned.removed.push(v.name);
            }
        }
        self.commit_volume_removals(txn, &pruned.removed)?;
        Ok(pruned)
    }
}

/// Removes directories, logging (not failing) on error: their records are already gone, and
/// start-up reconcile collects whatever remains.
pub(crate) fn remove_dirs(dirs: &[PathBuf]) {
    for dir in dirs {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %dir.display(), error = %e, "could not remove directory");
            }
            _ => {}
        }
    }
}
