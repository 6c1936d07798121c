//! Writing an overlay-format diff directory back out as a layer tar: the inverse of
//! [`extract_layer`](super::extract_layer).
//!
//! Character devices 0/0 become `.wh.NAME` whiteout files (mode 0600, as Docker writes them);
//! a directory with `trusted.overlay.opaque=y` is followed by a `dir/.wh..wh..opq` entry;
//! inodes seen twice become hardlink entries to the first name; other xattrs go out as PAX
//! `SCHILY.xattr.*` records, except `trusted.overlay.*` (overlay's own bookkeeping) and
//! `security.selinux` (a label of this host, which Docker never exports either). Entries come
//! sorted by name, parents before children; the root directory itself is not an entry (as in
//! Docker's layer tars), but an opaque root still yields `.wh..wh..opq`. Sockets cannot be
//! represented in tar and are skipped, as Docker does. Times are whole seconds.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header};

/// Why a diff directory could not be exported. The output may hold a partial tar.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing layer tar (at {path}): {source}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {why}")]
    Unsupported { path: PathBuf, why: &'static str },
}

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Writes the layer tar of the overlay-format directory `diff_dir` to `out`.
pub fn export_layer(diff_dir: &Path, out: impl Write) -> Result<(), ExportError> {
    let mut exporter = Exporter {
        builder: Builder::new(out),
        links: HashMap::new(),
    };
    if is_opaque(diff_dir)? {
        let meta = lstat(diff_dir)?;
        exporter.append_opaque("", &meta)?;
    }
    exporter.walk(diff_dir, "")?;
    exporter
        .builder
        .finish()
        .map_err(|source| ExportError::Write {
            path: "end of archive".to_owned(),
            source,
        })
}

struct Exporter<W: Write> {
    builder: Builder<W>,
    /// (device, inode) of multiply linked files already written -> their tar name.
    links: HashMap<(u64, u64), String>,
}

fn lstat(path: &Path) -> Result<Metadata, ExportError> {
    fs::symlink_metadata(path).map_err(|source| ExportError::Read {
        path: path.to_owned(),
        source,
    })
}

fn is_opaque(path: &Path) -> Result<bool, ExportError> {
    match xattr::get(path, OPAQUE_XATTR) {
        Ok(v) => Ok(v.as_deref() == Some(b"y")),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP)) => Ok(false),
        Err(source) => Err(ExportError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn base_header(meta: &Metadata, kind: EntryType) -> Header {
    let mut h = Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    h.set_size(0);
    h
}

/// Reads a file for the builder, remembering whether a failure was the file's (not the output's).
struct SourceFile<'a> {
    file: File,
    failed: &'a Cell<bool>,
}

impl Read for SourceFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf).inspect_err(|_| self.failed.set(true))
    }
}

impl<W: Write> Exporter<W> {
    fn write_err(name: &str) -> impl Fn(io::Error) -> ExportError + '_ {
        move |source| ExportError::Write {
            path: name.to_owned(),
            source,
        }
    }

    fn walk(&mut self, dir: &Path, rel: &str) -> Result<(), ExportError> {
        let read_err = |source| ExportError::Read {
            path: dir.to_owned(),
            source,
        };
        let mut names: Vec<OsString> = fs::read_dir(dir)
            .map_err(read_err)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(read_err)?;
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = dir.join(&name);
            let Some(name_str) = name.to_str() else {
                return Err(ExportError::Unsupported {
                    path,
                    why: "name is not UTF-8",
                });
            };
            let child = format!("{rel}{name_str}");
            let meta = lstat(&path)?;
            let ft = meta.file_type();
            if ft.is_dir() {
                self.append_xattrs(&path, &child)?;
                let mut h = base_header(&meta, EntryType::Directory);
                let dir_name = format!("{child}/");
                self.builder
                    .append_data(&mut h, &dir_name, io::empty())
                    .map_err(Self::write_err(&child))?;
                if is_opaque(&path)? {
                    self.append_opaque(&dir_name, &meta)?;
                }
                self.walk(&path, &dir_name)?;
            } else if ft.is_char_device() && meta.rdev() == 0 {
                let mut h = base_header(&meta, EntryType::Regular);
                h.set_mode(0o600);
                let wh = format!("{rel}.wh.{name_str}");
                self.builder
                    .append_data(&mut h, &wh, io::empty())
                    .map_err(Self::write_err(&child))?;
            } else if ft.is_socket() {
                tracing::debug!(path = %path.display(), "skipping socket: tar cannot hold it");
            } else {
                self.append_non_dir(&path, &child, &meta)?;
            }
        }
        Ok(())
    }

    fn append_non_dir(
        &mut self,
        path: &Path,
        name: &str,
        meta: &Metadata,
    ) -> Result<(), ExportError> {
        let ft = meta.file_type();
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let mut h = base_header(meta, EntryType::Link);
                let first = first.clone();
                return self
                    .builder
                    .append_link(&mut h, name, &first)
                    .map_err(Self::write_err(name));
            }
            self.links.insert(key, name.to_owned());
        }
        self.append_xattrs(path, name)?;
        if ft.is_file() {
            let mut h = base_header(meta, EntryType::Regular);
            h.set_size(meta.len());
            let file = File::open(path).map_err(|source| ExportError::Read {
                path: path.to_owned(),
                source,
            })?;
            let failed = Cell::new(false);
            let source = SourceFile {
                file,
                failed: &failed,
            };
            self.builder
                .append_data(&mut h, name, source.take(meta.len()))
                .map_err(|source| {
                    if failed.get() {
                        ExportError::Read {
                            path: path.to_owned(),
                            source,
                        }
                    } else {
                        Self::write_err(name)(source)
                    }
                })
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(|source| ExportError::Read {
                path: path.to_owned(),
                source,
            })?;
            let mut h = base_header(meta, EntryType::Symlink);
            self.builder
                .append_link(&mut h, name, &target)
                .map_err(Self::write_err(name))
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_fifo() {
                EntryType::Fifo
            } else if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            let mut h = base_header(meta, kind);
            let rdev = meta.rdev();
            let (major, minor) = (libc::major(rdev), libc::minor(rdev));
            h.set_device_major(major).map_err(Self::write_err(name))?;
            h.set_device_minor(minor).map_err(Self::write_err(name))?;
            self.builder
                .append_data(&mut h, name, io::empty())
                .map_err(Self::write_err(name))
        } else {
            Err(ExportError::Unsupported {
                path: path.to_owned(),
                why: "unknown file type",
            })
        }
    }

    /// `dir/.wh..wh..opq`, inheriting owner and permission bits from the directory (Docker).
    fn append_opaque(&mut self, dir_name: &str, meta: &Metadata) -> Result<(), ExportError> {
        let mut h = base_header(meta, EntryType::Regular);
        h.set_mode(meta.mode() & 0o777);
        let name = format!("{dir_name}.wh..wh..opq");
        self.builder
            .append_data(&mut h, &name, io::empty())
            .map_err(Self::write_err(&name))
    }

    /// A PAX header carrying the entry's exportable xattrs, if it has any.
    fn append_xattrs(&mut self, path: &Path, name: &str) -> Result<(), ExportError> {
        let read_err = |source| ExportError::Read {
            path: path.to_owned(),
            source,
        };
        let names = match xattr::list(path) {
            Ok(names) => names,
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
            Err(e) => return Err(read_err(e)),
        };
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        for key in names {
            let Some(key) = key.to_str() else { continue };
            if key.starts_with("trusted.overlay.") || key == "security.selinux" {
                continue;
            }
            if let Some(value) = xattr::get(path, key).map_err(read_err)? {
                records.push((format!("SCHILY.xattr.{key}"), value));
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        records.sort();
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(Self::write_err(name))
    }
}
