//! Layer tar archives built entry by entry, with full control over every header field.
//!
//! Every entry is written through one path ([`append_entry`]) that puts the raw name bytes in
//! the header, adds a GNU `././@LongLink` record when a name or link target exceeds the 100
//! bytes of the ustar field, and a PAX record for extended attributes (`SCHILY.xattr.NAME`,
//! the convention GNU tar, Go's `archive/tar` and therefore Docker use). Writing names raw is
//! what lets the same code produce hostile archives (`../x`, `/etc/x`) that the `tar` crate's
//! own `set_path` would refuse.

use std::io::Write;

/// Modification time given to entries unless [`LayerBuilder::default_mtime`] or
/// [`LayerBuilder::mtime`] says otherwise (2023-11-14T22:13:20Z): fixed so archives, and so
/// their digests, are reproducible.
pub const DEFAULT_MTIME: u64 = 1_700_000_000;

/// Builds one uncompressed layer tar.
///
/// Methods that add an entry return `&mut Self`; [`owner`](Self::owner),
/// [`mtime`](Self::mtime) and [`xattr`](Self::xattr) change the entry added last.
///
/// ```
/// use strata_testkit::LayerBuilder;
/// let mut layer = LayerBuilder::new();
/// layer
///     .dir("etc", 0o755)
///     .file("etc/motd", b"hello\n", 0o644)
///     .owner(1000, 1000)
///     .xattr("user.test", b"v")
///     .whiteout("etc/old");
/// let bytes = layer.build();
/// assert_eq!(bytes.len() % 512, 0);
/// ```
#[derive(Debug, Clone)]
pub struct LayerBuilder {
    entries: Vec<Entry>,
    default_uid: u64,
    default_gid: u64,
    default_mtime: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    name: Vec<u8>,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    content: Vec<u8>,
    link: Option<Vec<u8>>,
    device: (u32, u32),
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    /// An empty layer whose entries will be owned by root with mtime [`DEFAULT_MTIME`].
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            default_uid: 0,
            default_gid: 0,
            default_mtime: DEFAULT_MTIME,
        }
    }

    /// Owner of the entries added from now on.
    pub fn default_owner(&mut self, uid: u64, gid: u64) -> &mut Self {
        self.default_uid = uid;
        self.default_gid = gid;
        self
    }

    /// Modification time of the entries added from now on.
    pub fn default_mtime(&mut self, secs: u64) -> &mut Self {
        self.default_mtime = secs;
        self
    }

    /// A directory; the name is written with a trailing `/`, as GNU tar and Docker do.
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let name = format!("{}/", path.trim_end_matches('/'));
        self.push(name.into_bytes(), tar::EntryType::Directory, mode)
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, content: &[u8], mode: u32) -> &mut Self {
        self.raw_file(path.as_bytes(), content, mode)
    }

    /// A symbolic link at `path` pointing at `target` (any bytes: relative, absolute, dangling).
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw_symlink(path.as_bytes(), target.as_bytes())
    }

    /// A hard link at `path` to the archive member `target`; the target is not checked, so this
    /// is also the escape hatch for links to `../x` or `/etc/shadow`.
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw_hardlink(path.as_bytes(), target.as_bytes())
    }

    /// A named pipe.
    pub fn fifo(&mut self, path: &str) -> &mut Self {
        self.push(path.as_bytes().to_vec(), tar::EntryType::Fifo, 0o644)
    }

    /// A character device.
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        self.push(path.as_bytes().to_vec(), tar::EntryType::Char, 0o666);
        self.last().device = (major, minor);
        self
    }

    /// A block device.
    pub fn block_dev(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        self.push(path.as_bytes().to_vec(), tar::EntryType::Block, 0o660);
        self.last().device = (major, minor);
        self
    }

    /// An AUFS-style whiteout deleting `path` from the layers below: an empty file
    /// `dir/.wh.name` (the convention of the OCI image spec, "Whiteouts").
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let path = path.trim_end_matches('/');
        let name = match path.rsplit_once('/') {
            Some((dir, base)) => format!("{dir}/.wh.{base}"),
            None => format!(".wh.{path}"),
        };
        self.push(name.into_bytes(), tar::EntryType::Regular, 0o644)
    }

    /// An opaque-directory marker `dir/.wh..wh..opq`: hides everything below `dir` in lower
    /// layers. Add the directory itself first, as Docker does.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        let name = format!("{}/.wh..wh..opq", dir.trim_end_matches('/'));
        self.push(name.into_bytes(), tar::EntryType::Regular, 0o644)
    }

    /// A regular file with an arbitrary raw name (`../x`, `/etc/x`, `a//b`, invalid UTF-8...).
    pub fn raw_file(&mut self, name: &[u8], content: &[u8], mode: u32) -> &mut Self {
        self.push(name.to_vec(), tar::EntryType::Regular, mode);
        self.last().content = content.to_vec();
        self
    }

    /// A directory with an arbitrary raw name, written exactly as given.
    pub fn raw_dir(&mut self, name: &[u8], mode: u32) -> &mut Self {
        self.push(name.to_vec(), tar::EntryType::Directory, mode)
    }

    /// A symbolic link with an arbitrary raw name and target.
    pub fn raw_symlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.push(name.to_vec(), tar::EntryType::Symlink, 0o777);
        self.last().link = Some(target.to_vec());
        self
    }

    /// A hard link with an arbitrary raw name and target.
    ///
    /// The header takes the mode, owner and mtime of the target when it is an earlier entry of
    /// this layer, as real tar writers do (they stat the inode). This matters: Docker applies a
    /// link header's mode, owner and times to the shared inode (moby `pkg/archive`
    /// `createTarFile`). Call [`mode`](Self::mode) or [`owner`](Self::owner) afterwards to
    /// build a link that disagrees with its target.
    pub fn raw_hardlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        let inherited = self
            .entries
            .iter()
            .rev()
            .find(|e| e.name == target)
            .map(|e| (e.mode, e.uid, e.gid, e.mtime));
        self.push(name.to_vec(), tar::EntryType::Link, 0o644);
        let entry = self.last();
        entry.link = Some(target.to_vec());
        if let Some((mode, uid, gid, mtime)) = inherited {
            (entry.mode, entry.uid, entry.gid, entry.mtime) = (mode, uid, gid, mtime);
        }
        self
    }

    /// The classic symlink escape: a symlink `link -> target` (e.g. `/etc`), then a regular file
    /// `link/file_name` written "through" it. A safe extractor must not create the file at
    /// `target/file_name`.
    pub fn file_through_symlink(
        &mut self,
        link: &str,
        target: &str,
        file_name: &str,
        content: &[u8],
    ) -> &mut Self {
        self.symlink(link, target);
        let name = format!("{}/{file_name}", link.trim_end_matches('/'));
        self.file(&name, content, 0o644)
    }

    /// Sets the owner of the entry added last.
    pub fn owner(&mut self, uid: u64, gid: u64) -> &mut Self {
        let entry = self.last();
        entry.uid = uid;
        entry.gid = gid;
        self
    }

    /// Sets the modification time of the entry added last.
    pub fn mtime(&mut self, secs: u64) -> &mut Self {
        self.last().mtime = secs;
        self
    }

    /// Sets the permission bits of the entry added last (including setuid/setgid/sticky).
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.last().mode = mode;
        self
    }

    /// Adds an extended attribute (PAX `SCHILY.xattr.NAME`) to the entry added last.
    pub fn xattr(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.last().xattrs.push((name.to_owned(), value.to_vec()));
        self
    }

    /// Number of entries added so far (long-name and PAX records not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry has been added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The layer tar: all entries in the order they were added, then the end-of-archive blocks.
    pub fn build(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            append_entry(&mut builder, entry).expect("writing a tar to a Vec cannot fail");
        }
        builder
            .into_inner()
            .expect("writing a tar to a Vec cannot fail")
    }

    fn push(&mut self, name: Vec<u8>, kind: tar::EntryType, mode: u32) -> &mut Self {
        self.entries.push(Entry {
            name,
            kind,
            mode,
            uid: self.default_uid,
            gid: self.default_gid,
            mtime: self.default_mtime,
            content: Vec::new(),
            link: None,
            device: (0, 0),
            xattrs: Vec::new(),
        });
        self
    }

    fn last(&mut self) -> &mut Entry {
        self.entries
            .last_mut()
            .expect("owner/mtime/mode/xattr change the entry added last: add one first")
    }
}

/// Length of the ustar `name` and `linkname` fields.
const USTAR_NAME_LEN: usize = 100;

fn append_entry<W: Write>(builder: &mut tar::Builder<W>, entry: &Entry) -> std::io::Result<()> {
    if !entry.xattrs.is_empty() {
        let mut records = Vec::new();
        for (name, value) in &entry.xattrs {
            records.extend(pax_record(&format!("SCHILY.xattr.{name}"), value));
        }
        append_meta(
            builder,
            tar::EntryType::XHeader,
            b"././@PaxHeader",
            &records,
        )?;
    }
    if entry.name.len() > USTAR_NAME_LEN {
        append_meta(
            builder,
            tar::EntryType::GNULongName,
            b"././@LongLink",
            &nul_terminated(&entry.name),
        )?;
    }
    if let Some(link) = entry.link.as_ref().filter(|l| l.len() > USTAR_NAME_LEN) {
        append_meta(
            builder,
            tar::EntryType::GNULongLink,
            b"././@LongLink",
            &nul_terminated(link),
        )?;
    }

    let mut header = tar::Header::new_gnu();
    copy_truncated(&mut header.as_old_mut().name, &entry.name);
    if let Some(link) = &entry.link {
        copy_truncated(&mut header.as_old_mut().linkname, link);
    }
    header.set_entry_type(entry.kind);
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(entry.mtime);
    header.set_size(entry.content.len() as u64);
    if matches!(entry.kind, tar::EntryType::Char | tar::EntryType::Block) {
        header.set_device_major(entry.device.0)?;
        header.set_device_minor(entry.device.1)?;
    }
    header.set_cksum();
    builder.append(&header, entry.content.as_slice())
}

fn append_meta<W: Write>(
    builder: &mut tar::Builder<W>,
    kind: tar::EntryType,
    name: &[u8],
    data: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    copy_truncated(&mut header.as_old_mut().name, name);
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data)
}

fn copy_truncated(field: &mut [u8], bytes: &[u8]) {
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

fn nul_terminated(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.push(0);
    v
}

/// One PAX record, `"<len> <key>=<value>\n"`, where `<len>` counts the whole record including
/// its own digits (POSIX.1-2001 pax format).
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        for value_len in [0usize, 1, 5, 6, 7, 90, 95, 96, 97, 990, 995] {
            let value = vec![b'x'; value_len];
            let record = pax_record("k", &value);
            let (len, _) = std::str::from_utf8(&record)
                .expect("ascii")
                .split_once(' ')
                .expect("space");
            assert_eq!(len.parse::<usize>().expect("number"), record.len());
        }
    }

    #[test]
    fn whiteout_and_opaque_names_follow_the_oci_convention() {
        let mut layer = LayerBuilder::new();
        layer.whiteout("a/b/c").whiteout("top").opaque("d/");
        let names: Vec<String> = layer
            .entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect();
        assert_eq!(names, ["a/b/.wh.c", ".wh.top", "d/.wh..wh..opq"]);
    }

    #[test]
    fn tar_crate_reads_back_long_unicode_names_links_and_xattrs() {
        let long = format!("dir/{}", "ä".repeat(80));
        let long_target = format!("/{}", "t".repeat(150));
        let mut layer = LayerBuilder::new();
        layer
            .dir("dir", 0o755)
            .file(&long, b"x", 0o4755)
            .owner(1234, 5678)
            .mtime(42)
            .xattr("user.test", b"value")
            .symlink("dir/s", &long_target)
            .hardlink("dir/h", &long)
            .char_dev("dir/c", 1, 3)
            .raw_file(b"../escape", b"bad", 0o644);
        let bytes = layer.build();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let header = entry.header().clone();
            if path == long {
                assert_eq!(header.mode().expect("mode"), 0o4755);
                assert_eq!(header.uid().expect("uid"), 1234);
                assert_eq!(header.gid().expect("gid"), 5678);
                assert_eq!(header.mtime().expect("mtime"), 42);
                let pax: Vec<(String, Vec<u8>)> = entry
                    .pax_extensions()
                    .expect("pax")
                    .expect("present")
                    .map(|e| {
                        let e = e.expect("record");
                        (e.key().expect("key").to_owned(), e.value_bytes().to_vec())
                    })
                    .collect();
                assert_eq!(pax, [("SCHILY.xattr.user.test".into(), b"value".to_vec())]);
            }
            if path == "dir/s" {
                let target = entry.link_name_bytes().expect("link");
                assert_eq!(&*target, long_target.as_bytes());
            }
            if path == "dir/c" {
                assert_eq!(header.device_major().expect("major"), Some(1));
                assert_eq!(header.device_minor().expect("minor"), Some(3));
            }
            seen.push(path);
        }
        assert_eq!(
            seen,
            [
                "dir/",
                long.as_str(),
                "dir/s",
                "dir/h",
                "dir/c",
                "../escape"
            ]
        );
    }

    /// GNU tar is the reference reader: if it lists our long names, unicode names, owners and
    /// modes as we meant them, Docker's and other readers will too.
    #[test]
    fn gnu_tar_lists_long_and_unicode_names() {
        let long_name = format!("d/{}", "n".repeat(150));
        let deep: String = (0..5)
            .map(|i| format!("{i}{}/", "p".repeat(60)))
            .collect::<Vec<_>>()
            .concat();
        let deep_file = format!("{deep}file");
        let mut layer = LayerBuilder::new();
        layer
            .dir("d", 0o755)
            .file(&long_name, b"hello", 0o644)
            .owner(1000, 100)
            .file("d/héllo wörld ✓", b"", 0o600)
            .symlink("d/link", &format!("/{}", "x".repeat(200)))
            .file(&deep_file, b"deep", 0o644)
            .fifo("d/fifo")
            .xattr("user.test", b"v");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("layer.tar");
        std::fs::write(&path, layer.build()).expect("write");
        let out = std::process::Command::new("tar")
            .args(["--quoting-style=literal", "--numeric-owner", "-tvf"])
            .arg(&path)
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("GNU tar must be installed");
        assert!(
            out.status.success(),
            "tar -tvf failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8(out.stdout).expect("utf-8 listing");
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 6, "{listing}");
        assert!(lines[1].starts_with("-rw-r--r-- 1000/100"), "{}", lines[1]);
        assert!(lines[1].ends_with(&long_name), "{}", lines[1]);
        assert!(lines[2].ends_with("d/héllo wörld ✓"), "{}", lines[2]);
        assert!(lines[3].starts_with('l'), "{}", lines[3]);
        assert!(lines[3].ends_with(&"x".repeat(200)), "{}", lines[3]);
        assert!(deep_file.len() > 255);
        assert!(lines[4].ends_with(&deep_file), "{}", lines[4]);
        assert!(lines[5].starts_with('p'), "{}", lines[5]);
    }
}
