//! Containers: a writable overlay layer over an image's chain. One lifecycle verb per file.

mod commit;
mod create;
mod diff;
mod exec;
mod mount;
mod mount_table;
mod remove;

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use create::CreateOptions;
pub use diff::{Change, ChangeKind};
pub use exec::{ExecRequest, ExecStdio};
pub(crate) use mount_table::{Claim, MountTable, Teardown};

use crate::error::{Error, is_hex_prefix, unique_by_prefix};
use crate::ids::{CacheId, ImageId};
use crate::meta::{ContainerConfig, ContainerMount, ContainerRecord, Reads};
use crate::store::Store;

/// A container name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, as Docker allows. Built only by
/// [`ContainerName::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerName(String);

impl ContainerName {
    pub fn parse(name: &str) -> Result<Self, Error> {
        let name = name.strip_prefix('/').unwrap_or(name);
        let mut bytes = name.bytes();
        let ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
            && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            && name.len() <= 128;
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(Error::Invalid(format!(
                "invalid container name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-]* is allowed (at most 128 characters)"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A row of `container ls` and the body of `container inspect`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSummary {
    pub id: CacheId,
    pub name: String,
    pub image: ImageId,
    /// The image's first tag, if any.
    pub image_name: Option<String>,
    pub created: u64,
    pub mounted: bool,
    pub mount_path: Option<PathBuf>,
    pub config: ContainerConfig,
    pub mounts: Vec<ContainerMount>,
    /// Bytes in the writable layer, as last measured, and when (seconds since the epoch).
    pub rw_size: Option<u64>,
    pub rw_measured: Option<u64>,
    /// Image size plus the writable layer.
    pub virtual_size: u64,
}

impl Store {
    pub(crate) fn container_summary(
        &self,
        r: &impl Reads,
        c: ContainerRecord,
    ) -> Result<ContainerSummary, Error> {
        let image = r.image(&c.image)?;
        let size = image.as_ref().map_or(0, |i| i.size);
        let name = image.and_then(|i| i.tags.first().map(ToString::to_string));
        Ok(self.summary_with_image(c, size, name))
    }

    fn summary_with_image(
        &self,
        c: ContainerRecord,
        image_size: u64,
        image_name: Option<String>,
    ) -> ContainerSummary {
        let rw = c.rw_size.map(|(bytes, _)| bytes);
        let mounted = self.container_mounts.refs(c.id) > 0;
        ContainerSummary {
            id: c.id,
            name: c.name,
            image: c.image,
            image_name,
            created: c.created,
            mounted,
            mount_path: mounted.then(|| self.driver.merged_dir(c.id)),
            config: c.config,
            mounts: c.mounts,
            rw_size: rw,
            rw_measured: c.rw_size.map(|(_, at)| at),
            virtual_size: image_size + rw.unwrap_or(0),
        }
    }

    /// `container ls`: from records only (sizes as last measured).
    pub fn list_containers(&self) -> Result<Vec<ContainerSummary>, Error> {
        let r = self.db.read()?;
        // One image lookup per image, not per container.
        let images: HashMap<ImageId, (u64, Option<String>)> = r
            .images()?
            .into_iter()
            .map(|i| (i.id, (i.size, i.tags.first().map(ToString::to_string))))
            .collect();
        let mut out: Vec<ContainerSummary> = r
            .containers()?
            .into_iter()
            .map(|c| {
                let (size, name) = images.get(&c.image).cloned().unwrap_or_default();
                self.summary_with_image(c, size, name)
            })
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    /// `container inspect`.
    pub fn inspect_container(&self, reference: &str) -> Result<ContainerSummary, Error> {
        let r = self.db.read()?;
        let c = resolve_container(&r, reference)?;
        self.container_summary(&r, c)
    }
}

/// Finds a container by name, full id, or unique id prefix (at least 4 hex digits).
pub(crate) fn resolve_container(r: &impl Reads, reference: &str) -> Result<ContainerRecord, Error> {
    let not_found = || Error::NotFound {
        kind: "container",
        name: reference.to_owned(),
    };
    let name = reference.strip_prefix('/').unwrap_or(reference);
    if let Some(c) = r.container_by_name(name)? {
        return Ok(c);
    }
    if !is_hex_prefix(reference) {
        return Err(not_found());
    }
    // A full id is a direct lookup; only a prefix needs the scan.
    if let Ok(id) = reference.parse::<CacheId>() {
        return r.container(&id)?.ok_or_else(not_found);
    }
    unique_by_prefix(r.containers()?, |c| c.id.hex(), reference, "container")
}
