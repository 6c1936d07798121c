//! Attribution of copy-ups to containers: overlay superblock device -> container, kept
//! current from the store's mount events. Counts of a container whose overlay is unmounted
//! are banked (its device number may be reused by the next mount), and a removed container's
//! series disappear. Copy-ups on overlays Strata did not mount count as `unmanaged`.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Mutex;

use strata_store::MountEvent;
use strata_store::ids::CacheId;

pub use crate::probe::{CopyUpTotals, LATENCY_BUCKETS, kernel_dev};

/// Kinds of copied-up inode, in the order of the per-kind arrays (`probe::kind`).
pub const KINDS: [&str; 4] = ["file", "dir", "symlink", "other"];

/// Where per-device copy-up totals come from (the eBPF probe).
pub trait CopyUpSource: Send + Sync + Debug {
    /// Totals per overlay superblock device (the kernel's `s_dev` encoding).
    fn totals(&self) -> Result<HashMap<u32, CopyUpTotals>, String>;
    /// Drops the totals of one device (its overlay is gone).
    fn forget(&self, dev: u32);
}

#[derive(Debug, Default)]
struct State {
    devices: HashMap<u32, CacheId>,
    banked: HashMap<CacheId, CopyUpTotals>,
}

/// Maps devices to containers and totals to container ids.
#[derive(Debug)]
pub struct Attribution {
    source: Option<Box<dyn CopyUpSource>>,
    state: Mutex<State>,
}

/// The label for copy-ups on overlays Strata did not mount.
pub const UNMANAGED: &str = "unmanaged";

impl Attribution {
    pub fn new(source: Option<Box<dyn CopyUpSource>>, mounted: &[(CacheId, u64)]) -> Self {
        let devices = mounted
            .iter()
            .map(|(id, dev)| (kernel_dev(*dev), *id))
            .collect();
        Self {
            source,
            state: Mutex::new(State {
                devices,
                banked: HashMap::new(),
            }),
        }
    }

    pub fn probe_up(&self) -> bool {
        self.source.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Follows the store's mounts: a new overlay starts from zero; an unmounted one's totals
    /// are banked under its container.
    pub fn observe(&self, event: MountEvent) {
        let Some(source) = &self.source else { return };
        match event {
            MountEvent::Mounted { container, dev } => {
                let dev = kernel_dev(dev);
                source.forget(dev);
                self.lock().devices.insert(dev, container);
            }
            MountEvent::Unmounting { container, dev } => {
                let dev = kernel_dev(dev);
                let totals = source.totals().ok().and_then(|mut t| t.remove(&dev));
                let mut state = self.lock();
                if let Some(totals) = totals {
                    state.banked.entry(container).or_default().merge(&totals);
                }
                state.devices.remove(&dev);
                drop(state);
                source.forget(dev);
            }
        }
    }

    /// Totals per container id (hex) and `unmanaged`, for the containers in `live`; banked
    /// totals of containers no longer in `live` are dropped.
    pub fn per_container(
        &self,
        live: &HashSet<CacheId>,
    ) -> Result<HashMap<String, CopyUpTotals>, String> {
        let Some(source) = &self.source else {
            return Ok(HashMap::new());
        };
        let totals = source.totals()?;
        let mut state = self.lock();
        state.banked.retain(|id, _| live.contains(id));
        let mut out: HashMap<String, CopyUpTotals> =
            state.banked.iter().map(|(id, t)| (id.hex(), *t)).collect();
        for (dev, t) in &totals {
            let key = match state.devices.get(dev) {
                Some(id) if live.contains(id) => id.hex(),
                Some(_) => continue,
                None => UNMANAGED.to_owned(),
            };
            out.entry(key).or_default().merge(t);
        }
        // Every live container has its series from the start (at zero), so the first
        // copy-ups show as an increase, not as a series appearing.
        for id in live {
            out.entry(id.hex()).or_default();
        }
        Ok(out)
    }
}

/// The attached probe as a [`CopyUpSource`].
#[derive(Debug)]
struct ProbeSource(Mutex<crate::probe::CopyUpProbe>);

impl CopyUpSource for ProbeSource {
    fn totals(&self) -> Result<HashMap<u32, CopyUpTotals>, String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .read()
            .map_err(|e| e.to_string())
    }

    fn forget(&self, dev: u32) {
        if let Err(e) = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .forget(dev)
        {
            tracing::warn!(dev, error = %e, "could not reset copy-up counters");
        }
    }
}

/// Loads and attaches the eBPF probe, or says in one line why not (the daemon keeps working:
/// the scanner still reports copied-up files and bytes, without latency).
pub fn start_probe() -> Option<Box<dyn CopyUpSource>> {
    match crate::probe::CopyUpProbe::embedded() {
        Ok(probe) => {
            tracing::info!(offsets = ?probe.offsets(), "copy-up probe attached to ovl_copy_up_one");
            Some(Box::new(ProbeSource(Mutex::new(probe))))
        }
        Err(e) => {
            tracing::warn!(
                "copy-up probe off: {e}; the scanner reports copied-up files and bytes instead (no latency)"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Fake(Mutex<HashMap<u32, CopyUpTotals>>);

    impl CopyUpSource for std::sync::Arc<Fake> {
        fn totals(&self) -> Result<HashMap<u32, CopyUpTotals>, String> {
            Ok(self.0.lock().unwrap().clone())
        }
        fn forget(&self, dev: u32) {
            self.0.lock().unwrap().remove(&dev);
        }
    }

    fn one_file(bytes: u64) -> CopyUpTotals {
        let mut t = CopyUpTotals::default();
        t.count[0] = 1;
        t.bytes[0] = bytes;
        t
    }

    #[test]
    fn kernel_dev_matches_mkdev_for_anonymous_and_real_devices() {
        assert_eq!(kernel_dev(libc::makedev(0, 52)), 52);
        assert_eq!(kernel_dev(libc::makedev(0, 300)), 300);
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
    }

    #[test]
    fn counts_follow_mounts_bank_on_unmount_and_vanish_with_the_container() {
        let fake = std::sync::Arc::new(Fake::default());
        let a = CacheId::random();
        let dev = libc::makedev(0, 77);
        let attribution = Attribution::new(Some(Box::new(fake.clone())), &[]);
        attribution.observe(MountEvent::Mounted { container: a, dev });
        fake.0.lock().unwrap().insert(77, one_file(10));
        fake.0.lock().unwrap().insert(99, one_file(5));
        let live = HashSet::from([a]);
        let got = attribution.per_container(&live).unwrap();
        assert_eq!(got[&a.hex()].bytes[0], 10);
        assert_eq!(got[UNMANAGED].bytes[0], 5);
        // Unmount banks; a new overlay reusing device 77 belongs to someone else.
        attribution.observe(MountEvent::Unmounting { container: a, dev });
        let b = CacheId::random();
        attribution.observe(MountEvent::Mounted { container: b, dev });
        fake.0.lock().unwrap().insert(77, one_file(3));
        let live = HashSet::from([a, b]);
        let got = attribution.per_container(&live).unwrap();
        assert_eq!(got[&a.hex()].bytes[0], 10);
        assert_eq!(got[&b.hex()].bytes[0], 3);
        // Removing `a` removes its series.
        let got = attribution.per_container(&HashSet::from([b])).unwrap();
        assert!(!got.contains_key(&a.hex()));
        // A live container without copy-ups is reported at zero.
        let c = CacheId::random();
        let got = attribution.per_container(&HashSet::from([b, c])).unwrap();
        assert_eq!(got[&c.hex()].copy_ups(), 0);
    }
}
