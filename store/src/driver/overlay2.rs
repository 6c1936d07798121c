//! overlay2, laid out as Docker's driver: `overlay2/<id>/diff` holds a layer's files,
//! `overlay2/<id>/link` names its short link, and `overlay2/l/<short>` -> `../<id>/diff` keeps
//! lowerdir strings short. `overlay2/empty` is an empty bottom layer so that a single-layer
//! image still gets a real overlay mount (overlayfs needs two lowers without an upper), which
//! hides any whiteouts the layer carries, as Docker's mount would. `overlay2/spare/` holds
//! ready-made container directories (see [`super::spares`]).

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::spares::Spares;
use super::{Driver, DriverError, LayerDamage, PlacedLayer, ensure_dir, io_err, sync_dir};
use crate::ids::CacheId;
use crate::mounts::{MountSpec, UpperDirs};

const LINK_DIR: &str = "l";
const EMPTY_DIR: &str = "empty";
/// The init layer every container stacks right under its upper dir: the mount points exec
/// needs (`/dev`, `/proc`), like Docker's `<id>-init` layer, so they never show in a diff.
/// It is the same for every container, so there is one, shared.
const INIT_DIR: &str = "init";
/// Ready-made container directories (see [`super::spares`]).
const SPARE_DIR: &str = "spare";

#[derive(Debug)]
pub struct Overlay2 {
    home: PathBuf,
    spares: Spares,
}

impl Overlay2 {
    /// Uses (creating) `<root>/overlay2`.
    pub fn new(root: &Path) -> Result<Self, DriverError> {
        let home = root.join("overlay2");
        ensure_dir(&home.join(LINK_DIR))?;
        ensure_dir(&home.join(EMPTY_DIR))?;
        for (sub, mode) in [(INIT_DIR, 0o755), ("init/dev", 0o755), ("init/proc", 0o555)] {
            make_dir(&home.join(sub), mode, true)?;
        }
        let spares = Spares::start(home.join(SPARE_DIR), make_rw_dirs)?;
        Ok(Self { home, spares })
    }

    fn layer_dir(&self, id: CacheId) -> PathBuf {
        self.home.join(id.hex())
    }
}

/// 26 characters of `[A-Z0-9]`, like Docker's short ids, from the cache id's bytes.
fn short_link_for(id: CacheId, attempt: u8) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bytes = id.as_bytes();
    (0..26)
        .map(|i| {
            let b = bytes[i]
                ^ attempt
                    .wrapping_mul(31)
                    .wrapping_add(u8::try_from(i).unwrap_or(0));
            char::from(ALPHABET[usize::from(b & 31)])
        })
        .collect()
}

impl Driver for Overlay2 {
    fn name(&self) -> &'static str {
        "overlay2"
    }

    fn create_layer(
        &self,
        id: CacheId,
        _parent: Option<CacheId>,
        staged: &Path,
    ) -> Result<PlacedLayer, DriverError> {
        let dir = self.layer_dir(id);
        ensure_dir(&dir)?;
        let diff = dir.join("diff");
        std::fs::rename(staged, &diff).map_err(io_err("moving staged layer to", &diff))?;
        let links = self.home.join(LINK_DIR);
        let mut attempt = 0u8;
        let short = loop {
            let short = short_link_for(id, attempt);
            match symlink(
                Path::new("..").join(id.hex()).join("diff"),
                links.join(&short),
            ) {
                Ok(()) => break short,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1;
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(io_err("creating short link in", &links)(e));
                }
            }
        };
        std::fs::write(dir.join("link"), &short).map_err(io_err("writing", &dir.join("link")))?;
        sync_dir(&links)?;
        sync_dir(&dir)?;
        sync_dir(&self.home)?;
        Ok(PlacedLayer { short_link: short })
    }

    fn remove_layer(&self, id: CacheId, short_link: &str) -> Result<(), DriverError> {
        if !short_link.is_empty() {
            let link = self.home.join(LINK_DIR).join(short_link);
            match std::fs::remove_file(&link) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err("removing", &link)(e));
                }
                _ => {}
            }
        }
        remove_tree(&self.layer_dir(id))
    }

    fn diff_dir(&self, id: CacheId) -> PathBuf {
        self.layer_dir(id).join("diff")
    }

    fn tape_path(&self, id: CacheId) -> PathBuf {
        self.layer_dir(id).join("tape")
    }

    fn view(&self, chain: &[(CacheId, String)]) -> MountSpec {
        let mut lower: Vec<PathBuf> = chain
            .iter()
            .rev()
            .map(|(_, short)| Path::new(LINK_DIR).join(short))
            .collect();
        if lower.len() < 2 {
            lower.push(PathBuf::from(EMPTY_DIR));
        }
        MountSpec::Overlay {
            base: self.home.clone(),
            lower,
            upper: None,
        }
    }

    fn create_rw(&self, id: CacheId, _chain: &[(CacheId, String)]) -> Result<(), DriverError> {
        let dir = self.layer_dir(id);
        if let Some(spare) = self.spares.take() {
            match std::fs::rename(&spare, &dir) {
                Ok(()) => return Ok(()),
                // Removed by another opening of this store, say: make the directories here.
                Err(e) => {
                    tracing::debug!(spare = %spare.display(), error = %e, "spare container directory not usable");
                    let _ = remove_tree(&spare);
                }
            }
        }
        make_rw_dirs(&dir)
    }

    fn rw_mount(&self, id: CacheId, chain: &[(CacheId, String)]) -> MountSpec {
        let lower = std::iter::once(PathBuf::from(INIT_DIR))
            .chain(
                chain
                    .iter()
                    .rev()
                    .map(|(_, short)| Path::new(LINK_DIR).join(short)),
            )
            .collect();
        let upper = UpperDirs {
            upper: Path::new(&id.hex()).join("diff"),
            work: Path::new(&id.hex()).join("work"),
        };
        MountSpec::Overlay {
            base: self.home.clone(),
            lower,
            upper: Some(upper),
        }
    }

    fn container_dir(&self, id: CacheId) -> PathBuf {
        self.layer_dir(id)
    }

    fn merged_dir(&self, id: CacheId) -> PathBuf {
        self.layer_dir(id).join("merged")
    }

    fn upper_dir(&self, id: CacheId) -> PathBuf {
        self.layer_dir(id).join("diff")
    }

    fn stored_ids(&self) -> Result<Vec<String>, DriverError> {
        list_names(&self.home, &[LINK_DIR, EMPTY_DIR, INIT_DIR, SPARE_DIR])
    }

    fn check_layer(&self, id: CacheId, short_link: &str) -> Vec<LayerDamage> {
        let diff = self.diff_dir(id);
        if !diff.is_dir() {
            return vec![LayerDamage::Missing(diff)];
        }
        let mut damage = Vec::new();
        let link = self.home.join(LINK_DIR).join(short_link);
        let want = Path::new("..").join(id.hex()).join("diff");
        match std::fs::read_link(&link) {
            Ok(target) if target == want => {}
            Ok(target) => damage.push(LayerDamage::Link(format!(
                "{} points to {}, not {}",
                link.display(),
                target.display(),
                want.display()
            ))),
            Err(e) => damage.push(LayerDamage::Link(format!("{}: {e}", link.display()))),
        }
        let file = self.layer_dir(id).join("link");
        match std::fs::read_to_string(&file) {
            Ok(text) if text.trim() == short_link => {}
            Ok(text) => damage.push(LayerDamage::Link(format!(
                "{} says {:?}, the record {short_link:?}",
                file.display(),
                text.trim()
            ))),
            Err(e) => damage.push(LayerDamage::Link(format!("{}: {e}", file.display()))),
        }
        damage
    }

    fn repair_layer_link(&self, id: CacheId, short_link: &str) -> Result<(), DriverError> {
        let links = self.home.join(LINK_DIR);
        let link = links.join(short_link);
        match std::fs::remove_file(&link) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err("removing", &link)(e));
            }
            _ => {}
        }
        symlink(Path::new("..").join(id.hex()).join("diff"), &link)
            .map_err(io_err("creating short link", &link))?;
        let file = self.layer_dir(id).join("link");
        std::fs::write(&file, short_link).map_err(io_err("writing", &file))?;
        sync_dir(&links)?;
        sync_dir(&self.layer_dir(id))
    }

    fn link_names(&self) -> Result<Vec<String>, DriverError> {
        list_names(&self.home.join(LINK_DIR), &[])
    }

    fn remove_link(&self, name: &str) -> Result<(), DriverError> {
        let link = self.home.join(LINK_DIR).join(name);
        std::fs::remove_file(&link).map_err(io_err("removing", &link))
    }

    fn remove_orphan(&self, name: &str) -> Result<(), DriverError> {
        remove_tree(&self.home.join(name))
    }
}

/// A container's directories at `dir`: `diff/` (its upper dir), `work/` and `merged/`. The upper
/// dir's root becomes the container's `/`, so it needs 0755 (a 0700 root would lock non-root
/// users out). No fsync: these empty directories are re-created by start-up reconcile if a
/// crash loses them, which keeps a create to one fsync, the record's. On error nothing remains.
fn make_rw_dirs(dir: &Path) -> Result<(), DriverError> {
    let made = ensure_dir(dir).and_then(|()| {
        for (sub, mode) in [("diff", 0o755), ("work", 0o700), ("merged", 0o755)] {
            make_dir(&dir.join(sub), mode, false)?;
        }
        Ok(())
    });
    if made.is_err() {
        let _ = remove_tree(dir);
    }
    made
}

/// `mkdir` with exactly `mode`: the process umask only matters when it would clear bits of
/// `mode`, so the extra `chmod` is skipped in the usual case (umask 022). `exist_ok` keeps an
/// existing directory (and fixes its mode).
fn make_dir(path: &Path, mode: u32, exist_ok: bool) -> Result<(), DriverError> {
    use std::os::unix::fs::DirBuilderExt;
    let existed = match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => false,
        Err(e) if exist_ok && e.kind() == std::io::ErrorKind::AlreadyExists => true,
        Err(e) => return Err(io_err("creating", path)(e)),
    };
    if existed || mode & process_umask() != 0 {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(io_err("chmod", path))?;
    }
    Ok(())
}

/// The process umask, read once from `/proc/self/status` (reading it with umask(2) would
/// change it, racing other threads). Unknown reads as "everything masked", so modes are fixed.
fn process_umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_owned()))
            })
            .and_then(|v| u32::from_str_radix(&v, 8).ok())
            .unwrap_or(0o777)
    })
}

/// Directory entry names of `dir`, except `skip`.
pub(super) fn list_names(dir: &Path, skip: &[&str]) -> Result<Vec<String>, DriverError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let entry = entry.map_err(io_err("listing", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !skip.contains(&name.as_str()) {
            out.push(name);
        }
    }
    Ok(out)
}

/// `rm -rf` that treats a missing directory as done.
pub(super) fn remove_tree(dir: &Path) -> Result<(), DriverError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing", dir)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_links_are_26_uppercase_alphanumerics() {
        let id = CacheId::random();
        let s = short_link_for(id, 0);
        assert_eq!(s.len(), 26);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
        assert_ne!(s, short_link_for(id, 1));
    }

    #[test]
    fn view_lists_lowers_top_first_and_pads_a_single_layer() {
        let root = tempfile::tempdir().unwrap();
        let d = Overlay2::new(root.path()).unwrap();
        let a = (CacheId::random(), "AAA".to_string());
        let b = (CacheId::random(), "BBB".to_string());
        let MountSpec::Overlay { lower, upper, base } = d.view(&[a.clone(), b]) else {
            panic!()
        };
        assert_eq!(lower, vec![PathBuf::from("l/BBB"), PathBuf::from("l/AAA")]);
        assert_eq!(base, root.path().join("overlay2"));
        assert!(upper.is_none());
        let MountSpec::Overlay { lower, .. } = d.view(&[a]) else {
            panic!()
        };
        assert_eq!(lower, vec![PathBuf::from("l/AAA"), PathBuf::from("empty")]);
    }
}
