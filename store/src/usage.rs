//! `system df`: disk usage from stored sizes, O(records).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::container::ContainerSummary;
use crate::error::Error;
use crate::ids::ChainId;
use crate::image::ImageSummary;
use crate::meta::Reads;
use crate::store::Store;
use crate::volume::VolumeSummary;

/// Totals per kind, like `docker system df`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskUsage {
    pub images: usize,
    pub images_active: usize,
    /// Bytes on disk for all layers, each stored once.
    pub layers_size: u64,
    /// Bytes of layers no container uses and no view mounts (what `image rm` could free).
    pub reclaimable: u64,
    pub layers: usize,
    pub containers: usize,
    pub volumes: usize,
    /// Bytes in containers' writable layers, as last measured.
    pub containers_rw_bytes: u64,
    pub containers_active: usize,
    /// Bytes in volumes, as last measured.
    pub volumes_bytes: u64,
    pub volumes_active: usize,
    /// Per image, with shared and unique bytes (`-v`).
    pub image_details: Vec<ImageSummary>,
    /// Per container: writable-layer and virtual sizes (`-v`).
    pub container_details: Vec<ContainerSummary>,
    /// Per volume (`-v`).
    pub volume_details: Vec<VolumeSummary>,
}

impl Store {
    pub fn disk_usage(&self) -> Result<DiskUsage, Error> {
        let images = self.list_images()?;
        let containers = self.list_containers()?;
        let volumes = self.list_volumes(None)?;
        let r = self.db.read()?;
        let layers: HashMap<ChainId, u64> = r
            .layers()?
            .into_iter()
            .map(|l| (l.chain_id, l.size))
            .collect();
        let mut active_layers = std::collections::HashSet::new();
        let mut images_active = 0;
        for img in r.images()? {
            if img.container_users > 0 || img.view_mounts > 0 {
                images_active += 1;
                active_layers.extend(img.chain);
            }
        }
        let layers_size = layers.values().sum();
        let active: u64 = active_layers.iter().filter_map(|c| layers.get(c)).sum();
        Ok(DiskUsage {
            images: images.len(),
            images_active,
            layers_size,
            reclaimable: layers_size - active,
            layers: layers.len(),
            containers: containers.len(),
            containers_rw_bytes: containers.iter().filter_map(|c| c.rw_size).sum(),
            containers_active: containers.iter().filter(|c| c.mounted).count(),
            volumes: volumes.len(),
            volumes_bytes: volumes.iter().filter_map(|v| v.size).sum(),
            volumes_active: volumes.iter().filter(|v| v.users > 0).count(),
            image_details: images,
            container_details: containers,
            volume_details: volumes,
        })
    }
}

/// Bytes of regular files under `dir` (hardlinks counted once), not following symlinks or
/// crossing into other filesystems. Errors on single entries are skipped: this is a measure.
pub(crate) fn dir_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.dev() != root.dev() {
                continue;
            }
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && (m.nlink() == 1 || seen.insert(m.ino())) {
                total += m.len();
            }
        }
    }
    total
}
