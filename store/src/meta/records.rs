//! The records kept in redb. Adding a field changes the encoding: bump the schema version,
//! add a migration in `schema.rs`, and update the golden bytes in `tests.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{CacheId, ChainId, DiffId, ImageId, ImageRef};

/// One layer in its position in a chain, stored once however many images use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub chain_id: ChainId,
    pub diff_id: DiffId,
    pub parent: Option<ChainId>,
    /// Directory name under the driver's home (`overlay2/<cache_id>`).
    pub cache_id: CacheId,
    /// Name of the `l/` short link to this layer's diff dir (overlay2).
    pub short_link: String,
    /// Bytes of regular files in the diff, hardlinks counted once.
    pub size: u64,
    /// Length of the uncompressed layer tar (what `layer export` writes, give or take ordering).
    pub tar_bytes: u64,
    /// Entries in the layer.
    pub files: u64,
    /// Images whose chain contains this layer. The layer is removed when this drops to zero.
    pub image_users: u32,
    /// Seconds since the epoch.
    pub created: u64,
}

/// The parts of an image config that Strata uses; the verbatim JSON is kept beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfigRecord {
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub created: Option<String>,
    pub author: Option<String>,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: ImageId,
    pub config: ImageConfigRecord,
    pub config_json: Vec<u8>,
    pub diff_ids: Vec<DiffId>,
    /// Chain ids bottom first; `chain.last()` is the top layer.
    pub chain: Vec<ChainId>,
    pub tags: Vec<ImageRef>,
    /// Sum of the chain's layer sizes.
    pub size: u64,
    /// Seconds since the epoch.
    pub imported: u64,
    /// Active read-only views (`image mount`), reference-counted.
    pub view_mounts: u32,
    /// Containers created from this image.
    pub container_users: u32,
}

/// How a container runs commands: from the image config, overridable at create.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// A volume, bind or tmpfs mount of a container, validated at create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMount {
    pub kind: ContainerMountKind,
    /// Host path (bind) or volume name (volume); empty for tmpfs.
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    pub readonly: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerMountKind {
    Bind,
    Volume,
    Tmpfs,
}

/// A container: a writable layer (overlay upper) over its image's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: CacheId,
    pub name: String,
    pub image: ImageId,
    /// The image's chain when the container was created, bottom first.
    pub chain: Vec<ChainId>,
    pub config: ContainerConfig,
    pub mounts: Vec<ContainerMount>,
    pub created: u64,
    /// Bytes in the upper dir and when they were measured (seconds since the epoch).
    pub rw_size: Option<(u64, u64)>,
}

/// A named local volume. Filled in by the volumes work; minimal for now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub created: u64,
    pub users: u32,
    /// Bytes in `_data` and when they were measured (seconds since the epoch).
    pub size: Option<(u64, u64)>,
}
