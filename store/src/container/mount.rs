//! `container mount` / `unmount`: the merged overlay, reference-counted.

use std::path::PathBuf;

use super::resolve_container;
use crate::error::Error;
use crate::meta::{ContainerRecord, Reads, WriteTxn};
use crate::mounts;
use crate::store::Store;

impl Store {
    /// Adds a mount reference; the first one mounts the overlay. Returns the merged path.
    pub fn mount_container(&self, reference: &str) -> Result<PathBuf, Error> {
        let txn = self.db.write_volatile()?;
        let mut c = resolve_container(&txn, reference)?;
        let path = self.driver.merged_dir(c.id);
        if c.mounted == 0 {
            self.mount_rw(&txn, &c)?;
            self.notify_mount(c.id, &path, true);
        }
        c.mounted += 1;
        txn.put_container(&c)?;
        if let Err(e) = txn.commit() {
            if c.mounted == 1 {
                let _ = mounts::unmount(&path);
            }
            return Err(e.into());
        }
        Ok(path)
    }

    fn mount_rw(&self, txn: &WriteTxn, c: &ContainerRecord) -> Result<(), Error> {
        let mut chain = Vec::with_capacity(c.chain.len());
        for id in &c.chain {
            let l = txn.layer(id)?.ok_or_else(|| Error::NotFound {
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
        let txn = self.db.write_volatile()?;
        let mut c = resolve_container(&txn, reference)?;
        if c.mounted == 0 {
            return Ok(0);
        }
        c.mounted = if all { 0 } else { c.mounted - 1 };
        txn.put_container(&c)?;
        txn.commit()?;
        if c.mounted == 0 {
            let merged = self.driver.merged_dir(c.id);
            self.notify_mount(c.id, &merged, false);
            mounts::unmount(&merged)?;
        }
        Ok(c.mounted)
    }
}
