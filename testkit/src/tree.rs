//! A canonical description of a filesystem tree, built from a directory or from a tar stream,
//! so that what Docker exports and what Strata mounts can be compared field by field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::Error;

/// What a tree entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Char,
    Block,
    Socket,
}

/// One entry of a [`TreeSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Content length for files; 0 for everything else.
    pub size: u64,
    /// Hex sha256 of the content, for files.
    pub sha256: Option<String>,
    /// Target of a symlink, byte for byte (lossily decoded if not UTF-8).
    pub link_target: Option<String>,
    /// `(major, minor)` of a device.
    pub rdev: Option<(u32, u32)>,
    /// Modification time in whole seconds; `None` when not to be compared.
    pub mtime: Option<i64>,
    /// Extended attributes other than `trusted.overlay.*` and `security.selinux`.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// For a file with other hard links inside the tree: all paths of the inode, sorted
    /// (including this one). Empty otherwise.
    pub hardlinks: Vec<String>,
}

impl Node {
    fn new(kind: NodeKind) -> Self {
        Self {
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            sha256: None,
            link_target: None,
            rdev: None,
            mtime: None,
            xattrs: BTreeMap::new(),
            hardlinks: Vec::new(),
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {:04o} {}:{}",
            self.kind, self.mode, self.uid, self.gid
        )?;
        if self.kind == NodeKind::File {
            write!(f, " size={}", self.size)?;
        }
        if let Some(target) = &self.link_target {
            write!(f, " -> {target}")?;
        }
        if let Some((major, minor)) = self.rdev {
            write!(f, " dev={major},{minor}")?;
        }
        Ok(())
    }
}

/// A filesystem tree: relative path (no leading `/` or `./`, no trailing `/`; the root itself
/// is not included) to [`Node`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeSnapshot {
    pub nodes: BTreeMap<String, Node>,
}

/// Paths Docker adds to every container (the init layer and runtime mounts), for
/// [`TreeSnapshot::diff`] against `docker export` output.
pub const DOCKER_IGNORE: &[&str] = &[
    ".dockerenv",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
    "etc/mtab",
    "dev",
    "proc",
    "sys",
];

fn keep_xattr(name: &str) -> bool {
    !name.starts_with("trusted.overlay.") && name != "security.selinux"
}

fn normalize(path: &str) -> String {
    let mut p = path;
    loop {
        let before = p;
        p = p.trim_start_matches("./").trim_start_matches('/');
        if p == before {
            break;
        }
    }
    let p = p.trim_end_matches('/');
    if p == "." {
        String::new()
    } else {
        p.to_owned()
    }
}

fn major(dev: u64) -> u32 {
    // glibc's gnu_dev_major: bits 8..20 and 32..44.
    u32::try_from(((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)).unwrap_or(u32::MAX)
}

fn minor(dev: u64) -> u32 {
    u32::try_from((dev & 0xff) | ((dev >> 12) & !0xff)).unwrap_or(u32::MAX)
}

fn hash_reader(mut reader: impl Read) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((total, hex::encode(hasher.finalize())))
}

impl TreeSnapshot {
    /// Walks `root` with `lstat` (symlinks are recorded, never followed), hashing every file and
    /// reading extended attributes.
    pub fn from_dir(root: impl AsRef<Path>) -> Result<Self, Error> {
        let root = root.as_ref();
        let mut snapshot = Self::default();
        let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let dir = if rel.is_empty() {
                root.to_path_buf()
            } else {
                root.join(&rel)
            };
            let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, "reading", e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&dir, "reading", e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let rel_path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let path = entry.path();
                let meta =
                    std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, "lstat", e))?;
                let ft = meta.file_type();
                let kind = if ft.is_file() {
                    NodeKind::File
                } else if ft.is_dir() {
                    NodeKind::Dir
                } else if ft.is_symlink() {
                    NodeKind::Symlink
                } else if ft.is_fifo() {
                    NodeKind::Fifo
                } else if ft.is_char_device() {
                    NodeKind::Char
                } else if ft.is_block_device() {
                    NodeKind::Block
                } else {
                    NodeKind::Socket
                };
                let mut node = Node::new(kind);
                node.mode = meta.mode() & 0o7777;
                node.uid = meta.uid();
                node.gid = meta.gid();
                node.mtime = Some(meta.mtime());
                match kind {
                    NodeKind::File => {
                        let file = std::fs::File::open(&path)
                            .map_err(|e| Error::io(&path, "opening", e))?;
                        let (size, digest) =
                            hash_reader(file).map_err(|e| Error::io(&path, "reading", e))?;
                        node.size = size;
                        node.sha256 = Some(digest);
                        if meta.nlink() > 1 {
                            inodes
                                .entry((meta.dev(), meta.ino()))
                                .or_default()
                                .push(rel_path.clone());
                        }
                    }
                    NodeKind::Symlink => {
                        let target = std::fs::read_link(&path)
                            .map_err(|e| Error::io(&path, "readlink", e))?;
                        node.link_target = Some(target.to_string_lossy().into_owned());
                    }
                    NodeKind::Char | NodeKind::Block => {
                        node.rdev = Some((major(meta.rdev()), minor(meta.rdev())));
                    }
                    NodeKind::Dir => stack.push(rel_path.clone()),
                    NodeKind::Fifo | NodeKind::Socket => {}
                }
                // `xattr::list` and `xattr::get` use the l* syscalls: symlinks are not followed.
                let names = xattr::list(&path).map_err(|e| Error::io(&path, "listxattr", e))?;
                for name in names {
                    let name = name.to_string_lossy().into_owned();
                    if !keep_xattr(&name) {
                        continue;
                    }
                    let value = xattr::get(&path, &name)
                        .map_err(|e| Error::io(&path, "getxattr", e))?
                        .unwrap_or_default();
                    node.xattrs.insert(name, value);
                }
                snapshot.nodes.insert(rel_path, node);
            }
        }
        for group in inodes.into_values() {
            snapshot.set_group(group);
        }
        Ok(snapshot)
    }

    /// Reads a tar stream (for example `docker export` output). Hard-link entries take their
    /// target's attributes and join its hard-link group; PAX `SCHILY.xattr.*` records become
    /// xattrs; when a path appears twice, the later entry wins, as in extraction.
    #[expect(clippy::too_many_lines, reason = "one match over tar entry types")]
    pub fn from_tar(reader: impl Read) -> Result<Self, Error> {
        let tar_err = |source| Error::Io {
            context: "reading tar stream".into(),
            source,
        };
        let mut snapshot = Self::default();
        // Path -> group id, and group id -> members.
        let mut group_of: BTreeMap<String, usize> = BTreeMap::new();
        let mut groups: Vec<BTreeSet<String>> = Vec::new();
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(tar_err)? {
            let mut entry = entry.map_err(tar_err)?;
            let path = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
            if path.is_empty() {
                continue;
            }
            let header = entry.header().clone();
            let field = |what: &str, r: std::io::Result<u64>| {
                r.map_err(|source| Error::Io {
                    context: format!("reading {what} of tar entry {path}"),
                    source,
                })
            };
            let entry_type = header.entry_type();
            if entry_type == tar::EntryType::Link {
                let target = normalize(&String::from_utf8_lossy(
                    &entry.link_name_bytes().unwrap_or_default(),
                ));
                let Some(target_node) = snapshot.nodes.get(&target).cloned() else {
                    return Err(Error::Invalid(format!(
                        "hard link {path} -> {target}: target not in archive before it"
                    )));
                };
                let id = *group_of.entry(target.clone()).or_insert_with(|| {
                    groups.push(BTreeSet::from([target.clone()]));
                    groups.len() - 1
                });
                groups[id].insert(path.clone());
                group_of.insert(path.clone(), id);
                snapshot.nodes.insert(path, target_node);
                continue;
            }
            // A later entry replaces an earlier one, hard links included.
            if let Some(id) = group_of.remove(&path) {
                groups[id].remove(&path);
            }
            let kind = match entry_type {
                tar::EntryType::Regular | tar::EntryType::Continuous => NodeKind::File,
                tar::EntryType::Directory => NodeKind::Dir,
                tar::EntryType::Symlink => NodeKind::Symlink,
                tar::EntryType::Fifo => NodeKind::Fifo,
                tar::EntryType::Char => NodeKind::Char,
                tar::EntryType::Block => NodeKind::Block,
                other => {
                    return Err(Error::Invalid(format!(
                        "tar entry {path} has unsupported type {other:?}"
                    )));
                }
            };
            let mut node = Node::new(kind);
            node.mode = u32::try_from(field("mode", header.mode().map(u64::from))? & 0o7777)
                .unwrap_or_default();
            node.uid = u32::try_from(field("uid", header.uid())?).unwrap_or(u32::MAX);
            node.gid = u32::try_from(field("gid", header.gid())?).unwrap_or(u32::MAX);
            node.mtime = Some(i64::try_from(field("mtime", header.mtime())?).unwrap_or(i64::MAX));
            if let Some(pax) = entry.pax_extensions().map_err(tar_err)? {
                for record in pax {
                    let record = record.map_err(tar_err)?;
                    if let Some(name) = record
                        .key()
                        .ok()
                        .and_then(|k| k.strip_prefix("SCHILY.xattr."))
                        .filter(|name| keep_xattr(name))
                    {
                        node.xattrs
                            .insert(name.to_owned(), record.value_bytes().to_vec());
                    }
                }
            }
            match kind {
                NodeKind::File => {
                    let (size, digest) = hash_reader(&mut entry).map_err(tar_err)?;
                    node.size = size;
                    node.sha256 = Some(digest);
                }
                NodeKind::Symlink => {
                    let target = entry.link_name_bytes().unwrap_or_default();
                    node.link_target = Some(String::from_utf8_lossy(&target).into_owned());
                }
                NodeKind::Char | NodeKind::Block => {
                    let major = field(
                        "major",
                        header.device_major().map(|d| u64::from(d.unwrap_or(0))),
                    )?;
                    let minor = field(
                        "minor",
                        header.device_minor().map(|d| u64::from(d.unwrap_or(0))),
                    )?;
                    node.rdev = Some((
                        u32::try_from(major).unwrap_or(u32::MAX),
                        u32::try_from(minor).unwrap_or(u32::MAX),
                    ));
                }
                NodeKind::Dir | NodeKind::Fifo | NodeKind::Socket => {}
            }
            snapshot.nodes.insert(path, node);
        }
        for group in groups {
            snapshot.set_group(group.into_iter().collect());
        }
        Ok(snapshot)
    }

    fn set_group(&mut self, mut group: Vec<String>) {
        group.sort();
        if group.len() < 2 {
            return;
        }
        for path in &group {
            if let Some(node) = self.nodes.get_mut(path) {
                node.hardlinks.clone_from(&group);
            }
        }
    }

    /// Forgets all modification times, for comparisons where they cannot match.
    pub fn clear_mtimes(&mut self) {
        for node in self.nodes.values_mut() {
            node.mtime = None;
        }
    }

    /// Forgets all extended attributes (e.g. `docker export` writes only
    /// `security.capability`).
    pub fn clear_xattrs(&mut self) {
        for node in self.nodes.values_mut() {
            node.xattrs.clear();
        }
    }

    /// Differences from `self` (expected) to `actual`, one human-readable line each, empty when
    /// the trees agree.
    ///
    /// A path in `ignore` hides itself and everything below it; it also hides the mtime of its
    /// parent directory, which changes when the ignored entry is created or removed. Hard-link
    /// groups are compared without ignored paths. Mtimes are compared only where both sides have
    /// one.
    pub fn diff(&self, actual: &TreeSnapshot, ignore: &[&str]) -> Vec<String> {
        let ignore: Vec<String> = ignore.iter().map(|p| normalize(p)).collect();
        let ignored = |path: &str| {
            ignore.iter().any(|i| {
                path == i
                    || path
                        .strip_prefix(i.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            })
        };
        let mtime_ignored = |path: &str| {
            ignore
                .iter()
                .any(|i| i.rsplit_once('/').map_or("", |(parent, _)| parent) == path)
        };
        let mut out = Vec::new();
        let paths: BTreeSet<&String> = self.nodes.keys().chain(actual.nodes.keys()).collect();
        for path in paths {
            if ignored(path) {
                continue;
            }
            let (e, a) = match (self.nodes.get(path), actual.nodes.get(path)) {
                (Some(e), Some(a)) => (e, a),
                (Some(e), None) => {
                    out.push(format!("{path}: missing (expected {e})"));
                    continue;
                }
                (None, Some(a)) => {
                    out.push(format!("{path}: unexpected {a}"));
                    continue;
                }
                (None, None) => unreachable!("path comes from one of the maps"),
            };
            if e.kind != a.kind {
                out.push(format!(
                    "{path}: kind expected {:?}, actual {:?}",
                    e.kind, a.kind
                ));
                continue;
            }
            if e.mode != a.mode {
                out.push(format!(
                    "{path}: mode expected {:04o}, actual {:04o}",
                    e.mode, a.mode
                ));
            }
            if (e.uid, e.gid) != (a.uid, a.gid) {
                out.push(format!(
                    "{path}: owner expected {}:{}, actual {}:{}",
                    e.uid, e.gid, a.uid, a.gid
                ));
            }
            if e.size != a.size {
                out.push(format!(
                    "{path}: size expected {}, actual {}",
                    e.size, a.size
                ));
            } else if e.sha256 != a.sha256 {
                out.push(format!("{path}: content differs"));
            }
            if e.link_target != a.link_target {
                out.push(format!(
                    "{path}: link target expected {:?}, actual {:?}",
                    e.link_target, a.link_target
                ));
            }
            if e.rdev != a.rdev {
                out.push(format!(
                    "{path}: device expected {:?}, actual {:?}",
                    e.rdev, a.rdev
                ));
            }
            if let (Some(em), Some(am)) = (e.mtime, a.mtime)
                && em != am
                && !mtime_ignored(path)
            {
                out.push(format!("{path}: mtime expected {em}, actual {am}"));
            }
            if e.xattrs != a.xattrs {
                out.push(format!(
                    "{path}: xattrs expected {}, actual {}",
                    show_xattrs(&e.xattrs),
                    show_xattrs(&a.xattrs)
                ));
            }
            let group = |n: &Node| -> Vec<String> {
                let g: Vec<String> = n
                    .hardlinks
                    .iter()
                    .filter(|p| !ignored(p))
                    .cloned()
                    .collect();
                if g.len() < 2 { Vec::new() } else { g }
            };
            let (eg, ag) = (group(e), group(a));
            if eg != ag {
                out.push(format!("{path}: hard links expected {eg:?}, actual {ag:?}"));
            }
        }
        out
    }
}

fn show_xattrs(xattrs: &BTreeMap<String, Vec<u8>>) -> String {
    let parts: Vec<String> = xattrs
        .iter()
        .map(|(k, v)| format!("{k}={:?}", String::from_utf8_lossy(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LayerBuilder;

    fn extract(tar_bytes: &[u8], dest: &Path) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.tar");
        std::fs::write(&path, tar_bytes).expect("write");
        let out = std::process::Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
            .arg(&path)
            .arg("-C")
            .arg(dest)
            .output()
            .expect("GNU tar must be installed");
        assert!(
            out.status.success(),
            "tar -x: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn sample_layer() -> Vec<u8> {
        let long = format!("d/{}", "l".repeat(120));
        let mut layer = LayerBuilder::new();
        layer
            .dir("d", 0o755)
            .mtime(1_600_000_000)
            .dir("d/sub", 0o2775)
            .owner(1000, 50)
            .file("d/a", b"hello", 0o644)
            .owner(1000, 1000)
            .xattr("user.test", b"42")
            .hardlink("d/sub/a2", "d/a")
            .file("d/empty", b"", 0o600)
            .file(&long, b"long", 0o4755)
            .file("d/日本語 ✓", b"u", 0o644)
            .symlink("d/rel", "../d/a")
            .symlink("d/dangling", "/nonexistent")
            .fifo("d/fifo")
            .dir("d/tmp", 0o1777)
            .dir("d/sub", 0o2775)
            .owner(1000, 50);
        layer.build()
    }

    #[test]
    fn from_tar_records_hardlink_groups_and_xattrs() {
        let snapshot = TreeSnapshot::from_tar(sample_layer().as_slice()).expect("snapshot");
        let a = &snapshot.nodes["d/a"];
        assert_eq!(a.hardlinks, ["d/a", "d/sub/a2"]);
        assert_eq!(snapshot.nodes["d/sub/a2"].sha256, a.sha256);
        assert_eq!(a.xattrs["user.test"], b"42");
        assert_eq!(a.uid, 1000);
        assert_eq!(snapshot.nodes["d/sub"].mode, 0o2775);
        assert_eq!(snapshot.nodes["d"].mtime, Some(1_600_000_000));
        assert_eq!(
            snapshot.nodes["d/rel"].link_target.as_deref(),
            Some("../d/a")
        );
    }

    /// Needs root (ownership, setuid bits) and GNU tar with xattr support.
    #[test]
    fn from_dir_agrees_with_from_tar_on_an_extracted_layer() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root to extract owners");
            return;
        }
        let layer = sample_layer();
        let dir = tempfile::tempdir().expect("tempdir");
        extract(&layer, dir.path());
        let from_dir = TreeSnapshot::from_dir(dir.path()).expect("from_dir");
        let from_tar = TreeSnapshot::from_tar(layer.as_slice()).expect("from_tar");
        let diff = from_tar.diff(&from_dir, &[]);
        assert!(diff.is_empty(), "differences:\n{}", diff.join("\n"));
        assert_eq!(from_dir.nodes.len(), 11);
    }

    #[test]
    fn diff_reports_each_difference_and_honours_ignores() {
        let base = TreeSnapshot::from_tar(sample_layer().as_slice()).expect("snapshot");
        let mut other = base.clone();
        other.nodes.get_mut("d/a").expect("a").mode = 0o600;
        other.nodes.remove("d/empty");
        other
            .nodes
            .insert("d/new".into(), Node::new(NodeKind::Fifo));
        other.nodes.get_mut("d").expect("d").mtime = Some(1);
        let diff = base.diff(&other, &[]);
        assert_eq!(diff.len(), 4, "{diff:?}");
        assert!(
            diff.iter()
                .any(|d| d.starts_with("d/a: mode expected 0644, actual 0600"))
        );
        // Ignoring d/new and d/empty also ignores d's mtime.
        let diff = base.diff(&other, &["d/new", "/d/empty/"]);
        assert_eq!(diff.len(), 1, "{diff:?}");
    }

    #[test]
    fn device_numbers_round_trip_through_glibc_encoding() {
        // makedev(259, 70000) as glibc encodes it.
        let (maj, min) = (259u64, 70000u64);
        let dev =
            ((maj & 0xfff) << 8) | ((maj & !0xfff) << 32) | (min & 0xff) | ((min & !0xff) << 12);
        assert_eq!((major(dev), minor(dev)), (259, 70000));
    }
}
