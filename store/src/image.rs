//! Images: import from archives, list, inspect, tag, remove, and read-only views.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::{self, ArchiveImage, BlobKey, ImageConfig, ImportProgress, StagedLayer};
use crate::driver::copy_tree;
use crate::error::{Error, ImportError, is_hex_prefix, unique_by_prefix};
use crate::ids::{CacheId, ChainId, DiffId, Digest, ImageId, ImageRef};
use crate::meta::{ImageConfigRecord, ImageRecord, LayerRecord, Reads, WriteTxn};
use crate::mounts::{self, MAX_LOWER_LAYERS};
use crate::store::{Store, now};

/// One image an import stored or found already stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportedImage {
    pub id: ImageId,
    pub tags: Vec<ImageRef>,
    pub layers: usize,
    /// Layers this import created; the rest were already stored.
    pub new_layers: usize,
}

/// A row of `image ls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageSummary {
    pub id: ImageId,
    pub tags: Vec<ImageRef>,
    pub created: Option<String>,
    pub size: u64,
    /// Bytes of layers that other images use too.
    pub shared_size: u64,
    /// Bytes of layers only this image uses.
    pub unique_size: u64,
    pub layers: usize,
    pub containers: u32,
    pub mounted: bool,
}

/// One layer of `image inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageLayer {
    pub diff_id: DiffId,
    pub chain_id: ChainId,
    pub size: u64,
}

/// `image inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageDetails {
    pub id: ImageId,
    pub tags: Vec<ImageRef>,
    pub config: ImageConfigRecord,
    pub layers: Vec<ImageLayer>,
    pub size: u64,
    pub imported: u64,
    pub view_mounts: u32,
    pub view_path: Option<PathBuf>,
    pub containers: u32,
    /// The image config JSON exactly as imported.
    pub raw_config: serde_json::Value,
}

/// What `image rm` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RemovedImage {
    pub untagged: Vec<ImageRef>,
    pub deleted: Option<ImageId>,
    pub deleted_layers: Vec<ChainId>,
}

fn config_record(c: &ImageConfig) -> ImageConfigRecord {
    ImageConfigRecord {
        os: c.os.clone(),
        architecture: c.architecture.clone(),
        created: c.created.clone(),
        author: c.author.clone(),
        env: c.env.clone(),
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        working_dir: c.working_dir.clone(),
        user: c.user.clone(),
        labels: c.labels.clone(),
    }
}

/// A staged directory that is removed when dropped, unless it was consumed.
pub(crate) struct StagingDir(pub(crate) PathBuf);

impl Drop for StagingDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %self.0.display(), error = %e, "could not remove staging directory");
            }
            _ => {}
        }
    }
}

impl Store {
    /// Imports every image in a `docker save` or OCI archive read from `reader`, in one pass.
    /// Layers already stored (same `ChainID`) are reused. On error the store is unchanged: no
    /// records were committed and every directory this import made is removed.
    pub fn import_images(
        &self,
        reader: impl Read,
        progress: &mut dyn FnMut(&ImportProgress),
    ) -> Result<Vec<ImportedImage>, Error> {
        let staging_path = self.tmp_dir().join(format!("import-{}", CacheId::random()));
        std::fs::create_dir(&staging_path).map_err(|source| ImportError::Staging {
            path: staging_path.clone(),
            source,
        })?;
        let staging = StagingDir(staging_path);
        let known = |key: &BlobKey| {
            self.db
                .read()
                .ok()
                .and_then(|r| r.blob_key(&key.0).ok().flatten())
        };
        let imported = archive::read_image_archive(reader, &staging.0, &known, progress)
            .map_err(ImportError::from)?;
        self.store_staged(&imported.images, &imported.layers, &staging.0)
    }

    /// Records staged images and layers: checks, places new layers, commits. On error the
    /// layers this call placed are removed again; `staging` is the caller's to remove.
    pub(crate) fn store_staged(
        &self,
        images: &[ArchiveImage],
        layers: &[StagedLayer],
        staging: &Path,
    ) -> Result<Vec<ImportedImage>, Error> {
        for image in images {
            if image.diff_ids.is_empty() {
                return Err(ImportError::NoLayers(image.id.to_string()).into());
            }
            if image.diff_ids.len() > MAX_LOWER_LAYERS {
                return Err(ImportError::TooManyLayers {
                    image: image.id.to_string(),
                    layers: image.diff_ids.len(),
                    max: MAX_LOWER_LAYERS,
                }
                .into());
            }
        }
        // Files must be durable before a record names them.
        crate::sys::mount::syncfs(&self.root).map_err(Error::io("syncing", &self.root))?;

        let txn = self.db.write()?;
        let mut placed: Vec<(CacheId, String)> = Vec::new();
        let result = self.commit_import(&txn, images, layers, staging, &mut placed);
        let outcome = result.and_then(|out| {
            if !placed.is_empty() {
                crate::sys::mount::syncfs(&self.root).map_err(Error::io("syncing", &self.root))?;
            }
            txn.commit()?;
            Ok(out)
        });
        if outcome.is_err() {
            for (id, short) in placed {
                if let Err(e) = self.driver.remove_layer(id, &short) {
                    tracing::warn!(layer = %id, error = %e, "could not remove layer of failed import");
                }
            }
        }
        outcome
    }

    fn commit_import(
        &self,
        txn: &WriteTxn,
        images: &[ArchiveImage],
        layers: &[StagedLayer],
        staging: &Path,
        placed: &mut Vec<(CacheId, String)>,
    ) -> Result<Vec<ImportedImage>, Error> {
        let mut staged: HashMap<DiffId, &StagedLayer> =
            layers.iter().map(|l| (l.diff_id, l)).collect();
        // Staged directories consumed by a rename; a second use of the same diff copies.
        let mut consumed: HashMap<DiffId, CacheId> = HashMap::new();
        let mut out = Vec::new();
        for image in images {
            let chain = ChainId::chain(&image.diff_ids);
            let mut new_layers = 0;
            if txn.image(&image.id)?.is_none() {
                let mut parent: Option<(ChainId, CacheId)> = None;
                let mut size = 0;
                let mut seen_in_this_image = HashSet::new();
                for (chain_id, diff_id) in chain.iter().zip(&image.diff_ids) {
                    let record = if let Some(mut rec) = txn.layer(chain_id)? {
                        if seen_in_this_image.insert(*chain_id) {
                            rec.image_users += 1;
                        }
                        rec
                    } else {
                        {
                            seen_in_this_image.insert(*chain_id);
                            new_layers += 1;
                            let layer = staged.get(diff_id).copied();
                            let rec = self.place_layer(
                                txn,
                                *chain_id,
                                *diff_id,
                                parent,
                                layer,
                                staging,
                                &mut consumed,
                                placed,
                            )?;
                            consumed.entry(*diff_id).or_insert(rec.cache_id);
                            rec
                        }
                    };
                    size += record.size;
                    txn.put_layer(&record)?;
                    parent = Some((record.chain_id, record.cache_id));
                }
                let record = ImageRecord {
                    id: image.id,
                    config: config_record(&image.config),
                    config_json: image.config_json.clone(),
                    diff_ids: image.diff_ids.clone(),
                    chain,
                    tags: Vec::new(),
                    size,
                    imported: now(),
                    view_mounts: 0,
                    container_users: 0,
                };
                txn.put_image(&record)?;
            }
            for tag in &image.repo_tags {
                retag(txn, tag, image.id)?;
            }
            let layers = image.diff_ids.len();
            out.push(ImportedImage {
                id: image.id,
                tags: image.repo_tags.clone(),
                layers,
                new_layers,
            });
        }
        for layer in staged.drain().map(|(_, l)| l) {
            for key in &layer.keys {
                txn.put_blob_key(&key.0, &layer.diff_id)?;
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn place_layer(
        &self,
        txn: &WriteTxn,
        chain_id: ChainId,
        diff_id: DiffId,
        parent: Option<(ChainId, CacheId)>,
        staged: Option<&StagedLayer>,
        staging: &Path,
        consumed: &mut HashMap<DiffId, CacheId>,
        placed: &mut Vec<(CacheId, String)>,
    ) -> Result<LayerRecord, Error> {
        let cache_id = CacheId::random();
        // Where this layer's files come from: the staged extraction, or a copy of a stored
        // layer with the same DiffID (a known blob, or one diff used at two chain positions).
        // ... and its tape: recorded by the extraction, or the copied layer's.
        let (source, stats, tape) = match (staged, consumed.get(&diff_id)) {
            (Some(s), None) if s.dir.is_some() => (
                s.dir.clone().unwrap_or_default(),
                s.stats.clone(),
                TapeFrom::Recorded,
            ),
            (_, Some(&from)) => (
                copy_layer_to_staging(&self.driver.diff_dir(from), staging)?,
                staged.and_then(|s| s.stats.clone()),
                TapeFrom::Layer(from),
            ),
            _ => {
                let twin = txn
                    .layers()?
                    .into_iter()
                    .find(|l| l.diff_id == diff_id)
                    .ok_or_else(|| Error::Invalid(format!("layer {diff_id} was skipped as known but is no longer stored; retry the import")))?;
                let copy = copy_layer_to_staging(&self.driver.diff_dir(twin.cache_id), staging)?;
                (
                    copy,
                    Some(archive::LayerStats {
                        diff_id,
                        tar_bytes: twin.tar_bytes,
                        size: twin.size,
                        files: twin.files,
                        tape: None,
                    }),
                    TapeFrom::Layer(twin.cache_id),
                )
            }
        };
        let placed_layer = self
            .driver
            .create_layer(cache_id, parent.map(|p| p.1), &source)?;
        placed.push((cache_id, placed_layer.short_link.clone()));
        // The tape is durable with the rest (the import syncs the filesystem before it
        // commits); a layer without one (the tar could not be taped, or an older strata
        // imported it) is exported by walking its files and cannot be verified.
        let placed_tape = self.driver.tape_path(cache_id);
        let written = match (&tape, stats.as_ref().and_then(|s| s.tape.as_ref())) {
            (TapeFrom::Recorded, Some(bytes)) => std::fs::write(&placed_tape, bytes),
            (TapeFrom::Recorded, None) => Ok(()),
            (TapeFrom::Layer(from), _) => {
                match std::fs::copy(self.driver.tape_path(*from), &placed_tape) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    copied => copied.map(drop),
                }
            }
        };
        written.map_err(Error::io("placing the tape of", &placed_tape))?;
        let stats = stats.unwrap_or(archive::LayerStats {
            diff_id,
            tar_bytes: 0,
            size: 0,
            files: 0,
            tape: None,
        });
        Ok(LayerRecord {
            chain_id,
            diff_id,
            parent: parent.map(|p| p.0),
            cache_id,
            short_link: placed_layer.short_link,
            size: stats.size,
            tar_bytes: stats.tar_bytes,
            files: stats.files,
            image_users: 1,
            created: now(),
        })
    }

    /// Finds an image by `repo:tag`, full id, or unique id prefix (at least 4 hex digits).
    pub fn resolve_image(&self, reference: &str) -> Result<ImageRecord, Error> {
        let r = self.db.read()?;
        resolve_image_in(&r, reference)
    }

    /// `image ls`: O(images × chain length), from records only.
    pub fn list_images(&self) -> Result<Vec<ImageSummary>, Error> {
        let r = self.db.read()?;
        let layers: HashMap<ChainId, LayerRecord> =
            r.layers()?.into_iter().map(|l| (l.chain_id, l)).collect();
        let mut out: Vec<ImageSummary> = r
            .images()?
            .into_iter()
            .map(|img| {
                let unique_size = img
                    .chain
                    .iter()
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .filter_map(|c| layers.get(c))
                    .filter(|l| l.image_users <= 1)
                    .map(|l| l.size)
                    .sum();
                ImageSummary {
                    id: img.id,
                    tags: img.tags.clone(),
                    created: img.config.created.clone(),
                    size: img.size,
                    shared_size: img.size.saturating_sub(unique_size),
                    unique_size,
                    layers: img.chain.len(),
                    containers: img.container_users,
                    mounted: img.view_mounts > 0,
                }
            })
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// `image inspect`.
    pub fn inspect_image(&self, reference: &str) -> Result<ImageDetails, Error> {
        let r = self.db.read()?;
        let img = resolve_image_in(&r, reference)?;
        let mut layers = Vec::with_capacity(img.chain.len());
        for (chain_id, diff_id) in img.chain.iter().zip(&img.diff_ids) {
            let size = r.layer(chain_id)?.map_or(0, |l| l.size);
            layers.push(ImageLayer {
                diff_id: *diff_id,
                chain_id: *chain_id,
                size,
            });
        }
        let raw_config =
            serde_json::from_slice(&img.config_json).unwrap_or(serde_json::Value::Null);
        Ok(ImageDetails {
            id: img.id,
            tags: img.tags,
            config: img.config,
            layers,
            size: img.size,
            imported: img.imported,
            view_mounts: img.view_mounts,
            view_path: (img.view_mounts > 0).then(|| self.views_dir().join(img.id.0.hex())),
            containers: img.container_users,
            raw_config,
        })
    }

    /// `image tag SRC DST`: points `target` at the image `source` names, moving it from any
    /// image it named before.
    pub fn tag_image(&self, source: &str, target: &ImageRef) -> Result<ImageId, Error> {
        let txn = self.db.write()?;
        let img = resolve_image_in(&txn, source)?;
        retag(&txn, target, img.id)?;
        txn.commit()?;
        Ok(img.id)
    }

    /// `image rm [-f] REF`. A tag of an image with other tags is only untagged (as `docker
    /// rmi`). Deleting an image refuses while containers use it or views are mounted, unless
    /// `force`: then views are unmounted, and an image containers still use loses its names
    /// but stays (dangling) until its last container is removed, as with `docker rmi -f`. Records go first, directories
    /// after: a crash in between leaves orphans that the next start-up removes.
    pub fn remove_image(&self, reference: &str, force: bool) -> Result<RemovedImage, Error> {
        let txn = self.db.write()?;
        let mut img = resolve_image_in(&txn, reference)?;
        let mut removed = RemovedImage::default();
        let by_tag = reference
            .parse::<ImageRef>()
            .ok()
            .filter(|t| img.tags.contains(t));
        if let Some(tag) = by_tag.filter(|_| img.tags.len() > 1) {
            img.tags.retain(|t| t != &tag);
            txn.delete_tag(&tag)?;
            txn.put_image(&img)?;
            txn.commit()?;
            removed.untagged.push(tag);
            return Ok(removed);
        }
        if img.container_users > 0 {
            if !force {
                return Err(Error::InUse(format!(
                    "image {} is used by {} container(s); remove them first, or use --force to untag it",
                    img.id, img.container_users
                )));
            }
            // As `docker rmi -f`: the names go, the image stays for its containers (dangling).
            for tag in std::mem::take(&mut img.tags) {
                txn.delete_tag(&tag)?;
                removed.untagged.push(tag);
            }
            txn.put_image(&img)?;
            txn.commit()?;
            return Ok(removed);
        }
        if img.view_mounts > 0 && !force {
            return Err(Error::InUse(format!(
                "image {} is mounted ({} view(s)); unmount it or use --force",
                img.id, img.view_mounts
            )));
        }
        for tag in &img.tags {
            txn.delete_tag(tag)?;
            removed.untagged.push(tag.clone());
        }
        txn.delete_image(&img.id)?;
        let mut doomed = Vec::new();
        for chain_id in img.chain.iter().collect::<HashSet<_>>() {
            let Some(mut layer) = txn.layer(chain_id)? else {
                continue;
            };
            layer.image_users = layer.image_users.saturating_sub(1);
            if layer.image_users == 0 {
                txn.delete_layer(chain_id)?;
                doomed.push(layer);
            } else {
                txn.put_layer(&layer)?;
            }
        }
        let remaining: HashSet<DiffId> = txn.layers()?.iter().map(|l| l.diff_id).collect();
        for layer in &doomed {
            if !remaining.contains(&layer.diff_id) {
                txn.delete_blob_keys_for(&layer.diff_id)?;
            }
        }
        txn.commit()?;
        if img.view_mounts > 0 {
            let view = self.views_dir().join(img.id.0.hex());
            mounts::unmount(&view)?;
            std::fs::remove_dir(&view).map_err(Error::io("removing", &view))?;
        }
        for layer in doomed {
            self.driver
                .remove_layer(layer.cache_id, &layer.short_link)?;
            removed.deleted_layers.push(layer.chain_id);
        }
        removed.deleted = Some(img.id);
        Ok(removed)
    }

    /// `image mount`: a read-only overlay view of the image at `<root>/views/<id>`,
    /// reference-counted: each call adds a reference and returns the same path.
    pub fn mount_image(&self, reference: &str) -> Result<PathBuf, Error> {
        let txn = self.db.write()?;
        let mut img = resolve_image_in(&txn, reference)?;
        let path = self.views_dir().join(img.id.0.hex());
        if img.view_mounts == 0 {
            let mut chain = Vec::with_capacity(img.chain.len());
            for c in &img.chain {
                let l = txn.layer(c)?.ok_or_else(|| Error::NotFound {
                    kind: "layer",
                    name: c.to_string(),
                })?;
                chain.push((l.cache_id, l.short_link));
            }
            let spec = self.driver.view(&chain);
            std::fs::create_dir_all(&path).map_err(Error::io("creating", &path))?;
            if let Err(e) = mounts::mount(&spec, &path) {
                let _ = std::fs::remove_dir(&path);
                return Err(e.into());
            }
        }
        img.view_mounts += 1;
        txn.put_image(&img)?;
        if let Err(e) = txn.commit() {
            if img.view_mounts == 1 {
                let _ = mounts::unmount(&path);
            }
            return Err(e.into());
        }
        Ok(path)
    }

    /// `image unmount`: drops one reference; the last one unmounts. `all` drops every one.
    pub fn unmount_image(&self, reference: &str, all: bool) -> Result<u32, Error> {
        let txn = self.db.write()?;
        let mut img = resolve_image_in(&txn, reference)?;
        if img.view_mounts == 0 {
            return Err(Error::Invalid(format!("image {} is not mounted", img.id)));
        }
        img.view_mounts = if all { 0 } else { img.view_mounts - 1 };
        txn.put_image(&img)?;
        txn.commit()?;
        if img.view_mounts == 0 {
            let path = self.views_dir().join(img.id.0.hex());
            mounts::unmount(&path)?;
            std::fs::remove_dir(&path).map_err(Error::io("removing", &path))?;
        }
        Ok(img.view_mounts)
    }
}

/// Copies a stored layer's diff into staging, for a second chain position of the same diff.
fn copy_layer_to_staging(from: &Path, staging: &Path) -> Result<PathBuf, Error> {
    let to = staging.join(format!("copy-{}", CacheId::random()));
    copy_tree(from, &to)?;
    Ok(to)
}

/// Where a placed layer's tape comes from.
enum TapeFrom {
    /// The extraction recorded it (in the layer's stats, if the tar could be taped).
    Recorded,
    /// A stored layer with the same `DiffID`, whose files were copied.
    Layer(CacheId),
}

/// Points `tag` at `id`, untagging the image it named before.
fn retag(txn: &WriteTxn, tag: &ImageRef, id: ImageId) -> Result<(), Error> {
    if let Some(old) = txn.tag(tag)? {
        if old == id {
            return Ok(());
        }
        if let Some(mut prev) = txn.image(&old)? {
            prev.tags.retain(|t| t != tag);
            txn.put_image(&prev)?;
        }
    }
    let mut img = txn.image(&id)?.ok_or_else(|| Error::NotFound {
        kind: "image",
        name: id.to_string(),
    })?;
    if !img.tags.contains(tag) {
        img.tags.push(tag.clone());
        img.tags.sort();
    }
    txn.put_image(&img)?;
    txn.put_tag(tag, &id)?;
    Ok(())
}

/// Finds an image inside a transaction (see [`Store::resolve_image`]).
pub(crate) fn resolve_image_in(r: &impl Reads, reference: &str) -> Result<ImageRecord, Error> {
    let not_found = || Error::NotFound {
        kind: "image",
        name: reference.to_owned(),
    };
    // Docker's order: a name first, then an id or id prefix.
    if let Some(id) = reference
        .parse::<ImageRef>()
        .ok()
        .map(|tag| r.tag(&tag))
        .transpose()?
        .flatten()
    {
        return r.image(&id)?.ok_or_else(not_found);
    }
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    // A full id is a direct lookup; only a prefix needs the scan.
    if let Ok(digest) = Digest::from_hex(hex) {
        return r.image(&ImageId(digest))?.ok_or_else(not_found);
    }
    if !is_hex_prefix(hex) {
        return Err(not_found());
    }
    unique_by_prefix(r.images()?, |i| i.id.0.hex(), hex, "image")
}
