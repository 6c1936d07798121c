//! `system fsck`: every invariant of the store, checked against the records, the directories
//! and the kernel's mount table; `--repair` fixes what can be fixed without guessing.
//!
//! The database is the truth, so repairs bring the rest in line with the records: reference
//! counts and indexes are recomputed from the records that hold them, links and mount counts
//! follow the records and the kernel, directories no record names are removed (volume data
//! excepted: it may be all a user has). What would need a guess (a layer whose files are gone,
//! a record that no longer decodes, a broken chain) is reported and left alone.
//!
//! fsck holds the database's write lock while it checks the records, the directories and the
//! image views, so no import, create or remove runs meanwhile. It then checks each container's
//! mount count under that container's mount claim (the order every mount and remove takes
//! them in: claim, then database), and `--verify` rehashes the layers with no lock held, so a
//! long rehash blocks nobody; a layer removed meanwhile is skipped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::driver::LayerDamage;
use crate::error::Error;
use crate::ids::{CacheId, ChainId, DiffId, ImageId};
use crate::meta::{
    ContainerMountKind, ContainerRecord, CorruptRecord, ImageRecord, LayerRecord, Reads, Scan,
    VolumeRecord, WriteTxn,
};
use crate::mounts;
use crate::store::Store;

/// Which invariant a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Check {
    /// A record's bytes do not decode.
    CorruptRecord,
    /// A layer's files are missing on disk.
    LayerFiles,
    /// A layer's short link or `link` file disagrees with its record.
    LayerLink,
    /// A layer's parent, or an image's or container's chain, names a missing layer, or a chain
    /// id does not follow from the diff ids.
    Chain,
    /// A stored reference count differs from the references the records make.
    RefCount,
    /// The tag index and the images' tags disagree.
    Tags,
    /// The container name index and the containers disagree.
    Names,
    /// A remembered blob names a layer content no layer has.
    BlobKey,
    /// A container's image record is gone.
    ContainerImage,
    /// A container's directories are missing.
    ContainerDirs,
    /// A volume's data directory is missing.
    VolumeDir,
    /// A directory or link under the store no record names.
    Orphan,
    /// A mount count disagrees with the kernel's mount table.
    MountState,
    /// A layer's files no longer hash to its `DiffID` (`--verify`).
    DiffId,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::CorruptRecord => "corrupt-record",
            Check::LayerFiles => "layer-files",
            Check::LayerLink => "layer-link",
            Check::Chain => "chain",
            Check::RefCount => "ref-count",
            Check::Tags => "tags",
            Check::Names => "names",
            Check::BlobKey => "blob-key",
            Check::ContainerImage => "container-image",
            Check::ContainerDirs => "container-dirs",
            Check::VolumeDir => "volume-dir",
            Check::Orphan => "orphan",
            Check::MountState => "mount-state",
            Check::DiffId => "diff-id",
        }
    }
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub check: Check,
    /// What it is about: `layer sha256:…`, `container web`, a path.
    pub object: String,
    pub problem: String,
    /// What `--repair` does about it (did, when `repaired`); `None`: nothing safe to do.
    pub repair: Option<String>,
    pub repaired: bool,
}

/// What to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsckOptions {
    /// Fix what can be fixed safely.
    #[serde(default)]
    pub repair: bool,
    /// Also put every layer's tar together again from its tape and files and hash it against
    /// its `DiffID` (reads every layer).
    #[serde(default)]
    pub verify: bool,
}

/// What fsck looked at and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsckReport {
    pub layers: usize,
    pub images: usize,
    pub containers: usize,
    pub volumes: usize,
    /// Layers whose `DiffID` `--verify` recomputed.
    pub verified_layers: usize,
    /// Layers `--verify` could not check, and why (no tape: imported by an older strata, or
    /// their tar named a path twice).
    pub unverifiable_layers: Vec<String>,
    pub findings: Vec<Finding>,
}

impl FsckReport {
    /// Findings not repaired.
    pub fn outstanding(&self) -> usize {
        self.findings.iter().filter(|f| !f.repaired).count()
    }
}

/// The records, scanned once.
struct Records {
    layers: Vec<LayerRecord>,
    images: Vec<ImageRecord>,
    containers: Vec<ContainerRecord>,
    volumes: Vec<VolumeRecord>,
    corrupt: Vec<CorruptRecord>,
}

impl Records {
    fn read(txn: &WriteTxn) -> Result<Self, Error> {
        fn take<T>(scan: Scan<T>, corrupt: &mut Vec<CorruptRecord>) -> Vec<T> {
            corrupt.extend(scan.corrupt);
            scan.records
        }
        let mut corrupt = Vec::new();
        let layers = take(txn.scan_layers()?, &mut corrupt);
        let images = take(txn.scan_images()?, &mut corrupt);
        let containers = take(txn.scan_containers()?, &mut corrupt);
        let volumes = take(txn.scan_volumes()?, &mut corrupt);
        Ok(Self {
            layers,
            images,
            containers,
            volumes,
            corrupt,
        })
    }
}

/// Collects findings, and runs each repair only when asked to.
struct Findings {
    repair: bool,
    list: Vec<Finding>,
}

impl Findings {
    fn report(&mut self, check: Check, object: impl Into<String>, problem: impl Into<String>) {
        self.list.push(Finding {
            check,
            object: object.into(),
            problem: problem.into(),
            repair: None,
            repaired: false,
        });
    }

    /// A stored reference count (`field`, its value) that the records recount as `want`
    /// (`users` says who): a fixable finding when the two differ, `put` storing `want`.
    fn count(
        &mut self,
        object: &str,
        (field, stored): (&str, u32),
        (want, users): (u32, &str),
        put: impl FnOnce() -> Result<(), Error>,
    ) {
        if stored != want {
            self.fixable(
                Check::RefCount,
                object,
                format!("{field} is {stored}, {want} {users}"),
                format!("set {field} to {want}"),
                put,
            );
        }
    }

    /// Reports, and with `--repair` runs `fix`; a failing fix is reported as not repaired.
    fn fixable(
        &mut self,
        check: Check,
        object: impl Into<String>,
        problem: impl Into<String>,
        action: impl Into<String>,
        fix: impl FnOnce() -> Result<(), Error>,
    ) {
        let mut action = action.into();
        let repaired = self.repair
            && match fix() {
                Ok(()) => true,
                Err(e) => {
                    action = format!("{action} (failed: {e})");
                    false
                }
            };
        self.list.push(Finding {
            check,
            object: object.into(),
            problem: problem.into(),
            repair: Some(action),
            repaired,
        });
    }
}

fn layer_name(id: &ChainId) -> String {
    format!("layer {id}")
}

fn image_name(img: &ImageRecord) -> String {
    match img.tags.first() {
        Some(tag) => format!("image {} ({tag})", img.id),
        None => format!("image {}", img.id),
    }
}

impl Store {
    /// Checks the store (see the module docs). With `repair`, the database repairs commit in
    /// one transaction once the records, directories and views are checked, and on error none
    /// of them is kept (directory repairs already done stay done: each is safe alone).
    pub fn fsck(&self, opts: FsckOptions) -> Result<FsckReport, Error> {
        let txn = self.db.write()?;
        let records = Records::read(&txn)?;
        let mut found = Findings {
            repair: opts.repair,
            list: Vec::new(),
        };
        for c in &records.corrupt {
            found.report(
                Check::CorruptRecord,
                format!("{} record {}", c.table, c.key),
                format!(
                    "{}; restore the database from a backup or run `stratad --salvage`",
                    c.error
                ),
            );
        }
        self.check_layers(&txn, &records, &mut found)?;
        Self::check_images(&txn, &records, &mut found)?;
        self.check_containers(&txn, &records, &mut found)?;
        self.check_volumes(&txn, &records, &mut found);
        self.check_mounts(&txn, &records, &mut found)?;
        // Under the write lock, as every directory is made under it before its record commits.
        self.check_orphans(&records, &mut found)?;
        if opts.repair && found.list.iter().any(|f| f.repaired) {
            txn.commit()?;
        } else {
            drop(txn);
        }
        self.check_container_mounts(&records.containers, &mut found)?;
        let (verified_layers, unverifiable_layers) = if opts.verify {
            self.verify_layers(&records.layers, &mut found)
        } else {
            (0, Vec::new())
        };
        Ok(FsckReport {
            layers: records.layers.len(),
            images: records.images.len(),
            containers: records.containers.len(),
            volumes: records.volumes.len(),
            verified_layers,
            unverifiable_layers,
            findings: found.list,
        })
    }

    fn check_layers(
        &self,
        txn: &WriteTxn,
        records: &Records,
        found: &mut Findings,
    ) -> Result<(), Error> {
        let by_chain: HashMap<ChainId, &LayerRecord> =
            records.layers.iter().map(|l| (l.chain_id, l)).collect();
        let mut users: HashMap<ChainId, u32> = HashMap::new();
        for img in &records.images {
            for id in img.chain.iter().collect::<HashSet<_>>() {
                *users.entry(*id).or_default() += 1;
            }
        }
        for l in &records.layers {
            let name = layer_name(&l.chain_id);
            for damage in self.driver.check_layer(l.cache_id, &l.short_link) {
                match damage {
                    LayerDamage::Missing(path) => found.report(
                        Check::LayerFiles,
                        &name,
                        format!(
                            "{} is missing; remove the images using it and import them again",
                            path.display()
                        ),
                    ),
                    LayerDamage::Link(problem) => found.fixable(
                        Check::LayerLink,
                        &name,
                        problem,
                        "rewrite the link from the record",
                        || Ok(self.driver.repair_layer_link(l.cache_id, &l.short_link)?),
                    ),
                }
            }
            let expected = ChainId::extend(l.parent, l.diff_id);
            if expected != l.chain_id {
                found.report(
                    Check::Chain,
                    &name,
                    format!(
                        "chain id does not follow from parent and diff id (expected {expected})"
                    ),
                );
            }
            if let Some(parent) = l.parent
                && !by_chain.contains_key(&parent)
            {
                found.report(
                    Check::Chain,
                    &name,
                    format!("parent layer {parent} has no record"),
                );
            }
            let want = users.get(&l.chain_id).copied().unwrap_or(0);
            let stored = ("image_users", l.image_users);
            found.count(&name, stored, (want, "images use it"), || {
                Ok(txn.put_layer(&LayerRecord {
                    image_users: want,
                    ..l.clone()
                })?)
            });
        }
        let diffs: HashSet<DiffId> = records.layers.iter().map(|l| l.diff_id).collect();
        for (key, diff) in txn.blob_key_index()? {
            if !diffs.contains(&diff) {
                found.fixable(
                    Check::BlobKey,
                    format!("blob {key}"),
                    format!("remembered as layer {diff}, which no layer has"),
                    "forget the blob (a later import extracts it again)",
                    || Ok(txn.delete_blob_key(&key)?),
                );
            }
        }
        Ok(())
    }

    fn check_images(txn: &WriteTxn, records: &Records, found: &mut Findings) -> Result<(), Error> {
        let layers: HashSet<ChainId> = records.layers.iter().map(|l| l.chain_id).collect();
        let mut containers: HashMap<ImageId, u32> = HashMap::new();
        for c in &records.containers {
            *containers.entry(c.image).or_default() += 1;
        }
        let images: HashMap<ImageId, &ImageRecord> =
            records.images.iter().map(|i| (i.id, i)).collect();
        for img in &records.images {
            let name = image_name(img);
            if ChainId::chain(&img.diff_ids) != img.chain {
                found.report(
                    Check::Chain,
                    &name,
                    "chain ids do not follow from the diff ids",
                );
            }
            for id in img.chain.iter().filter(|id| !layers.contains(id)) {
                found.report(Check::Chain, &name, format!("layer {id} has no record"));
            }
            let want = containers.get(&img.id).copied().unwrap_or(0);
            let stored = ("container_users", img.container_users);
            found.count(&name, stored, (want, "containers use it"), || {
                Ok(txn.put_image(&ImageRecord {
                    container_users: want,
                    ..img.clone()
                })?)
            });
        }
        // The images' tags are the records; the tag index follows them.
        let indexed: BTreeMap<String, ImageId> = txn.tag_index()?.into_iter().collect();
        for (tag, id) in &indexed {
            let listed = images
                .get(id)
                .is_some_and(|img| img.tags.iter().any(|t| t.to_string() == *tag));
            if !listed {
                found.fixable(
                    Check::Tags,
                    format!("tag {tag}"),
                    format!("indexed to image {id}, which does not carry it"),
                    "remove the index entry",
                    || Ok(txn.delete_tag_entry(tag)?),
                );
            }
        }
        for img in &records.images {
            for tag in &img.tags {
                if indexed.get(&tag.to_string()) != Some(&img.id) {
                    found.fixable(
                        Check::Tags,
                        format!("tag {tag}"),
                        format!("carried by {} but not indexed to it", image_name(img)),
                        "index the tag to the image",
                        || Ok(txn.put_tag(tag, &img.id)?),
                    );
                }
            }
        }
        Ok(())
    }

    fn check_containers(
        &self,
        txn: &WriteTxn,
        records: &Records,
        found: &mut Findings,
    ) -> Result<(), Error> {
        let images: HashSet<ImageId> = records.images.iter().map(|i| i.id).collect();
        let layers: HashMap<ChainId, &LayerRecord> =
            records.layers.iter().map(|l| (l.chain_id, l)).collect();
        let by_id: HashMap<CacheId, &ContainerRecord> =
            records.containers.iter().map(|c| (c.id, c)).collect();
        for c in &records.containers {
            let name = format!("container {}", c.name);
            if !images.contains(&c.image) {
                found.report(
                    Check::ContainerImage,
                    &name,
                    format!("image {} has no record", c.image),
                );
            }
            let missing: Vec<&ChainId> = c
                .chain
                .iter()
                .filter(|id| !layers.contains_key(id))
                .collect();
            for id in &missing {
                found.report(Check::Chain, &name, format!("layer {id} has no record"));
            }
            let dir = self.driver.container_dir(c.id);
            let dirs = [
                self.driver.upper_dir(c.id),
                self.driver.merged_dir(c.id),
                dir.join("work"),
            ];
            if missing.is_empty() && dirs.iter().any(|d| !d.is_dir()) {
                let chain: Vec<(CacheId, String)> = c
                    .chain
                    .iter()
                    .filter_map(|id| layers.get(id))
                    .map(|l| (l.cache_id, l.short_link.clone()))
                    .collect();
                found.fixable(
                    Check::ContainerDirs,
                    &name,
                    format!("directories missing under {}", dir.display()),
                    "re-create them empty (what was written in the container is gone)",
                    || Ok(self.driver.create_rw(c.id, &chain)?),
                );
            }
        }
        // Every name entry must point at a container of that name, every container be indexed.
        for (entry, id) in txn.container_name_index()? {
            if by_id.get(&id).is_none_or(|c| c.name != entry) {
                found.fixable(
                    Check::Names,
                    format!("name {entry}"),
                    format!("indexed to {id}, which is not a container of that name"),
                    "remove the index entry",
                    || Ok(txn.delete_container_name(&entry)?),
                );
            }
        }
        let indexed: HashMap<String, CacheId> = txn.container_name_index()?.into_iter().collect();
        for c in &records.containers {
            if indexed.get(&c.name) != Some(&c.id) {
                found.fixable(
                    Check::Names,
                    format!("container {}", c.name),
                    "not in the name index",
                    "index it",
                    || Ok(txn.put_container(c)?),
                );
            }
        }
        Ok(())
    }

    fn check_volumes(&self, txn: &WriteTxn, records: &Records, found: &mut Findings) {
        let mut users: HashMap<&str, u32> = HashMap::new();
        for c in &records.containers {
            for m in c
                .mounts
                .iter()
                .filter(|m| m.kind == ContainerMountKind::Volume)
            {
                *users.entry(m.source.as_str()).or_default() += 1;
            }
        }
        for v in &records.volumes {
            let name = format!("volume {}", v.name);
            let data = self.volume_data(&v.name);
            if !data.is_dir() {
                found.fixable(
                    Check::VolumeDir,
                    &name,
                    format!("{} is missing", data.display()),
                    "re-create it empty (its data is gone)",
                    || std::fs::create_dir_all(&data).map_err(Error::io("creating", &data)),
                );
            }
            let want = users.get(v.name.as_str()).copied().unwrap_or(0);
            found.count(
                &name,
                ("users", v.users),
                (want, "containers mount it"),
                || {
                    Ok(txn.put_volume(&VolumeRecord {
                        users: want,
                        ..v.clone()
                    })?)
                },
            );
        }
        for c in &records.containers {
            for m in c
                .mounts
                .iter()
                .filter(|m| m.kind == ContainerMountKind::Volume)
            {
                if !records.volumes.iter().any(|v| v.name == m.source) {
                    found.report(
                        Check::RefCount,
                        format!("container {}", c.name),
                        format!("mounts volume {}, which has no record", m.source),
                    );
                }
            }
        }
    }

    /// Directories and links no record names (a directory a repair re-created is named by its
    /// record).
    fn check_orphans(&self, records: &Records, found: &mut Findings) -> Result<(), Error> {
        let unnamed = self.unnamed_driver_entries(&records.layers, &records.containers)?;
        for dir in unnamed.dirs {
            found.fixable(
                Check::Orphan,
                format!("{}/{dir}", self.driver.name()),
                "directory no layer or container names",
                "remove it",
                || Ok(self.driver.remove_orphan(&dir)?),
            );
        }
        for link in unnamed.links {
            found.fixable(
                Check::Orphan,
                format!("{}/l/{link}", self.driver.name()),
                "short link no layer names",
                "remove it",
                || Ok(self.driver.remove_link(&link)?),
            );
        }
        let recorded: HashSet<&str> = records.volumes.iter().map(|v| v.name.as_str()).collect();
        for orphan in self.unrecorded_volumes(&recorded) {
            let object = format!("volumes/{}", orphan.name);
            if orphan.empty {
                found.fixable(
                    Check::Orphan,
                    object,
                    "empty directory no volume names (a create that did not finish)",
                    "remove it",
                    || self.remove_empty_volume(&orphan.name),
                );
            } else {
                found.report(
                    Check::Orphan,
                    object,
                    "directory no volume names; left alone, it may hold data (inspect it, then delete it by hand)",
                );
            }
        }
        Ok(())
    }

    /// Rehashes every layer whose files are there; returns how many were checked and which
    /// could not be. No lock is held: a layer whose record went meanwhile (its image was
    /// removed) is skipped, whatever its rehash said.
    fn verify_layers(&self, layers: &[LayerRecord], found: &mut Findings) -> (usize, Vec<String>) {
        let mut verified = 0;
        let mut unverifiable = Vec::new();
        let still_stored = |l: &LayerRecord| {
            self.db.read().is_ok_and(|r| {
                r.layer(&l.chain_id)
                    .is_ok_and(|now| now.is_some_and(|now| now.cache_id == l.cache_id))
            })
        };
        for l in layers {
            if !self.driver.diff_dir(l.cache_id).is_dir() {
                continue; // already a `layer-files` finding
            }
            match self.play_tape(l.cache_id, l.diff_id, &mut std::io::sink()) {
                Ok(Some(())) => verified += 1,
                Ok(None) => unverifiable.push(format!("{}: no tape", layer_name(&l.chain_id))),
                Err(_) if !still_stored(l) => {}
                Err(e) => {
                    verified += 1;
                    found.report(
                        Check::DiffId,
                        layer_name(&l.chain_id),
                        format!("{e}; remove the images using it and import them again"),
                    );
                }
            }
        }
        (verified, unverifiable)
    }

    /// Image view counts (recorded) against the kernel, and mounts under the root that nothing
    /// explains. Under the write lock: views mount and unmount under it, and every container
    /// whose merged directory could be mounted has a record.
    fn check_mounts(
        &self,
        txn: &WriteTxn,
        records: &Records,
        found: &mut Findings,
    ) -> Result<(), Error> {
        let mounted = self.mounted_under_root()?;
        let mut explained: HashSet<PathBuf> = records
            .containers
            .iter()
            .map(|c| self.driver.merged_dir(c.id))
            .filter(|merged| mounted.contains(merged))
            .collect();
        for img in &records.images {
            let view = self.views_dir().join(img.id.0.hex());
            let in_kernel = mounted.contains(&view);
            if in_kernel {
                explained.insert(view.clone());
            }
            if img.view_mounts > 0 && !in_kernel {
                let mut fixed = img.clone();
                fixed.view_mounts = 0;
                found.fixable(
                    Check::MountState,
                    image_name(img),
                    format!(
                        "{} view mount(s) recorded but nothing is mounted at {}",
                        img.view_mounts,
                        view.display()
                    ),
                    "reset the view count",
                    || Ok(txn.put_image(&fixed)?),
                );
            }
        }
        for path in mounted.difference(&explained) {
            found.fixable(
                Check::MountState,
                path.display().to_string(),
                "mounted under the store root, but no record explains it",
                "unmount it",
                || Ok(mounts::unmount(path)?),
            );
        }
        Ok(())
    }

    /// Mount points under the root; the root itself may be one (a dedicated filesystem), and
    /// that one is not ours.
    fn mounted_under_root(&self) -> Result<HashSet<PathBuf>, Error> {
        Ok(mounts::mounts_under(&self.root)
            .map_err(Error::io("reading mountinfo for", &self.root))?
            .into_iter()
            .filter(|p| *p != self.root)
            .collect())
    }

    /// Containers' mount counts (in memory) against the kernel. A container that looks wrong
    /// is looked at again under its mount claim, with the mount table read afresh: a mount or
    /// unmount that was under way is then finished, and nothing else can change either side.
    fn check_container_mounts(
        &self,
        containers: &[ContainerRecord],
        found: &mut Findings,
    ) -> Result<(), Error> {
        let mounted = self.mounted_under_root()?;
        let counted = self.container_mounts.mounted();
        for c in containers {
            let merged = self.driver.merged_dir(c.id);
            let refs = counted.get(&c.id).copied().unwrap_or(0);
            if (refs > 0) == mounted.contains(&merged) {
                continue;
            }
            let mut claim = self.container_mounts.claim(c.id);
            let in_kernel = self.mounted_under_root()?.contains(&merged);
            let refs = claim.refs();
            if refs > 0 && !in_kernel {
                found.fixable(
                    Check::MountState,
                    format!("container {}", c.name),
                    format!(
                        "{refs} mount reference(s) but nothing is mounted at {}",
                        merged.display()
                    ),
                    "drop the references",
                    || {
                        // The janitor may still hold the detached overlay: it lets go first.
                        self.janitor.release(c.id, claim);
                        Ok(())
                    },
                );
            } else if refs == 0 && in_kernel {
                found.fixable(
                    Check::MountState,
                    format!("container {}", c.name),
                    format!("mounted at {} with no reference", merged.display()),
                    "adopt the mount as one reference",
                    || {
                        claim.set_refs(1);
                        self.janitor.hold(c.id, merged.clone());
                        Ok(())
                    },
                );
            }
        }
        Ok(())
    }
}
