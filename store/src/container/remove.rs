//! `container rm`: the record first, then the directories; references released in the same
//! transaction as the record's removal.

use super::resolve_container;
use crate::error::Error;
use crate::meta::{ContainerMountKind, Reads};
use crate::store::Store;

impl Store {
    /// Removes a container. Refused while it is mounted or an exec runs in it, unless `force`
    /// (which kills its exec processes and unmounts it). Volumes stay; their use counts drop.
    /// Once the record's removal is committed, the container is gone and this succeeds even if
    /// unmounting it or cleaning up its directories fails (logged; start-up unmounts and
    /// removes what no record names).
    pub fn remove_container(&self, reference: &str, force: bool) -> Result<String, Error> {
        let id = resolve_container(&self.db.read()?, reference)?.id;
        // An unmount's teardown may still be running: the removal goes ahead of it (nothing
        // mounts the directory again) and has the directory deleted after it.
        let claim = self.container_mounts.claim_for_removal(id);
        let txn = self.db.write()?;
        let c = txn.container(&id)?.ok_or_else(|| Error::NotFound {
            kind: "container",
            name: reference.to_owned(),
        })?;
        let running = self.exec_pids(c.id);
        if !force && (claim.refs() > 0 || !running.is_empty()) {
            let why = if running.is_empty() {
                "mounted"
            } else {
                "running a command"
            };
            return Err(Error::InUse(format!(
                "container {} is {why}; unmount it or use --force",
                c.name
            )));
        }
        txn.delete_container(&c)?;
        if let Some(mut image) = txn.image(&c.image)? {
            image.container_users = image.container_users.saturating_sub(1);
            txn.put_image(&image)?;
        }
        for m in c
            .mounts
            .iter()
            .filter(|m| m.kind == ContainerMountKind::Volume)
        {
            if let Some(mut v) = txn.volume(&m.source)? {
                v.users = v.users.saturating_sub(1);
                txn.put_volume(&v)?;
            }
        }
        txn.commit()?;
        for pid in running {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // The container is gone once that commit is: what fails from here on is logged, and
        // start-up cleans up after it (it unmounts and removes what no record names).
        let released = claim.refs() > 0;
        let teardown_queued = released || claim.teardown_pending();
        if released && let Err(e) = self.release_overlay(c.id, claim) {
            tracing::warn!(container = %c.name, id = %c.id, error = %e, "removed container is still mounted; start-up unmounts it");
            self.container_mounts.claim(c.id).set_refs(0);
        }
        // A released overlay's teardown (the sync of its upper dir) may still be queued: the
        // directory is deleted after it, not under it.
        let dir = self.driver.container_dir(c.id);
        let discarded = if teardown_queued {
            self.discard_after_teardown(&dir)
        } else {
            self.discard(&dir)
        };
        if let Err(e) = discarded {
            tracing::warn!(container = %c.name, id = %c.id, error = %e, "could not move the removed container's directory away; start-up removes it");
        }
        tracing::info!(container = %c.name, id = %c.id, "removed container");
        Ok(c.name)
    }
}
