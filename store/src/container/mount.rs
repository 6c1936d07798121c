//! `container mount` / `unmount`: the merged overlay, reference-counted in memory (see
//! [`super::mount_table`]).

use std::path::PathBuf;

use super::mount_table::Claim;
use super::resolve_container;
use crate::error::Error;
use crate::ids::CacheId;
use crate::meta::{ContainerRecord, Reads};
use crate::mounts;
use crate::store::Store;

impl Store {
    /// Adds a mount reference; the first one mounts the overlay. Returns the merged path.
    pub fn mount_container(&self, reference: &str) -> Result<PathBuf, Error> {
        let id = resolve_container(&self.db.read()?, reference)?.id;
        let mut claim = self.container_mounts.claim(id);
        // A remove may have gone first while this waited for the claim.
        let r = self.db.read()?;
        let c = r.container(&id)?.ok_or_else(|| Error::NotFound {
            kind: "container",
            name: reference.to_owned(),
        })?;
        let path = self.driver.merged_dir(id);
        if claim.refs() == 0 {
            // No exec may be copying the mount table (see `spawn_exec`): an exec's copy of an
            // earlier mount of this container would outlive the janitor's release.
            let _no_copies = super::exec::NAMESPACE_COPIES
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.mount_rw(&r, &c)?;
            self.janitor.hold(id, path.clone());
            self.notify_mount(id, &path, true);
        }
        claim.set_refs(claim.refs() + 1);
        Ok(path)
    }

    fn mount_rw(&self, r: &impl Reads, c: &ContainerRecord) -> Result<(), Error> {
        let mut chain = Vec::with_capacity(c.chain.len());
        for id in &c.chain {
            let l = r.layer(id)?.ok_or_else(|| Error::NotFound {
                kind: "layer",
                name: id.to_string(),
            })?;
            chain.push((l.cache_id, l.short_link));
        }
        let spec = self.driver.rw_mount(c.id, &chain);
        mounts::mount(&spec, &self.driver.merged_dir(c.id))?;
        Ok(())
    }

    /// Drops a mount reference (`all`: every one); the last one unmounts. Returns how many
    /// remain. Unmounting a container that is not mounted is not an error (idempotent).
    pub fn unmount_container(&self, reference: &str, all: bool) -> Result<u32, Error> {
        let id = resolve_container(&self.db.read()?, reference)?.id;
        let mut claim = self.container_mounts.claim(id);
        let remaining = match claim.refs() {
            0 => return Ok(0),
            refs if refs > 1 && !all => refs - 1,
            _ => 0,
        };
        if remaining == 0 {
            self.release_overlay(id, claim)?;
        } else {
            claim.set_refs(remaining);
        }
        Ok(remaining)
    }

    /// Takes `id`'s overlay out of the mount tree and leaves its teardown (the sync of the
    /// upper filesystem) to the janitor; the next mount of `id` waits for it. The count is zero
    /// as soon as this returns; on error the mount and the count stay as they were. An overlay
    /// already unmounted (behind the store's back) counts as released.
    pub(crate) fn release_overlay(&self, id: CacheId, claim: Claim) -> Result<(), Error> {
        let merged = self.driver.merged_dir(id);
        self.notify_mount(id, &merged, false);
        match mounts::detach(&merged) {
            Err(mounts::MountError::Unmount { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) =>
            {
                tracing::warn!(container = %id, path = %merged.display(), "the overlay was already unmounted (not by strata)");
            }
            other => other?,
        }
        self.janitor.release(id, claim);
        Ok(())
    }
}
