//! The janitor: background threads for work that callers need not wait for.
//!
//! - **Deleting** a removed directory. The caller has already renamed it into `tmp/` (one
//!   syscall), so a crash before the janitor gets to it leaves it where start-up cleans.
//! - **Finishing unmounts.** Unmounting runs the overlay's superblock teardown, which syncs
//!   the whole upper filesystem (`ovl_sync_fs` calls `sync_filesystem` on it), most of an
//!   unmount's time. While a container is mounted the janitor holds a reference to its
//!   overlay, so an unmount (`MNT_DETACH`, as Docker's overlay2 driver unmounts) only takes
//!   it out of the mount tree; when the janitor then drops its reference, the teardown runs
//!   on the janitor's thread, and the container's next mount waits until it is done. Should
//!   the janitor not hold a reference yet, the unmount itself pays for the teardown: slower,
//!   never wrong.
//!
//! The references are file descriptors, and a `fork` anywhere in the process would copy them
//! into the child until its `execve`, keeping a torn-down overlay alive past the point where
//! we consider it gone. So the thread that holds them first gives itself a private file
//! descriptor table (`unshare(CLONE_FILES)`), and never forks: no other thread's fork can see
//! its descriptors.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use crate::container::{Claim, Teardown};
use crate::ids::CacheId;
use crate::sys::mount::open_mount_root;
use crate::sys::ns::private_fd_table;

enum MountJob {
    /// `id` is mounted at `merged`: take a reference to it.
    Hold { id: CacheId, merged: PathBuf },
    /// `id` was detached: drop the reference (its teardown runs), then `teardown`.
    Release { id: CacheId, teardown: Teardown },
    /// Hand `path` to the deleter once the jobs queued before it are done: a removed
    /// container's directory, deleted only after its overlay's teardown.
    Delete(PathBuf),
}

pub(crate) struct Janitor {
    mounts: Mutex<Option<Sender<MountJob>>>,
    deletions: Mutex<Option<Sender<PathBuf>>>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Janitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Janitor").finish_non_exhaustive()
    }
}

fn delete(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not delete a discarded directory; start-up will retry");
    }
}

/// The mount thread: a private descriptor table first (reported on `started`), then jobs.
fn hold_mounts(
    jobs: &Receiver<MountJob>,
    deletions: &Sender<PathBuf>,
    started: &SyncSender<std::io::Result<()>>,
) {
    let private = private_fd_table();
    let ok = private.is_ok();
    let _ = started.send(private);
    if !ok {
        return;
    }
    let mut held: HashMap<CacheId, OwnedFd> = HashMap::new();
    for job in jobs {
        match job {
            MountJob::Hold { id, merged } => match open_mount_root(&merged) {
                Ok(fd) => {
                    held.insert(id, fd);
                }
                // Out of descriptors, say: the unmount will tear down synchronously.
                Err(e) => {
                    tracing::debug!(path = %merged.display(), error = %e, "not holding a mount");
                }
            },
            MountJob::Release { id, teardown } => {
                drop(held.remove(&id));
                drop(teardown);
            }
            MountJob::Delete(path) => {
                if let Err(unsent) = deletions.send(path) {
                    delete(&unsent.0);
                }
            }
        }
    }
}

impl Janitor {
    pub(crate) fn start() -> std::io::Result<Self> {
        let (deletions, paths) = channel::<PathBuf>();
        let deleter = std::thread::Builder::new()
            .name("strata-discard".into())
            .spawn(move || {
                crate::sys::lower_thread_priority();
                for path in paths {
                    delete(&path);
                }
            })?;
        let (mounts, jobs) = channel::<MountJob>();
        let (started, answer) = sync_channel(1);
        let forward = deletions.clone();
        let holder = std::thread::Builder::new()
            .name("strata-mounts".into())
            .spawn(move || hold_mounts(&jobs, &forward, &started))?;
        answer
            .recv()
            .map_err(|_| std::io::Error::other("the mount thread ended at start"))??;
        Ok(Self {
            mounts: Mutex::new(Some(mounts)),
            deletions: Mutex::new(Some(deletions)),
            // The holder first: it forwards deletions until its queue is done.
            threads: vec![holder, deleter],
        })
    }

    fn send_mount_job(&self, job: MountJob) {
        let queue = self
            .mounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(q) = queue.as_ref() {
            // Unsent only once the janitor is being dropped; the job's teardown drops with it.
            let _ = q.send(job);
        }
    }

    /// `id` is now mounted at `merged`.
    pub(crate) fn hold(&self, id: CacheId, merged: PathBuf) {
        self.send_mount_job(MountJob::Hold { id, merged });
    }

    /// `id` was detached and `claim` holds it with no references left: its teardown finishes
    /// in the background, and `id` cannot be mounted again before (see [`Claim::into_teardown`]).
    pub(crate) fn release(&self, id: CacheId, claim: Claim) {
        self.send_mount_job(MountJob::Release {
            id,
            teardown: claim.into_teardown(),
        });
    }

    /// Deletes `path` (already outside the live tree) in the background, after the releases
    /// queued so far have run (see [`Self::release`]): for a directory under an overlay being
    /// torn down.
    pub(crate) fn delete_after_releases(&self, path: PathBuf) {
        self.send_mount_job(MountJob::Delete(path));
    }

    /// Deletes `path` (already outside the live tree) in the background.
    pub(crate) fn delete(&self, path: PathBuf) {
        let unsent = match self
            .deletions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            Some(q) => q.send(path).err().map(|e| e.0),
            None => Some(path),
        };
        if let Some(path) = unsent {
            delete(&path);
        }
    }
}

impl Drop for Janitor {
    /// Waits for queued releases and deletions to finish. References to overlays still
    /// mounted are dropped; the mounts stay.
    fn drop(&mut self) {
        use std::sync::PoisonError;
        drop(
            self.mounts
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        drop(
            self.deletions
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a janitor thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletions_are_done_when_the_janitor_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let doomed: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("d{i}"))).collect();
        for d in &doomed {
            std::fs::create_dir_all(d.join("a/b")).unwrap();
            std::fs::write(d.join("a/b/f"), b"x").unwrap();
        }
        let janitor = Janitor::start().unwrap();
        janitor.delete(doomed[0].clone());
        // Through the mount thread's queue, forwarded to the deleter.
        janitor.delete_after_releases(doomed[1].clone());
        janitor.delete(doomed[2].clone());
        drop(janitor);
        assert!(doomed.iter().all(|d| !d.exists()));
    }
}
