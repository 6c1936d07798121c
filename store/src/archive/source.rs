//! Reading a whole image archive (`docker save` before and after Docker 25, OCI image layouts)
//! in one sequential pass: layers are decompressed and applied to staging directories as their
//! entries stream by; manifests and configs are small and kept in memory until the end, when
//! everything is matched up and checked.
//!
//! Entries are told apart by name (`manifest.json`, `index.json`, `oci-layout`, `repositories`,
//! `VERSION`, `json`, `*.json` are metadata) and otherwise by their first bytes: gzip, zstd or
//! tar (`ustar` magic, or a zero block) are layers, `{` or whitespace is JSON, anything else is
//! kept as an opaque blob that only fails the import if a manifest uses it as a layer. Docker's
//! `manifest.json` wins over `index.json` when both are present (Docker ≥ 25 writes both).
//!
//! Tags: `RepoTags` of `manifest.json`; in OCI layouts the descriptor annotation
//! `io.containerd.image.name`, else `org.opencontainers.image.ref.name` when it is a full
//! reference (a bare tag such as `latest` names no repository and is ignored). `docker.io/library/`
//! and `docker.io/` prefixes are dropped, as Docker shows familiar names.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::extract::{Flusher, HashingReader, StreamState, Tracked, extract_staged, normalise};
use super::{ExtractError, LayerStats};
use crate::ids::{DiffId, Digest, IdError, ImageId, ImageRef};

/// A digest parsed from an archive path that may identify an already-stored layer:
/// `blobs/sha256/<hex>` (OCI blob digest, compressed or not) or `<hex>/layer.tar` (legacy
/// docker-save v1 layer id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobKey(pub Digest);

impl BlobKey {
    /// The key an archive path stands for, if any.
    pub fn from_archive_path(path: &str) -> Option<BlobKey> {
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            return Digest::from_hex(hex).ok().map(BlobKey);
        }
        let hex = path.strip_suffix("/layer.tar")?;
        Digest::from_hex(hex).ok().map(BlobKey)
    }
}

/// Where an import is, reported at the start of each archive entry and after each layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportProgress {
    /// Bytes of the archive consumed so far.
    pub archive_bytes: u64,
    /// The archive entry being read.
    pub entry: String,
    /// Layers extracted or verified so far.
    pub layers_done: usize,
}

/// Everything an archive held, checked: each image's layers match its config's `DiffIDs`.
#[derive(Debug, Clone)]
pub struct ImportedArchive {
    pub images: Vec<ArchiveImage>,
    /// Every layer some image uses, once per `DiffID`, in order of first use.
    pub layers: Vec<StagedLayer>,
}

#[derive(Debug, Clone)]
pub struct ArchiveImage {
    /// sha256 of the exact config JSON bytes.
    pub id: ImageId,
    /// The config, verbatim.
    pub config_json: Vec<u8>,
    pub config: ImageConfig,
    pub repo_tags: Vec<ImageRef>,
    /// The config's `rootfs.diff_ids`, bottom layer first.
    pub diff_ids: Vec<DiffId>,
}

#[derive(Debug, Clone)]
pub struct StagedLayer {
    pub diff_id: DiffId,
    /// The staged overlay-format diff directory under `staging`, or `None` when `known` said
    /// the layer is stored and only its content hash was verified.
    pub dir: Option<PathBuf>,
    pub stats: Option<LayerStats>,
    /// Blob keys this layer was seen under (compressed digest, legacy id).
    pub keys: Vec<BlobKey>,
}

/// The parts of an image config the store shows; every field tolerates `null` or absence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub variant: Option<String>,
    pub created: Option<String>,
    pub author: Option<String>,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub stop_signal: Option<String>,
}

impl ImageConfig {
    /// Parses an image config JSON (OCI or Docker).
    pub fn from_json(json: &[u8]) -> Result<ImageConfig, serde_json::Error> {
        parse_config(json).map(|(c, _)| c)
    }
}

/// Why an archive could not be read. Whatever the error, everything the call created under
/// `staging` has been removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    #[error("archive is empty")]
    Empty,
    #[error("not a tar archive")]
    NotTar,
    #[error("archive truncated in entry '{entry}'")]
    Truncated { entry: String },
    #[error("archive is corrupt after entry '{after}': {detail}")]
    Corrupt { after: String, detail: String },
    #[error("reading archive: {0}")]
    Read(#[source] io::Error),
    #[error("archive path '{path}' escapes the archive")]
    PathEscape { path: String },
    #[error("archive entry '{entry}' is larger than the {limit} bytes allowed for metadata")]
    TooLarge { entry: String, limit: u64 },
    #[error("blob '{blob}' does not match its digest: content is {actual}")]
    BlobDigestMismatch { blob: String, actual: Digest },
    #[error("blob '{blob}' is {actual} bytes, its descriptor says {expected}")]
    BlobSizeMismatch {
        blob: String,
        expected: u64,
        actual: u64,
    },
    #[error("layer '{entry}': {source}")]
    Layer {
        entry: String,
        #[source]
        source: ExtractError,
    },
    #[error("layer '{entry}': decompressing: {source}")]
    Decompress {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("layer '{entry}': content does not match stored layer {expected}: content is {actual}")]
    KnownLayerMismatch {
        entry: String,
        expected: DiffId,
        actual: DiffId,
    },
    #[error("no manifest.json or index.json")]
    NoManifest,
    #[error("'{file}': invalid JSON: {source}")]
    Json {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("'{path}' referenced by {by} is missing from the archive")]
    Missing { path: String, by: String },
    #[error("'{path}' referenced by {by} as a layer is not a tar, gzip or zstd stream")]
    NotALayer { path: String, by: String },
    #[error("'{path}' referenced by {by} is not JSON")]
    NotJson { path: String, by: String },
    #[error("image {image}: config has {config} diff_ids but the manifest lists {layers} layers")]
    LayerCount {
        image: String,
        config: usize,
        layers: usize,
    },
    #[error(
        "layer {index} of {image}: DiffID mismatch: config says {config}, content is {content}"
    )]
    DiffIdMismatch {
        index: usize,
        image: String,
        config: DiffId,
        content: DiffId,
    },
    #[error("invalid tag '{tag}': {source}")]
    InvalidTag {
        tag: String,
        #[source]
        source: IdError,
    },
    #[error("'{file}': {why}")]
    Invalid { file: String, why: String },
    #[error("unsupported digest '{digest}' in '{file}': only sha256 is supported")]
    UnsupportedDigest { digest: String, file: String },
    #[error("archive holds no image")]
    NoImages,
    #[error("staging directory {path}: {source}")]
    Staging {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

const METADATA_LIMIT: u64 = 32 << 20;
const MAX_ALIAS_DEPTH: usize = 40;
const MAX_INDEX_DEPTH: usize = 8;

/// Reads an image archive from `reader` in one sequential pass (it may be a pipe), staging each
/// new layer in a fresh directory under `staging` (which must exist). Layers whose blob key
/// `known` maps to a stored `DiffID` are only hashed and compared. Progress is reported at every
/// archive entry and after every layer.
pub fn read_image_archive(
    reader: impl Read,
    staging: &Path,
    known: &dyn Fn(&BlobKey) -> Option<DiffId>,
    progress: &mut dyn FnMut(&ImportProgress),
) -> Result<ImportedArchive, ArchiveError> {
    let mut guard = StagingGuard {
        dirs: Vec::new(),
        flusher: Flusher::new(staging),
    };
    let blobs = read_entries(reader, staging, known, progress, &mut guard)?;
    let imported = assemble(&blobs)?;
    // Staged layers no image uses are not handed out: remove them now.
    for dir in &guard.dirs {
        if !imported
            .layers
            .iter()
            .any(|l| l.dir.as_deref() == Some(dir.as_path()))
        {
            remove_dir(dir);
        }
    }
    guard.dirs.clear();
    Ok(imported)
}

/// Removes every staged directory unless the read succeeded and cleared the list. It owns the
/// background flush of what is staged: dropping it waits for a flush in flight, whether the
/// read failed or not.
struct StagingGuard {
    dirs: Vec<PathBuf>,
    flusher: Flusher,
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        for dir in &self.dirs {
            remove_dir(dir);
        }
    }
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %dir.display(), error = %e, "could not remove staged layer");
    }
}

/// What one archive entry turned out to be.
#[derive(Debug)]
enum Blob {
    Json(Vec<u8>),
    Layer(LayerBlob),
    Other,
}

#[derive(Debug)]
struct LayerBlob {
    diff_id: DiffId,
    dir: Option<PathBuf>,
    stats: Option<LayerStats>,
}

#[derive(Debug, Default)]
struct Blobs {
    /// Regular entries by normalised archive path, with their raw size.
    files: HashMap<String, (Blob, u64)>,
    /// Symlink and hardlink entries: path -> normalised target path.
    aliases: HashMap<String, String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    Tar,
    Gzip,
    Zstd,
    Json,
    Other,
}

fn sniff(head: &[u8], name: &str) -> Sniffed {
    if head.starts_with(&[0x1f, 0x8b]) {
        Sniffed::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Sniffed::Zstd
    } else if (head.len() >= 262 && &head[257..262] == b"ustar")
        || (head.len() == 512 && head.iter().all(|&b| b == 0))
        || name.ends_with("/layer.tar")
    {
        Sniffed::Tar
    } else if head
        .first()
        .is_some_and(|b| matches!(b, b'{' | b' ' | b'\t' | b'\n' | b'\r'))
    {
        Sniffed::Json
    } else {
        Sniffed::Other
    }
}

fn is_metadata_name(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    matches!(
        base,
        "manifest.json" | "index.json" | "oci-layout" | "repositories" | "VERSION" | "json"
    ) || Path::new(base)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Normalises an archive-relative path (`./` and leading `/` of entry names are harmless;
/// `..` above the top is an escape).
fn archive_path(raw: &str) -> Result<String, ArchiveError> {
    let mut out = Vec::new();
    if !normalise(raw.as_bytes(), &mut out) {
        return Err(ArchiveError::PathEscape {
            path: raw.to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Normalises a path written inside a manifest: relative to the archive root, never absolute.
fn manifest_path(raw: &str) -> Result<String, ArchiveError> {
    if raw.starts_with('/') {
        return Err(ArchiveError::PathEscape {
            path: raw.to_owned(),
        });
    }
    archive_path(raw)
}

fn read_entries(
    reader: impl Read,
    staging: &Path,
    known: &dyn Fn(&BlobKey) -> Option<DiffId>,
    progress: &mut dyn FnMut(&ImportProgress),
    guard: &mut StagingGuard,
) -> Result<Blobs, ArchiveError> {
    let state = StreamState::default();
    let tracked = Tracked {
        inner: BufReader::with_capacity(1 << 20, reader),
        state: &state,
        tape: None,
    };
    let mut archive = tar::Archive::new(tracked);
    let mut blobs = Blobs::default();
    let mut last = String::new();
    let mut seen = 0usize;
    let mut layers_done = 0usize;
    let mut head = Vec::with_capacity(512);
    let stream_error = |e: io::Error, last: &str, seen: usize| {
        if state.failed.get() {
            ArchiveError::Read(e)
        } else if seen == 0 && !state.eof.get() {
            ArchiveError::NotTar
        } else if state.eof.get() {
            if seen == 0 && state.consumed.get() < 512 {
                ArchiveError::NotTar
            } else {
                ArchiveError::Truncated {
                    entry: last.to_owned(),
                }
            }
        } else {
            ArchiveError::Corrupt {
                after: last.to_owned(),
                detail: e.to_string(),
            }
        }
    };
    for entry in archive.entries().map_err(ArchiveError::Read)? {
        let mut entry = entry.map_err(|e| stream_error(e, &last, seen))?;
        seen += 1;
        last = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = archive_path(&last)?;
        progress(&ImportProgress {
            archive_bytes: state.consumed.get(),
            entry: name.clone(),
            layers_done,
        });
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name_bytes().unwrap_or_default();
            let resolved =
                alias_target(&name, &String::from_utf8_lossy(&target), kind.is_symlink())?;
            blobs.aliases.insert(name.clone(), resolved);
            blobs.files.remove(&name);
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            let size = entry.size();
            let blob = read_blob(&mut entry, &name, &mut head, staging, known, guard, &state)
                .map_err(|e| {
                    if state.eof.get() {
                        ArchiveError::Truncated {
                            entry: name.clone(),
                        }
                    } else {
                        e
                    }
                })?;
            if let Blob::Layer(layer) = &blob {
                if layer.dir.is_some() {
                    guard.flusher.kick();
                }
                layers_done += 1;
                progress(&ImportProgress {
                    archive_bytes: state.consumed.get(),
                    entry: name.clone(),
                    layers_done,
                });
            }
            blobs.aliases.remove(&name);
            if let Some((Blob::Layer(LayerBlob { dir: Some(old), .. }), _)) =
                blobs.files.insert(name, (blob, size))
            {
                remove_dir(&old);
                guard.dirs.retain(|d| d != &old);
            }
        }
        if state.eof.get() {
            return Err(ArchiveError::Truncated { entry: last });
        }
    }
    if state.eof.get() {
        if state.consumed.get() == 0 {
            return Err(ArchiveError::Empty);
        }
        if seen == 0 {
            return Err(ArchiveError::NotTar);
        }
        return Err(ArchiveError::Truncated { entry: last });
    }
    // Read what follows the end-of-archive marker, so that a sender writing into a pipe is not
    // left blocked; it is not interpreted.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(ArchiveError::Read)?;
    Ok(blobs)
}

/// The archive path a symlink (relative to its directory) or hardlink (relative to the archive
/// root) entry stands for.
fn alias_target(name: &str, target: &str, symlink: bool) -> Result<String, ArchiveError> {
    if !symlink {
        return archive_path(target);
    }
    if target.starts_with('/') {
        return Err(ArchiveError::PathEscape {
            path: format!("{name} -> {target}"),
        });
    }
    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
    archive_path(&format!("{dir}/{target}")).map_err(|_| ArchiveError::PathEscape {
        path: format!("{name} -> {target}"),
    })
}

/// Reads one regular entry: buffers metadata, extracts or verifies layers, and checks the
/// digest of `blobs/sha256/<hex>` entries against their name.
fn read_blob(
    entry: &mut impl Read,
    name: &str,
    head: &mut Vec<u8>,
    staging: &Path,
    known: &dyn Fn(&BlobKey) -> Option<DiffId>,
    guard: &mut StagingGuard,
    state: &StreamState,
) -> Result<Blob, ArchiveError> {
    let expected = match name.strip_prefix("blobs/sha256/") {
        Some(hex) => Some(Digest::from_hex(hex).map_err(|_| ArchiveError::Invalid {
            file: name.to_owned(),
            why: "blob name is not a sha256 hex digest".to_owned(),
        })?),
        None => None,
    };
    // Only `blobs/sha256/<hex>` names promise a digest; a legacy `<id>/layer.tar` is checked by
    // its DiffID alone, so its bytes are not hashed twice.
    let mut raw = if expected.is_some() {
        HashingReader::new(entry)
    } else {
        HashingReader::counting(entry)
    };
    head.clear();
    (&mut raw)
        .take(512)
        .read_to_end(head)
        .map_err(|e| read_error(e, name, state))?;
    let kind = if is_metadata_name(name) || head.is_empty() {
        Sniffed::Json
    } else {
        sniff(head, name)
    };
    let blob = match kind {
        Sniffed::Json => {
            let mut json = head.clone();
            (&mut raw)
                .take(METADATA_LIMIT + 1 - json.len() as u64)
                .read_to_end(&mut json)
                .map_err(|e| read_error(e, name, state))?;
            if json.len() as u64 > METADATA_LIMIT {
                return Err(ArchiveError::TooLarge {
                    entry: name.to_owned(),
                    limit: METADATA_LIMIT,
                });
            }
            Blob::Json(json)
        }
        Sniffed::Other => {
            io::copy(&mut raw, &mut io::sink()).map_err(|e| read_error(e, name, state))?;
            Blob::Other
        }
        Sniffed::Tar | Sniffed::Gzip | Sniffed::Zstd => {
            let layer = read_layer(
                &mut raw, head, kind, name, expected, staging, known, guard, state,
            )?;
            // Whatever follows the compressed stream is part of the blob and of its digest.
            io::copy(&mut raw, &mut io::sink()).map_err(|e| read_error(e, name, state))?;
            Blob::Layer(layer)
        }
    };
    if state.eof.get() {
        return Err(ArchiveError::Truncated {
            entry: name.to_owned(),
        });
    }
    if let Some(expected) = expected
        && let Some(actual) = raw.digest()
        && actual != expected
    {
        if let Blob::Layer(LayerBlob { dir: Some(dir), .. }) = &blob {
            remove_dir(dir);
            guard.dirs.retain(|d| d != dir);
        }
        return Err(ArchiveError::BlobDigestMismatch {
            blob: name.to_owned(),
            actual,
        });
    }
    Ok(blob)
}

fn read_error(e: io::Error, name: &str, state: &StreamState) -> ArchiveError {
    if state.eof.get() {
        ArchiveError::Truncated {
            entry: name.to_owned(),
        }
    } else {
        ArchiveError::Read(e)
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
fn read_layer(
    raw: &mut impl Read,
    head: &[u8],
    kind: Sniffed,
    name: &str,
    blob_digest: Option<Digest>,
    staging: &Path,
    known: &dyn Fn(&BlobKey) -> Option<DiffId>,
    guard: &mut StagingGuard,
    state: &StreamState,
) -> Result<LayerBlob, ArchiveError> {
    let stream = head.chain(raw);
    let mut decompressed: Box<dyn Read + '_> = match kind {
        Sniffed::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Sniffed::Zstd => Box::new(zstd::stream::read::Decoder::new(stream).map_err(|source| {
            ArchiveError::Decompress {
                entry: name.to_owned(),
                source,
            }
        })?),
        _ => Box::new(stream),
    };
    // An uncompressed blob is its own DiffID: `read_blob` hashes it to check its name, and
    // rejects it (discarding what was staged) if the check fails, so it is not hashed again.
    let given = match (kind, blob_digest) {
        (Sniffed::Tar, Some(digest)) => Some(DiffId(digest)),
        _ => None,
    };
    let known_diff = BlobKey::from_archive_path(name).and_then(|k| known(&k));
    if let Some(expected) = known_diff {
        let mut hashing = if given == Some(expected) {
            HashingReader::counting(&mut decompressed)
        } else {
            HashingReader::new(&mut decompressed)
        };
        io::copy(&mut hashing, &mut io::sink()).map_err(|source| {
            if state.eof.get() || state.failed.get() {
                read_error(source, name, state)
            } else {
                ArchiveError::Decompress {
                    entry: name.to_owned(),
                    source,
                }
            }
        })?;
        let actual = hashing.digest().map_or(expected, DiffId);
        if actual != expected {
            return Err(ArchiveError::KnownLayerMismatch {
                entry: name.to_owned(),
                expected,
                actual,
            });
        }
        return Ok(LayerBlob {
            diff_id: actual,
            dir: None,
            stats: None,
        });
    }
    let dir = new_staging_dir(staging)?;
    guard.dirs.push(dir.clone());
    match extract_staged(decompressed, &dir, given, &mut guard.flusher) {
        Ok(stats) => Ok(LayerBlob {
            diff_id: stats.diff_id,
            dir: Some(dir),
            stats: Some(stats),
        }),
        Err(_) if state.eof.get() => Err(ArchiveError::Truncated {
            entry: name.to_owned(),
        }),
        Err(ExtractError::Read(source)) if !state.failed.get() => Err(ArchiveError::Decompress {
            entry: name.to_owned(),
            source,
        }),
        Err(ExtractError::Read(source)) => Err(ArchiveError::Read(source)),
        Err(source) => Err(ArchiveError::Layer {
            entry: name.to_owned(),
            source,
        }),
    }
}

fn new_staging_dir(staging: &Path) -> Result<PathBuf, ArchiveError> {
    for n in 0u32.. {
        let dir = staging.join(format!("layer-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(ArchiveError::Staging { path: dir, source }),
        }
    }
    Err(ArchiveError::Staging {
        path: staging.to_owned(),
        source: io::Error::other("no free name"),
    })
}

// ---- Matching manifests, configs and layers -------------------------------------------------

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    size: Option<i64>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize, Default)]
struct Platform {
    #[serde(default)]
    architecture: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciDocument {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// One image as a manifest describes it, before checking.
struct ImagePlan {
    config_path: String,
    layer_paths: Vec<String>,
    tags: Vec<String>,
    by: String,
    /// Sizes the descriptors promise for (config, layers), OCI only.
    sizes: Option<(Option<i64>, Vec<Option<i64>>)>,
}

struct Resolver<'b> {
    blobs: &'b Blobs,
}

impl<'b> Resolver<'b> {
    /// Follows symlink/hardlink entries to the regular entry they stand for.
    fn resolve(&self, path: &str, by: &str) -> Result<(&'b str, &'b Blob, u64), ArchiveError> {
        let mut current = path.to_owned();
        for _ in 0..MAX_ALIAS_DEPTH {
            if let Some((key, (blob, size))) = self.blobs.files.get_key_value(&current) {
                return Ok((key.as_str(), blob, *size));
            }
            match self.blobs.aliases.get(&current) {
                Some(target) => current.clone_from(target),
                None => break,
            }
        }
        Err(ArchiveError::Missing {
            path: path.to_owned(),
            by: by.to_owned(),
        })
    }

    fn json(&self, path: &str, by: &str) -> Result<&'b [u8], ArchiveError> {
        match self.resolve(path, by)? {
            (_, Blob::Json(bytes), _) => Ok(bytes),
            _ => Err(ArchiveError::NotJson {
                path: path.to_owned(),
                by: by.to_owned(),
            }),
        }
    }
}

fn json_err(file: &str) -> impl Fn(serde_json::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Json {
        file: file.to_owned(),
        source,
    }
}

fn assemble(blobs: &Blobs) -> Result<ImportedArchive, ArchiveError> {
    let resolver = Resolver { blobs };
    let plans = if resolver.resolve("manifest.json", "").is_ok() {
        docker_plans(&resolver)?
    } else if resolver.resolve("index.json", "").is_ok() {
        let index = resolver.json("index.json", "archive")?;
        let doc: OciDocument = serde_json::from_slice(index).map_err(json_err("index.json"))?;
        let mut plans = Vec::new();
        for desc in doc.manifests.unwrap_or_default() {
            let tags = descriptor_tags(&desc);
            oci_plans(&resolver, &desc, tags, "index.json", 0, &mut plans)?;
        }
        plans
    } else {
        return Err(ArchiveError::NoManifest);
    };
    if plans.is_empty() {
        return Err(ArchiveError::NoImages);
    }

    let mut images: Vec<ArchiveImage> = Vec::new();
    let mut layer_set = LayerSet::default();
    for plan in plans {
        let by = plan.by.as_str();
        let (config_resolved, config_blob, config_size) =
            resolver.resolve(&plan.config_path, by)?;
        let Blob::Json(config_json) = config_blob else {
            return Err(ArchiveError::NotJson {
                path: plan.config_path.clone(),
                by: by.to_owned(),
            });
        };
        let id = ImageId(Digest::of(config_json));
        let (config, config_diffs) =
            parse_config(config_json).map_err(json_err(config_resolved))?;
        let diff_ids = config_diffs
            .iter()
            .map(|d| {
                d.parse::<DiffId>().map_err(|_| ArchiveError::Invalid {
                    file: config_resolved.to_owned(),
                    why: format!("invalid diff_id {d:?}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut repo_tags = Vec::new();
        for tag in &plan.tags {
            let parsed: ImageRef =
                familiar(tag)
                    .parse()
                    .map_err(|source| ArchiveError::InvalidTag {
                        tag: tag.clone(),
                        source,
                    })?;
            if !repo_tags.contains(&parsed) {
                repo_tags.push(parsed);
            }
        }
        if let Some((expected, _)) = &plan.sizes {
            check_size(config_resolved, *expected, config_size)?;
        }
        let image_name = repo_tags
            .first()
            .map_or_else(|| id.to_string(), ToString::to_string);
        layer_set.add(&resolver, &plan, image_name, &diff_ids)?;
        match images.iter_mut().find(|img| img.id == id) {
            Some(existing) => {
                for tag in repo_tags {
                    if !existing.repo_tags.contains(&tag) {
                        existing.repo_tags.push(tag);
                    }
                }
            }
            None => images.push(ArchiveImage {
                id,
                config_json: config_json.clone(),
                config,
                repo_tags,
                diff_ids,
            }),
        }
    }
    Ok(ImportedArchive {
        images,
        layers: layer_set.layers,
    })
}

/// The layers images use, once per `DiffID`, with every key each was seen under.
#[derive(Default)]
struct LayerSet {
    layers: Vec<StagedLayer>,
    index: HashMap<DiffId, usize>,
}

impl LayerSet {
    /// Checks one image's layers against its config's `diff_ids` and records them.
    fn add(
        &mut self,
        resolver: &Resolver<'_>,
        plan: &ImagePlan,
        image_name: String,
        diff_ids: &[DiffId],
    ) -> Result<(), ArchiveError> {
        let layers = &mut self.layers;
        let layer_index = &mut self.index;
        if plan.layer_paths.len() != diff_ids.len() {
            return Err(ArchiveError::LayerCount {
                image: image_name,
                config: diff_ids.len(),
                layers: plan.layer_paths.len(),
            });
        }
        for (i, path) in plan.layer_paths.iter().enumerate() {
            let (resolved, blob, size) = resolver.resolve(path, &image_name)?;
            let Blob::Layer(layer) = blob else {
                return Err(ArchiveError::NotALayer {
                    path: path.clone(),
                    by: image_name,
                });
            };
            if let Some((_, sizes)) = &plan.sizes {
                check_size(resolved, sizes.get(i).copied().flatten(), size)?;
            }
            if layer.diff_id != diff_ids[i] {
                return Err(ArchiveError::DiffIdMismatch {
                    index: i,
                    image: image_name,
                    config: diff_ids[i],
                    content: layer.diff_id,
                });
            }
            let keys = [
                BlobKey::from_archive_path(path),
                BlobKey::from_archive_path(resolved),
            ];
            let slot = *layer_index.entry(layer.diff_id).or_insert_with(|| {
                layers.push(StagedLayer {
                    diff_id: layer.diff_id,
                    dir: layer.dir.clone(),
                    stats: layer.stats.clone(),
                    keys: Vec::new(),
                });
                layers.len() - 1
            });
            for key in keys.into_iter().flatten() {
                if !layers[slot].keys.contains(&key) {
                    layers[slot].keys.push(key);
                }
            }
        }
        Ok(())
    }
}

fn check_size(path: &str, expected: Option<i64>, actual: u64) -> Result<(), ArchiveError> {
    match expected {
        Some(e) if u64::try_from(e).ok() != Some(actual) => Err(ArchiveError::BlobSizeMismatch {
            blob: path.to_owned(),
            expected: u64::try_from(e).unwrap_or(0),
            actual,
        }),
        _ => Ok(()),
    }
}

fn docker_plans(resolver: &Resolver<'_>) -> Result<Vec<ImagePlan>, ArchiveError> {
    let bytes = resolver.json("manifest.json", "archive")?;
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(bytes).map_err(json_err("manifest.json"))?;
    entries
        .into_iter()
        .map(|e| {
            Ok(ImagePlan {
                config_path: manifest_path(&e.config)?,
                layer_paths: e
                    .layers
                    .unwrap_or_default()
                    .iter()
                    .map(|p| manifest_path(p))
                    .collect::<Result<_, _>>()?,
                tags: e.repo_tags.unwrap_or_default(),
                by: format!("manifest.json (config {})", e.config),
                sizes: None,
            })
        })
        .collect()
}

fn blob_path(digest: &str, file: &str) -> Result<String, ArchiveError> {
    let d: Digest = digest
        .parse()
        .map_err(|_| ArchiveError::UnsupportedDigest {
            digest: digest.to_owned(),
            file: file.to_owned(),
        })?;
    Ok(format!("blobs/sha256/{}", d.hex()))
}

fn descriptor_tags(desc: &Descriptor) -> Vec<String> {
    let Some(ann) = &desc.annotations else {
        return Vec::new();
    };
    if let Some(name) = ann.get("io.containerd.image.name") {
        return vec![name.clone()];
    }
    match ann.get("org.opencontainers.image.ref.name") {
        // A bare tag (`latest`, `1.0`) names no repository.
        Some(name) if name.contains('/') || name.contains(':') => vec![name.clone()],
        _ => Vec::new(),
    }
}

/// `docker.io/library/busybox:1` -> `busybox:1`, `docker.io/user/app` -> `user/app`.
fn familiar(tag: &str) -> &str {
    tag.strip_prefix("docker.io/library/")
        .or_else(|| tag.strip_prefix("docker.io/"))
        .unwrap_or(tag)
}

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

const LAYER_TYPES: [&str; 8] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Turns one descriptor of an index into image plans: a manifest gives one, a nested index
/// recurses. Manifests absent from the archive (other platforms) and attestation manifests are
/// skipped; tags go to the image for this host's architecture, else the first one.
fn oci_plans(
    resolver: &Resolver<'_>,
    desc: &Descriptor,
    tags: Vec<String>,
    parent: &str,
    depth: usize,
    plans: &mut Vec<ImagePlan>,
) -> Result<(), ArchiveError> {
    if depth > MAX_INDEX_DEPTH {
        return Err(ArchiveError::Invalid {
            file: parent.to_owned(),
            why: "indexes nested too deep".to_owned(),
        });
    }
    let annotations = desc.annotations.as_ref();
    if annotations
        .and_then(|a| a.get("vnd.docker.reference.type"))
        .map(String::as_str)
        == Some("attestation-manifest")
    {
        return Ok(());
    }
    let path = blob_path(&desc.digest, parent)?;
    let Ok((resolved, blob, size)) = resolver.resolve(&path, parent) else {
        tracing::debug!(manifest = %path, "skipping manifest absent from the archive");
        return Ok(());
    };
    let Blob::Json(bytes) = blob else {
        return Err(ArchiveError::NotJson {
            path,
            by: parent.to_owned(),
        });
    };
    check_size(resolved, desc.size, size)?;
    let doc: OciDocument = serde_json::from_slice(bytes).map_err(json_err(resolved))?;
    let media_type = desc.media_type.as_deref().or(doc.media_type.as_deref());
    let is_index = media_type.is_some_and(|t| INDEX_TYPES.contains(&t))
        || (media_type.is_none() && doc.manifests.is_some());
    if is_index {
        let children = doc.manifests.unwrap_or_default();
        let host = host_architecture();
        let tagged = children.iter().position(|c| {
            c.platform.as_ref().and_then(|p| p.architecture.as_deref()) == Some(host)
        });
        let before = plans.len();
        let mut tags = Some(tags);
        for (i, child) in children.iter().enumerate() {
            let child_tags = if Some(i) == tagged {
                tags.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            let child_tags = if child_tags.is_empty() {
                descriptor_tags(child)
            } else {
                child_tags
            };
            oci_plans(resolver, child, child_tags, resolved, depth + 1, plans)?;
        }
        if let (Some(tags), Some(first)) = (tags, plans.get_mut(before)) {
            first.tags.extend(tags);
        }
        return Ok(());
    }
    let Some(config) = doc.config else {
        return Err(ArchiveError::Invalid {
            file: resolved.to_owned(),
            why: "manifest has no config".to_owned(),
        });
    };
    let config_type = config.media_type.as_deref().unwrap_or("");
    if !matches!(
        config_type,
        "" | "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json"
    ) {
        tracing::debug!(manifest = %resolved, config_type, "skipping non-image manifest");
        return Ok(());
    }
    let layers = doc.layers.unwrap_or_default();
    let mut layer_paths = Vec::with_capacity(layers.len());
    let mut sizes = Vec::with_capacity(layers.len());
    for layer in &layers {
        if let Some(t) = layer.media_type.as_deref()
            && !LAYER_TYPES.contains(&t)
        {
            return Err(ArchiveError::Invalid {
                file: resolved.to_owned(),
                why: format!("unsupported layer media type {t}"),
            });
        }
        layer_paths.push(blob_path(&layer.digest, resolved)?);
        sizes.push(layer.size);
    }
    plans.push(ImagePlan {
        config_path: blob_path(&config.digest, resolved)?,
        layer_paths,
        tags,
        by: format!("manifest {resolved}"),
        sizes: Some((config.size, sizes)),
    });
    Ok(())
}

// ---- Image config ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    config: Option<RawRunConfig>,
    #[serde(default)]
    rootfs: Option<RawRootfs>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRunConfig {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Words>,
    #[serde(default)]
    cmd: Option<Words>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, Option<String>>>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    stop_signal: Option<String>,
}

/// Docker accepts `"Cmd": "sh"` as well as `["sh"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Words {
    One(String),
    Many(Vec<String>),
}

impl Words {
    fn into_vec(self) -> Vec<String> {
        match self {
            Words::One(s) => vec![s],
            Words::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Option<Vec<String>>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn parse_config(json: &[u8]) -> Result<(ImageConfig, Vec<String>), serde_json::Error> {
    let raw: RawConfig = serde_json::from_slice(json)?;
    let run = raw.config;
    let diff_ids = raw.rootfs.and_then(|r| r.diff_ids).unwrap_or_default();
    let mut config = ImageConfig {
        os: non_empty(raw.os),
        architecture: non_empty(raw.architecture),
        variant: non_empty(raw.variant),
        created: non_empty(raw.created),
        author: non_empty(raw.author),
        ..ImageConfig::default()
    };
    if let Some(run) = run {
        config.env = run.env.unwrap_or_default();
        config.entrypoint = run.entrypoint.map(Words::into_vec);
        config.cmd = run.cmd.map(Words::into_vec);
        config.working_dir = non_empty(run.working_dir);
        config.user = non_empty(run.user);
        config.labels = run
            .labels
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect();
        config.exposed_ports = run.exposed_ports.unwrap_or_default().into_keys().collect();
        config.volumes = run.volumes.unwrap_or_default().into_keys().collect();
        config.stop_signal = non_empty(run.stop_signal);
    }
    Ok((config, diff_ids))
}
