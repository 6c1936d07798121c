//! Layer tapes: everything of a layer tar but its files' contents, recorded while the layer is
//! extracted, so that the exact tar can be put together again from the tape and the layer's
//! directory (the idea of Docker's `tar-split`).
//!
//! With it, `fsck --verify` recomputes a layer's `DiffID` from what is on disk, catching any
//! changed byte, and `layer export` writes the original tar byte for byte, so its digest is the
//! `DiffID` again.
//!
//! A tape is a zstd stream of records: `Raw` bytes of the tar (headers, PAX records, padding,
//! the end-of-archive blocks, any trailing data) and `Payload`s (read `size` bytes from the
//! regular file at `path` in the layer), then the `DiffID` it must hash to. A layer whose tar
//! names a file's path again after writing it (a later entry replacing it, a whiteout removing
//! it, a directory holding it replaced) cannot be put together from the directory, which holds
//! only the last version: it gets no tape, and says why.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::fd::AsFd as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::ids::{DiffId, Digest};

const MAGIC: &[u8] = b"STRATA-TAPE-1\n";
const RAW: u8 = 0;
const PAYLOAD: u8 = 1;
const END: u8 = 2;

/// Raw bytes are written out as a record once this many are held, so memory stays small
/// whatever lies between two payloads (millions of empty entries, gigabytes of trailing data).
const RAW_CHUNK: usize = 64 << 10;

/// A layer whose compressed tape grows past this gets none: what a layer holds apart from its
/// files' contents compresses to a few MiB even for large images, so only a hostile or
/// pathological tar gets here, and its tape would be held in memory until the import commits.
const MAX_TAPE_BYTES: usize = 64 << 20;

/// The longest path a tape may name: Linux's `PATH_MAX`.
const MAX_PATH_BYTES: usize = 4096;

/// Records a tape from the bytes the tar parser reads ([`TapeRecorder::observe`]) and what the
/// extraction says about them ([`TapeRecorder::payload`], [`TapeRecorder::entry`]).
pub(crate) struct TapeRecorder {
    /// Stream bytes seen so far.
    position: u64,
    /// Raw bytes since the last record.
    raw: Vec<u8>,
    /// The stream range of the payload being read, not kept.
    skip: (u64, u64),
    out: zstd::Encoder<'static, Vec<u8>>,
    payloads: HashSet<Vec<u8>>,
    /// Every directory above a payload.
    above: HashSet<Vec<u8>>,
    /// Why this layer cannot have a tape, once known.
    broken: Option<String>,
}

impl TapeRecorder {
    pub(crate) fn new() -> io::Result<Self> {
        let mut out = zstd::Encoder::new(Vec::new(), 3)?;
        out.write_all(MAGIC)?;
        Ok(Self {
            position: 0,
            raw: Vec::new(),
            skip: (0, 0),
            out,
            payloads: HashSet::new(),
            above: HashSet::new(),
            broken: None,
        })
    }

    /// `bytes` were just read from the stream, in order.
    pub(crate) fn observe(&mut self, bytes: &[u8]) {
        let start = self.position;
        self.position += bytes.len() as u64;
        if self.broken.is_some() {
            return;
        }
        // Keep what lies outside the payload being read: [start, from) and [to, end).
        let end = self.position;
        let (from, to) = (self.skip.0.clamp(start, end), self.skip.1.clamp(start, end));
        let index = |at: u64| usize::try_from(at - start).unwrap_or(bytes.len());
        self.raw.extend_from_slice(&bytes[..index(from)]);
        self.raw.extend_from_slice(&bytes[index(to)..]);
        if self.raw.len() >= RAW_CHUNK
            && let Err(e) = self.flush_raw()
        {
            self.give_up(format!("recording the tape: {e}"));
        }
    }

    /// This layer gets no tape, for `why`: what was recorded is dropped now.
    fn give_up(&mut self, why: String) {
        self.broken = Some(why);
        self.raw = Vec::new();
        self.payloads = HashSet::new();
        self.above = HashSet::new();
        if let Ok(empty) = zstd::Encoder::new(Vec::new(), 0) {
            self.out = empty;
        }
    }

    fn flush_raw(&mut self) -> io::Result<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        self.out.write_all(&[RAW])?;
        self.out.write_all(&(self.raw.len() as u64).to_le_bytes())?;
        self.out.write_all(&self.raw)?;
        self.raw.clear();
        if self.out.get_ref().len() > MAX_TAPE_BYTES {
            return Err(too_long());
        }
        Ok(())
    }

    /// The `size` bytes from stream offset `start` are the contents of the regular file at
    /// `path` (relative, normalised), about to be read and written there.
    pub(crate) fn payload(&mut self, start: u64, size: u64, path: &[u8]) {
        if self.broken.is_some() || size == 0 {
            return;
        }
        if start != self.position {
            self.give_up(format!(
                "the tar parser read past entry '{}' before its data",
                String::from_utf8_lossy(path)
            ));
            return;
        }
        let recorded = self.flush_raw().and_then(|()| {
            self.out.write_all(&[PAYLOAD])?;
            self.out.write_all(
                &u32::try_from(path.len())
                    .map_err(io::Error::other)?
                    .to_le_bytes(),
            )?;
            self.out.write_all(path)?;
            self.out.write_all(&size.to_le_bytes())
        });
        if let Err(e) = recorded {
            self.give_up(format!("recording the tape: {e}"));
            return;
        }
        self.skip = (start, start + size);
        self.payloads.insert(path.to_vec());
        let mut dir = path;
        while let Some(i) = dir.iter().rposition(|&b| b == b'/') {
            dir = &dir[..i];
            self.above.insert(dir.to_vec());
        }
    }

    /// An entry for `path` (relative, normalised) is about to be applied: if it replaces or
    /// removes a file whose contents are on the tape, the tape cannot be replayed. A directory
    /// entry over a directory only changes its metadata, which is fine.
    pub(crate) fn entry(&mut self, path: &[u8], is_dir: bool) {
        if self.broken.is_none()
            && (self.payloads.contains(path) || (!is_dir && self.above.contains(path)))
        {
            self.give_up(format!(
                "the tar names '{}' again after writing a file there",
                String::from_utf8_lossy(path)
            ));
        }
    }

    /// The stream ended, hashing to `diff_id`: the compressed tape, or why there is none.
    pub(crate) fn finish(mut self, diff_id: DiffId) -> Result<Vec<u8>, String> {
        if let Some(why) = self.broken.take() {
            return Err(why);
        }
        let finished = self.flush_raw().and_then(|()| {
            self.out.write_all(&[END])?;
            self.out.write_all(diff_id.0.as_bytes())?;
            let tape = self.out.finish()?;
            if tape.len() > MAX_TAPE_BYTES {
                return Err(too_long());
            }
            Ok(tape)
        });
        finished.map_err(|e| format!("recording the tape: {e}"))
    }
}

fn too_long() -> io::Error {
    io::Error::other(format!("it would exceed {} MiB", MAX_TAPE_BYTES >> 20))
}

/// Why a tape could not be played back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TapeError {
    #[error("reading the tape: {0}")]
    Read(#[source] io::Error),
    #[error("the tape is damaged: {0}")]
    Damaged(&'static str),
    #[error("'{path}': {source}")]
    Payload {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("'{path}' is {actual} bytes, the layer tar had {expected}")]
    Size {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("writing the layer tar: {0}")]
    Write(#[source] io::Error),
}

/// Plays the tape read from `tape` back into `out`, taking file contents from the layer
/// directory `diff` (opened beneath it, never following symlinks). Returns the `DiffID` the
/// tape says the stream must hash to, and the digest of what was written.
pub(crate) fn play(
    tape: impl Read,
    diff: &Path,
    out: &mut impl Write,
) -> Result<(DiffId, Digest), TapeError> {
    let mut tape = zstd::Decoder::new(tape).map_err(TapeError::Read)?;
    let mut magic = [0u8; MAGIC.len()];
    tape.read_exact(&mut magic).map_err(TapeError::Read)?;
    if magic != MAGIC {
        return Err(TapeError::Damaged("not a tape"));
    }
    let layer = crate::sys::fs::open_dir(diff).map_err(|source| TapeError::Payload {
        path: diff.display().to_string(),
        source,
    })?;
    let mut hasher = Sha256::new();
    let mut emit = |bytes: &[u8]| -> Result<(), TapeError> {
        hasher.update(bytes);
        out.write_all(bytes).map_err(TapeError::Write)
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut tag = [0u8; 1];
        tape.read_exact(&mut tag).map_err(TapeError::Read)?;
        match tag[0] {
            RAW => {
                let len = read_u64(&mut tape)?;
                let mut left = len;
                while left > 0 {
                    let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
                    tape.read_exact(&mut buf[..n]).map_err(TapeError::Read)?;
                    emit(&buf[..n])?;
                    left -= n as u64;
                }
            }
            PAYLOAD => {
                let mut len = [0u8; 4];
                tape.read_exact(&mut len).map_err(TapeError::Read)?;
                let len = u32::from_le_bytes(len) as usize;
                if len > MAX_PATH_BYTES {
                    return Err(TapeError::Damaged("a path is longer than PATH_MAX"));
                }
                let mut path = vec![0u8; len];
                tape.read_exact(&mut path).map_err(TapeError::Read)?;
                let size = read_u64(&mut tape)?;
                let shown = String::from_utf8_lossy(&path).into_owned();
                let payload_error = |source| TapeError::Payload {
                    path: shown.clone(),
                    source,
                };
                let fd = crate::sys::fs::open_file_beneath(layer.as_fd(), &path)
                    .map_err(payload_error)?;
                let mut file = std::fs::File::from(fd);
                let mut copied = 0u64;
                loop {
                    let n = file.read(&mut buf).map_err(payload_error)?;
                    if n == 0 {
                        break;
                    }
                    copied += n as u64;
                    if copied > size {
                        break;
                    }
                    emit(&buf[..n])?;
                }
                if copied != size {
                    return Err(TapeError::Size {
                        path: shown,
                        expected: size,
                        actual: file.metadata().map_or(copied, |m| m.len()),
                    });
                }
            }
            END => {
                let mut id = [0u8; 32];
                tape.read_exact(&mut id).map_err(TapeError::Read)?;
                return Ok((
                    DiffId(Digest::from_bytes(id)),
                    Digest::from_bytes(hasher.finalize().into()),
                ));
            }
            _ => return Err(TapeError::Damaged("unknown record")),
        }
    }
}

fn read_u64(r: &mut impl Read) -> Result<u64, TapeError> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).map_err(TapeError::Read)?;
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use tar::{EntryType, Header};

    use super::play;
    use crate::archive::extract_layer;
    use crate::ids::{DiffId, Digest};

    /// A layer tar with what real ones have: a GNU long name, a GNU long link, files empty and
    /// not, a hardlink, a symlink, a whiteout, an opaque directory, and data after the
    /// end-of-archive blocks.
    fn varied_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |kind: EntryType, name: &str, link: Option<&str>, data: &[u8]| {
            let mut h = Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(if kind == EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            if let Some(link) = link {
                b.append_link(&mut h, name, link).unwrap();
            } else {
                b.append_data(&mut h, name, data).unwrap();
            }
        };
        add(EntryType::Directory, "etc/", None, b"");
        add(EntryType::Regular, "etc/hostname", None, b"layer\n");
        add(EntryType::Regular, "etc/empty", None, b"");
        add(
            EntryType::Regular,
            &format!("deep/{}/file", "d".repeat(120)),
            None,
            &[7u8; 5000],
        );
        add(EntryType::Link, "etc/hostname2", Some("etc/hostname"), b"");
        add(EntryType::Symlink, "etc/link", Some(&"t".repeat(150)), b"");
        add(EntryType::Directory, "opaque/", None, b"");
        add(EntryType::Regular, "opaque/.wh..wh..opq", None, b"");
        add(EntryType::Regular, "etc/.wh.gone", None, b"");
        add(EntryType::Regular, "big", None, &vec![3u8; 3 << 20]);
        let mut tar = b.into_inner().unwrap();
        tar.write_all(b"trailing bytes after the archive").unwrap();
        tar
    }

    #[test]
    fn a_played_tape_is_the_original_tar_byte_for_byte() {
        let tar = varied_tar();
        let dir = tempfile::tempdir().unwrap();
        let stats = extract_layer(tar.as_slice(), dir.path()).unwrap();
        let tape = stats.tape.expect("a tape");
        assert!(
            tape.len() < tar.len() / 20,
            "the tape holds contents: {} bytes",
            tape.len()
        );
        let mut out = Vec::new();
        let (recorded, actual) = play(tape.as_slice(), dir.path(), &mut out).unwrap();
        assert!(
            out == tar,
            "played back {} bytes, the tar has {}",
            out.len(),
            tar.len()
        );
        assert_eq!(recorded, stats.diff_id);
        assert_eq!(DiffId(actual), stats.diff_id);
        assert_eq!(stats.diff_id, DiffId(Digest::of(&tar)));
    }

    /// Raw bytes go to the tape in bounded chunks: a long run of them (here 1 MiB of trailing
    /// data, sixteen chunks) still plays back exactly.
    #[test]
    fn long_raw_runs_play_back_exactly() {
        let mut tar = varied_tar();
        tar.extend((0..super::RAW_CHUNK * 16).map(|i| u8::try_from(i % 251).unwrap()));
        let dir = tempfile::tempdir().unwrap();
        let stats = extract_layer(tar.as_slice(), dir.path()).unwrap();
        let mut out = Vec::new();
        play(stats.tape.expect("a tape").as_slice(), dir.path(), &mut out).unwrap();
        assert!(
            out == tar,
            "played back {} bytes of {}",
            out.len(),
            tar.len()
        );
    }

    /// A tar whose non-file bytes do not compress (here incompressible trailing data past the
    /// cap) gets no tape rather than holding it all in memory, and still extracts.
    #[test]
    fn a_tape_past_the_cap_is_dropped() {
        let mut tar = varied_tar();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        tar.extend((0..super::MAX_TAPE_BYTES / 8 + 1024).flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        }));
        let dir = tempfile::tempdir().unwrap();
        let stats = extract_layer(tar.as_slice(), dir.path()).unwrap();
        assert!(stats.tape.is_none(), "a tape past the cap");
        assert_eq!(stats.diff_id, DiffId(Digest::of(&tar)));
        assert_eq!(
            std::fs::read(dir.path().join("etc/hostname")).unwrap(),
            b"layer\n"
        );
    }

    /// Names need not be UTF-8 (found by the `archive_extract` fuzz target): a file named in
    /// Latin-1 plays back like any other. A payload that became a symlink is refused.
    #[test]
    fn non_utf8_names_play_back_and_symlinks_are_not_followed() {
        use std::os::unix::ffi::OsStrExt as _;
        let mut b = tar::Builder::new(Vec::new());
        let mut h = Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(4);
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9");
        b.append_data(&mut h, name, &b"data"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let stats = extract_layer(tar.as_slice(), dir.path()).unwrap();
        let tape = stats.tape.expect("a tape");
        let mut out = Vec::new();
        play(tape.as_slice(), dir.path(), &mut out).unwrap();
        assert!(
            out == tar,
            "played back {} bytes of {}",
            out.len(),
            tar.len()
        );

        std::fs::remove_file(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join("elsewhere"), b"data").unwrap();
        std::os::unix::fs::symlink("elsewhere", dir.path().join(name)).unwrap();
        let e = play(tape.as_slice(), dir.path(), &mut std::io::sink()).unwrap_err();
        assert!(matches!(e, super::TapeError::Payload { .. }), "{e}");
    }

    /// A damaged tape naming a path longer than `PATH_MAX` is refused, not allocated.
    #[test]
    fn a_tape_with_an_oversized_path_is_damaged() {
        let mut raw = super::MAGIC.to_vec();
        raw.push(super::PAYLOAD);
        raw.extend(u32::MAX.to_le_bytes());
        let tape = zstd::encode_all(raw.as_slice(), 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let e = play(tape.as_slice(), dir.path(), &mut std::io::sink()).unwrap_err();
        assert!(e.to_string().contains("PATH_MAX"), "{e}");
    }

    #[test]
    fn a_changed_file_shows_in_the_digest_and_a_resized_one_is_named() {
        let tar = varied_tar();
        let dir = tempfile::tempdir().unwrap();
        let stats = extract_layer(tar.as_slice(), dir.path()).unwrap();
        let tape = stats.tape.unwrap();
        std::fs::write(dir.path().join("etc/hostname"), b"LAYER\n").unwrap();
        let (_, actual) = play(tape.as_slice(), dir.path(), &mut std::io::sink()).unwrap();
        assert_ne!(DiffId(actual), stats.diff_id);
        std::fs::write(dir.path().join("etc/hostname"), b"longer\n").unwrap();
        let e = play(tape.as_slice(), dir.path(), &mut std::io::sink()).unwrap_err();
        assert!(e.to_string().contains("etc/hostname"), "{e}");
    }

    #[test]
    fn a_tar_that_rewrites_a_file_gets_no_tape() {
        for second in ["file", "dir/file"] {
            let mut b = tar::Builder::new(Vec::new());
            let mut add = |name: &str, data: &[u8]| {
                let mut h = Header::new_ustar();
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, data).unwrap();
            };
            add("dir/file", b"first");
            add(
                if second == "file" {
                    "dir/file"
                } else {
                    "dir/.wh.file"
                },
                b"second",
            );
            let tar = b.into_inner().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let stats = extract_layer(tar.as_slice(), dir.path()).unwrap();
            assert!(
                stats.tape.is_none(),
                "{second}: a tape that cannot be played back"
            );
        }
    }
}
