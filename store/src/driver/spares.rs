//! Ready-made container directories, so that a container create is one `rename` instead of
//! four `mkdir`s.
//!
//! A background thread keeps up to [`TARGET`] empty skeletons (`diff/`, `work/`, `merged/`, each
//! with its final mode) in `overlay2/spare/`; a create renames one to `overlay2/<id>` and wakes
//! the thread to make another. Measured on ext4, four `mkdir`s cost 88 to 600 µs (more while
//! many inodes were deleted recently, which ext4 without a journal skips over when it allocates)
//! and the rename 26 to 30 µs. Skeletons are always new: a removed container's directories are
//! never reused, since a process that kept its lazily detached overlay alive could still write
//! into them.
//!
//! The thread starts filling at the first create, so a store that never creates a container
//! gets no `spare/`. Spares left by an earlier run (a crash, or a daemon stopped mid-fill) are
//! removed when the store opens: they hold nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::DriverError;
use crate::ids::CacheId;

/// Skeletons kept ready: enough for a burst of creates while the thread catches up.
const TARGET: usize = 16;

#[derive(Debug, Default)]
struct State {
    ready: Vec<PathBuf>,
    /// Set by the first create; until then nothing is made.
    wanted: bool,
    /// Making a skeleton failed: wait for the next take before trying again.
    failed: bool,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The pool of skeletons and its filler thread.
#[derive(Debug)]
pub(super) struct Spares {
    dir: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Makes one skeleton at `path`, creating its missing parents.
pub(super) type MakeSkeleton = fn(&Path) -> Result<(), DriverError>;

impl Spares {
    /// Removes leftovers in `dir` and starts the (idle) filler thread. Without a thread (none
    /// could be spawned), every take is empty and creates make their directories themselves.
    pub(super) fn start(dir: PathBuf, make: MakeSkeleton) -> Result<Self, DriverError> {
        super::overlay2::remove_tree(&dir)?;
        let shared = Arc::new(Shared::default());
        let filler = {
            let shared = Arc::clone(&shared);
            let dir = dir.clone();
            std::thread::Builder::new()
                .name("strata-spares".into())
                .spawn(move || fill(&shared, &dir, make))
        };
        let thread = match filler {
            Ok(thread) => Some(thread),
            Err(e) => {
                tracing::warn!(error = %e, "no thread for spare container directories; creates make their own");
                None
            }
        };
        Ok(Self {
            dir,
            shared,
            thread,
        })
    }

    /// A ready skeleton, if there is one, and a nudge to the filler either way.
    pub(super) fn take(&self) -> Option<PathBuf> {
        let mut state = self.shared.lock();
        state.wanted = true;
        state.failed = false;
        let spare = state.ready.pop();
        drop(state);
        self.shared.wake.notify_one();
        spare
    }
}

impl Drop for Spares {
    /// Stops the filler; the spares stay until the next open removes them.
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(dir = %self.dir.display(), "the spare directory thread panicked");
        }
    }
}

/// The filler: keeps `TARGET` skeletons in `dir` while creates want them.
fn fill(shared: &Shared, dir: &Path, make: MakeSkeleton) {
    crate::sys::lower_thread_priority();
    loop {
        {
            let mut state = shared.lock();
            while !state.stop && (!state.wanted || state.failed || state.ready.len() >= TARGET) {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.stop {
                return;
            }
        }
        let path = dir.join(CacheId::random().hex());
        // `make` creates missing parents: `dir` too, the first time or after a removal.
        let made = make(&path);
        let mut state = shared.lock();
        match made {
            Ok(()) => state.ready.push(path),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not make a spare container directory; creates make their own");
                state.failed = true;
            }
        }
    }
}
