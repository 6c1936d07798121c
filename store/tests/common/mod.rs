//! Helpers shared by the store's black-box tests: open a store in a temp dir, import builder
//! archives, and snapshot what a mount shows.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};

use strata_store::{ExecStdio, ImportedImage, Store, StoreOptions};
use strata_testkit::{ImageBuilder, TreeSnapshot, require_root};

pub struct TestStore {
    pub store: Option<Store>,
    pub dir: tempfile::TempDir,
    pub driver: String,
}

impl TestStore {
    /// A store on the real disk (not tmpfs, so overlay upper/xattr behaviour is the real one).
    pub fn new(driver: &str) -> Self {
        require_root("store tests mount overlayfs and create device nodes");
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(base).unwrap();
        let dir = tempfile::tempdir_in(base).unwrap();
        let mut s = Self {
            store: None,
            dir,
            driver: driver.to_owned(),
        };
        s.reopen();
        s
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    /// Closes and opens the store again (start-up reconcile runs).
    pub fn reopen(&mut self) -> strata_store::ReconcileReport {
        self.store = None;
        let opts = StoreOptions {
            root: self.root(),
            driver: self.driver.clone(),
        };
        let (store, report) = Store::open(&opts).unwrap();
        self.store = Some(store);
        report
    }

    pub fn import(&self, archive: &[u8]) -> Vec<ImportedImage> {
        self.store().import_images(archive, &mut |_| {}).unwrap()
    }

    pub fn try_import(&self, archive: &[u8]) -> Result<Vec<ImportedImage>, strata_store::Error> {
        self.store().import_images(archive, &mut |_| {})
    }

    /// Mounts the image, snapshots the view, unmounts.
    pub fn view(&self, reference: &str) -> TreeSnapshot {
        let path = self.store().mount_image(reference).unwrap();
        let snap = TreeSnapshot::from_dir(&path).unwrap();
        self.store().unmount_image(reference, false).unwrap();
        snap
    }

    /// Every file and directory under the root other than the database, sorted, for
    /// "nothing was left behind" checks.
    pub fn tree_listing(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.root(), &self.root(), &mut out);
        out.sort();
        out
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Ok(mounts) = strata_store::mounts::mounts_under(&self.root()) {
            for m in mounts {
                let _ = strata_store::mounts::unmount(&m);
            }
        }
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel == "meta.redb" {
            continue;
        }
        out.push(rel);
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &p, out);
        }
    }
}

/// An image of `n` layers, each adding one file and overwriting `/top`, for stacking tests.
pub fn tall_image(n: usize, tag: &str) -> ImageBuilder {
    let layers = (0..n)
        .map(|i| {
            let mut l = strata_testkit::LayerBuilder::new();
            l.dir("layers", 0o755)
                .file(
                    &format!("layers/{i:04}"),
                    format!("layer {i}\n").as_bytes(),
                    0o644,
                )
                .file("top", format!("{i}\n").as_bytes(), 0o644);
            l.build()
        })
        .collect();
    ImageBuilder::new(layers, &[tag])
}

/// stdin, stdout and stderr of an exec, all `/dev/null`.
pub fn null_stdio() -> ExecStdio {
    let null = || {
        std::os::fd::OwnedFd::from(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .unwrap(),
        )
    };
    ExecStdio {
        stdin: null(),
        stdout: null(),
        stderr: null(),
    }
}

/// Kernel log records saying overlayfs mounted an upper or work dir that another live
/// overlay still uses ("accessing files from both mounts will result in undefined behavior").
pub fn overlay_in_use_warnings() -> usize {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .expect("reading /dev/kmsg (the kernel log) needs root");
    let mut found = 0;
    let mut record = vec![0u8; 8192];
    loop {
        match kmsg.read(&mut record) {
            Ok(n) => {
                found += usize::from(
                    String::from_utf8_lossy(&record[..n]).contains("in-use as upperdir/workdir"),
                );
            }
            // EPIPE: records were overwritten while reading; keep going.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return found,
            Err(e) => panic!("reading /dev/kmsg: {e}"),
        }
    }
}
