//! Container mount references, kept in memory.
//!
//! The kernel's mount table is what outlives the daemon: at open, a container whose merged
//! directory is mounted gets one reference. Docker's overlay2 driver counts the same way
//! (moby `daemon/graphdriver/counter.go`: a `RefCounter` that finds a path mounted with no
//! count adopts it as one). Recording the count in the database would cost every mount and
//! unmount a commit, and the next durable commit (a create or a remove) would flush the pages
//! those commits dirtied.
//!
//! Changing a container's mounts is exclusive: a [`Claim`] holds the container until dropped,
//! and other claimers wait. An unmount turns its claim into a [`Teardown`], which travels with
//! the detached overlay to the janitor and is dropped once the overlay's teardown finished, so
//! a new mount of the same upper dir never overlaps the old one (overlayfs refuses or warns
//! about an upper dir in use by another mount). A removal does not mount anything, so it
//! need not wait for that teardown: [`MountTable::claim_for_removal`] goes ahead of it and
//! says it is pending, and the removal has the directory deleted after it.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::ids::CacheId;

#[derive(Debug, Default)]
struct Entry {
    refs: u32,
    claimed: bool,
    /// A released overlay's teardown has not finished yet (a [`Teardown`] is alive).
    tearing_down: bool,
}

#[derive(Debug, Default)]
pub(crate) struct MountTable {
    entries: Mutex<HashMap<CacheId, Entry>>,
    released: Condvar,
}

impl MountTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<CacheId, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Mount references of `id` now.
    pub(crate) fn refs(&self, id: CacheId) -> u32 {
        self.lock().get(&id).map_or(0, |e| e.refs)
    }

    /// Reference counts of every mounted container.
    pub(crate) fn mounted(&self) -> HashMap<CacheId, u32> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.refs > 0)
            .map(|(id, e)| (*id, e.refs))
            .collect()
    }

    /// Start-up: the kernel has `id` mounted.
    pub(crate) fn adopt(&self, id: CacheId) {
        self.lock().entry(id).or_default().refs = 1;
    }

    /// Waits until no one else holds `id` and its last overlay's teardown is done, then holds
    /// it.
    pub(crate) fn claim(self: &Arc<Self>, id: CacheId) -> Claim {
        self.claim_when(id, |e| e.claimed || e.tearing_down)
    }

    /// [`Self::claim`] for removing the container: waits for other claims, not for a pending
    /// teardown ([`Claim::teardown_pending`] tells).
    pub(crate) fn claim_for_removal(self: &Arc<Self>, id: CacheId) -> Claim {
        self.claim_when(id, |e| e.claimed)
    }

    /// Applies `release` to `id`'s entry, forgets the entry once nothing holds it, and wakes
    /// the waiters.
    fn let_go(&self, id: CacheId, release: impl FnOnce(&mut Entry)) {
        let mut entries = self.lock();
        if let Some(e) = entries.get_mut(&id) {
            release(e);
            if e.refs == 0 && !e.claimed && !e.tearing_down {
                entries.remove(&id);
            }
        }
        drop(entries);
        self.released.notify_all();
    }

    fn claim_when(self: &Arc<Self>, id: CacheId, busy: impl Fn(&Entry) -> bool) -> Claim {
        let mut entries = self.lock();
        while entries.get(&id).is_some_and(&busy) {
            entries = self
                .released
                .wait(entries)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let entry = entries.entry(id).or_default();
        entry.claimed = true;
        Claim {
            table: self.clone(),
            id,
            refs: entry.refs,
            teardown_pending: entry.tearing_down,
        }
    }
}

/// Exclusive hold of one container's mount state; released on drop.
#[derive(Debug)]
pub(crate) struct Claim {
    table: Arc<MountTable>,
    id: CacheId,
    refs: u32,
    teardown_pending: bool,
}

impl Claim {
    pub(crate) fn refs(&self) -> u32 {
        self.refs
    }

    /// The container's last overlay was still being torn down when this claim was taken
    /// (only a [`MountTable::claim_for_removal`] goes ahead of a teardown).
    pub(crate) fn teardown_pending(&self) -> bool {
        self.teardown_pending
    }

    /// Sets the count, visible to readers at once.
    pub(crate) fn set_refs(&mut self, refs: u32) {
        self.refs = refs;
        if let Some(e) = self.table.lock().get_mut(&self.id) {
            e.refs = refs;
        }
    }

    /// Releases the claim for an overlay detached with no references left: until the
    /// [`Teardown`] is dropped, other claims (but a removal's) wait.
    pub(crate) fn into_teardown(mut self) -> Teardown {
        self.set_refs(0);
        if let Some(e) = self.table.lock().get_mut(&self.id) {
            e.tearing_down = true;
        }
        Teardown {
            table: self.table.clone(),
            id: self.id,
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.table.let_go(self.id, |e| e.claimed = false);
    }
}

/// A detached overlay's teardown in progress; dropped once it finished.
#[derive(Debug)]
pub(crate) struct Teardown {
    table: Arc<MountTable>,
    id: CacheId,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        self.table.let_go(self.id, |e| e.tearing_down = false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn on_a_thread<T: Send + 'static>(
        table: &Arc<MountTable>,
        f: impl FnOnce(&Arc<MountTable>) -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let table = table.clone();
        std::thread::spawn(move || f(&table))
    }

    #[test]
    fn a_claim_waits_for_the_previous_one_and_sees_its_count() {
        let table = Arc::new(MountTable::default());
        let id = CacheId::random();
        let mut first = table.claim(id);
        first.set_refs(2);
        assert_eq!(table.refs(id), 2, "readers see a count at once");
        let waiter = on_a_thread(&table, move |t| t.claim(id).refs());
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "second claim went ahead of the first"
        );
        drop(first);
        assert_eq!(waiter.join().unwrap(), 2);
    }

    #[test]
    fn a_teardown_holds_back_mounts_but_not_a_removal() {
        let table = Arc::new(MountTable::default());
        let id = CacheId::random();
        let mut claim = table.claim(id);
        claim.set_refs(1);
        let teardown = claim.into_teardown();
        assert_eq!(table.refs(id), 0, "no references once released");
        let mount = on_a_thread(&table, move |t| t.claim(id).teardown_pending());
        let removal = on_a_thread(&table, move |t| t.claim_for_removal(id).teardown_pending());
        std::thread::sleep(Duration::from_millis(50));
        assert!(removal.is_finished(), "the removal waited for the teardown");
        assert!(
            removal.join().unwrap(),
            "the removal was not told of the teardown"
        );
        assert!(
            !mount.is_finished(),
            "a mount claim went ahead of the teardown"
        );
        drop(teardown);
        assert!(
            !mount.join().unwrap(),
            "the mount claim came after the teardown"
        );
        assert!(table.lock().is_empty(), "nothing is left behind");
    }

    #[test]
    fn a_released_count_of_zero_leaves_no_entry() {
        let table = Arc::new(MountTable::default());
        let id = CacheId::random();
        table.adopt(id);
        assert_eq!(table.mounted(), HashMap::from([(id, 1)]));
        table.claim(id).set_refs(0);
        assert!(table.mounted().is_empty());
        assert!(table.lock().is_empty());
    }
}
