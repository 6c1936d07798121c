//! Container mount specs, parsed and checked the way Docker does for `docker run -v` and
//! `docker run --mount` (docker CLI `opts/mount.go`, moby `volume/mounts/linux_parser.go`).
//!
//! This module is pure: it never touches the filesystem. The one question that needs it, "does
//! this bind source exist, and where does it really point?", is asked through the `resolve`
//! closure the caller hands to [`validate_set`].
//!
//! Where Strata does less than Docker (`SELinux` relabelling, bind propagation, volume drivers and
//! labels...) the spec is refused with an error naming the option, never silently ignored.
//!
//! # `-v SRC:DST[:MODE]` / `-v DST`
//! - Split on every `:`; more than three fields is an error (Docker: `strings.Count(raw, ":") > 2`).
//!   An empty first field (`:/data`) is an error.
//! - One field is an anonymous volume at that target. Two fields are `SRC:DST`, but `DST:MODE`
//!   (`/data:ro`, and `/data:` whose mode is empty) is refused as Docker does: a mode needs a source.
//! - A source starting with `/` is a bind mount (path cleaned); anything else must be a volume
//!   name. A source that looks like a relative path (`./x`, `x/y`, `..`, `~/x`) gets an error
//!   saying bind sources must be absolute rather than "invalid volume name".
//! - MODE is a comma list. `ro`/`rw` set read-only; two of them (`ro,rw`, `ro,ro`) conflict, as in
//!   Docker. `nocopy` is accepted for volumes and recorded in [`MountRequest::volume_nocopy`]; on a
//!   bind it is an error. `z`, `Z` and the six propagation modes are valid Docker words that Strata
//!   does not support: refused as unsupported. Any other word (including an empty one, `ro,`) is an
//!   invalid mode. An empty MODE (`/a:/b:`) means the default, read-write, as in Docker.
//!
//! # `--mount key=value,...`
//! - Fields are CSV (Go's `encoding/csv`, non-lazy): a field may be wrapped in `"..."` with `""`
//!   for a quote, so values can hold commas; a bare `"` inside an unquoted field is an error.
//!   Strata refuses line breaks outside quotes (Go would silently read only the first line).
//! - Keys are case-insensitive, as is the `type` value. A repeated key: the last one wins, as in
//!   Docker. An empty value (`src=`) is the same as leaving the key out.
//! - `type` = `bind` | `volume` (default) | `tmpfs`; Docker's `npipe`, `cluster` and `image` are
//!   unsupported, anything else unknown.
//! - `source`|`src`, `target`|`destination`|`dst`, `readonly`|`ro` (bare, or any value Go's
//!   `strconv.ParseBool` accepts: `1 t T TRUE true True 0 f F FALSE false False`),
//!   `volume-nocopy` (bare or bool, volumes only), `tmpfs-size` (bytes; optional `k m g t p`
//!   suffix, 1024-based, optional `i`/`b`, decimals allowed as in `go-units.RAMInBytes`; computed
//!   exactly instead of through a float), `tmpfs-mode` (octal digits only, at most `07777`: Docker
//!   passes larger values on and the kernel masks them off, Strata refuses them). Size or mode 0
//!   are kept as given: the kernel's tmpfs reads `size=0` as "no limit".
//! - `volume-*` options on a non-volume mount and `tmpfs-*` options on a non-tmpfs mount are
//!   refused ("cannot mix", as in the docker CLI).
//! - Docker keys Strata does not support (`bind-propagation`, `bind-recursive`,
//!   `bind-nonrecursive`, `bind-create-mountpoint`, `volume-driver`, `volume-label`, `volume-opt`,
//!   `volume-subpath`, `tmpfs-options`, `image-subpath`, `consistency`) are refused as
//!   unsupported; other keys as unknown. A known key that needs a value but has none is an error.
//! - A target is required. `type=bind` requires an absolute source; `type=volume` takes a volume
//!   name (no path) or nothing (anonymous); `type=tmpfs` takes no source.
//!
//! # Paths
//! Sources and targets are cleaned like Go's `path.Clean`: `//` collapsed, `.` dropped, `..`
//! resolved lexically, `..` above `/` stays at `/`. Targets must start with `/` and must not clean
//! to `/`.
//!
//! # The whole set ([`validate_set`])
//! - Two mounts on the same cleaned target are refused (`/data` and `/data/` collide).
//! - A bind source inside the store root is refused: it would expose other containers' layers.
//!   Paths are compared component-wise (`/var/lib/strata-other` is not inside `/var/lib/strata`),
//!   lexically and again after resolving symlinks, against the store root both as given and
//!   resolved. For a source that does not exist yet (a `-v` bind, which Docker creates), the
//!   longest existing prefix is resolved, since `mkdir -p` would follow its symlinks.
//! - A `--mount` bind source that does not exist is refused ("bind source path does not exist",
//!   as Docker's daemon says); a `-v` bind source may be missing, because Docker creates it.

use std::collections::HashSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// What a container mount is, after parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

impl fmt::Display for MountKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bind => "bind",
            Self::Volume => "volume",
            Self::Tmpfs => "tmpfs",
        })
    }
}

/// Which flag a mount was written with; the two differ on missing bind sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MountOrigin {
    /// `-v`: a missing bind source is created as a directory (Docker's behaviour).
    VolumeFlag,
    /// `--mount`: a missing bind source is an error.
    MountFlag,
}

/// A container mount as the user asked for it, checked and with cleaned paths.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountRequest {
    pub kind: MountKind,
    /// Bind: absolute host path (cleaned). Volume: volume name, or None for an anonymous volume.
    /// Tmpfs: None.
    pub source: Option<String>,
    /// Absolute container path, cleaned (no trailing slash, no `.`/`..` segments, not `/`).
    pub target: String,
    pub readonly: bool,
    /// `tmpfs-size`, in bytes; 0 means no limit (kernel tmpfs semantics).
    pub tmpfs_size: Option<u64>,
    /// `tmpfs-mode`, permission bits only (at most `0o7777`).
    pub tmpfs_mode: Option<u32>,
    /// Volumes only: do not copy the image's content at the target into an empty volume
    /// (`-v vol:/dst:nocopy`, `--mount volume-nocopy`).
    pub volume_nocopy: bool,
    pub origin: MountOrigin,
}

/// A mount spec, or a set of mounts, was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MountSpecError {
    #[error("invalid volume spec {spec:?}: too many colons (at most SRC:DST:MODE)")]
    TooManyColons { spec: String },
    #[error("invalid mount spec {spec:?}: {reason}")]
    InvalidSpec { spec: String, reason: &'static str },
    #[error("invalid mount spec {spec:?}: {reason}")]
    MalformedCsv { spec: String, reason: &'static str },
    #[error("conflicting modes {mode:?}: give at most one of ro, rw (and nocopy once)")]
    ConflictingModes { mode: String },
    #[error("unsupported mode {mode:?}: Strata supports only ro, rw and nocopy")]
    UnsupportedMode { mode: String },
    #[error("invalid mode {mode:?}")]
    InvalidMode { mode: String },
    #[error("target must be absolute: {target:?}")]
    TargetNotAbsolute { target: String },
    #[error("target cannot be /: {target:?}")]
    TargetIsRoot { target: String },
    #[error("missing target in mount spec {spec:?}")]
    MissingTarget { spec: String },
    #[error("bind source must be an absolute path: {path:?}")]
    BindSourceNotAbsolute { path: String },
    #[error("type=bind requires a source in mount spec {spec:?}")]
    BindSourceRequired { spec: String },
    #[error(
        "invalid volume name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-]+ is allowed; for a host \
         directory use an absolute path"
    )]
    InvalidVolumeName { name: String },
    #[error("a volume source must be a volume name, not a path: {path:?}")]
    VolumeSourceIsPath { path: String },
    #[error("a tmpfs mount cannot have a source: {path:?}")]
    TmpfsSource { path: String },
    #[error("option {option:?} cannot be used with a {kind} mount")]
    OptionNotForKind { option: String, kind: MountKind },
    #[error("field {field:?} must be a key=value pair")]
    MissingValue { field: String },
    #[error("unknown mount option {key:?}")]
    UnknownKey { key: String },
    #[error("unsupported mount option {key:?}")]
    UnsupportedOption { key: String },
    #[error("invalid value for {key}: {value:?}")]
    InvalidValue { key: &'static str, value: String },
    #[error("unknown mount type {value:?}: expected bind, volume or tmpfs")]
    UnknownType { value: String },
    #[error("unsupported mount type {value:?}: Strata supports bind, volume and tmpfs")]
    UnsupportedType { value: String },
    #[error("duplicate mount target {target:?}")]
    DuplicateTarget { target: String },
    #[error(
        "bind source {path:?} is inside the store root {} (as {}): it would expose other \
         containers' layers", .store_root.display(), .resolved.display()
    )]
    SourceInsideStore {
        path: String,
        store_root: PathBuf,
        resolved: PathBuf,
    },
    #[error("bind source path does not exist: {path:?}")]
    BindSourceNotFound { path: String },
}

/// Docker's volume name rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (so at least two characters), and
/// at most 255 bytes: the name becomes a directory under `volumes/`, and `NAME_MAX` is 255.
pub fn valid_volume_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && (2..=255).contains(&name.len())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Parses one `docker run -v` value: `DST` (anonymous volume), `SRC:DST` or `SRC:DST:MODE`.
pub fn parse_volume_flag(spec: &str) -> Result<MountRequest, MountSpecError> {
    let fields: Vec<&str> = spec.split(':').collect();
    let invalid = |reason| MountSpecError::InvalidSpec {
        spec: spec.to_owned(),
        reason,
    };
    if fields[0].is_empty() {
        return Err(invalid("the first field is empty"));
    }
    let (source, target, mode) = match fields[..] {
        [target] => (None, target, ""),
        // Docker refuses `DST:MODE`: with two fields the second is always the target.
        [_, second] if is_mode_list(second) => {
            return Err(invalid(
                "SRC:DST expected, got DST:MODE (a mode needs a source)",
            ));
        }
        [source, target] => (Some(source), target, ""),
        [source, target, mode] => (Some(source), target, mode),
        _ => {
            return Err(MountSpecError::TooManyColons {
                spec: spec.to_owned(),
            });
        }
    };
    let (readonly, nocopy) = parse_mode(mode)?;
    let target = clean_target(target)?;
    let (kind, source) = match source {
        None => (MountKind::Volume, None),
        Some(src) if src.starts_with('/') => (MountKind::Bind, Some(clean_path(src))),
        Some(src) if looks_like_path(src) => {
            return Err(MountSpecError::BindSourceNotAbsolute {
                path: src.to_owned(),
            });
        }
        Some(src) => (MountKind::Volume, Some(volume_name(src)?)),
    };
    if nocopy && kind != MountKind::Volume {
        return Err(MountSpecError::OptionNotForKind {
            option: "nocopy".to_owned(),
            kind,
        });
    }
    Ok(MountRequest {
        kind,
        source,
        target,
        readonly,
        tmpfs_size: None,
        tmpfs_mode: None,
        volume_nocopy: nocopy,
        origin: MountOrigin::VolumeFlag,
    })
}

/// Parses one `docker run --mount` value: `type=...,source=...,target=...,...`.
pub fn parse_mount_flag(spec: &str) -> Result<MountRequest, MountSpecError> {
    let mut kind = MountKind::Volume;
    let mut source = None;
    let mut target = None;
    let mut readonly = false;
    let mut volume_nocopy = false;
    let mut tmpfs_size = None;
    let mut tmpfs_mode = None;
    // The first option of each type-specific family, for the "cannot mix" check.
    let mut volume_option: Option<&'static str> = None;
    let mut tmpfs_option: Option<&'static str> = None;

    for field in split_csv(spec)? {
        if field.is_empty() {
            return Err(MountSpecError::InvalidSpec {
                spec: spec.to_owned(),
                reason: "empty field",
            });
        }
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key.to_ascii_lowercase(), Some(value)),
            None => (field.to_ascii_lowercase(), None),
        };
        let needs_value = || {
            value.ok_or_else(|| MountSpecError::MissingValue {
                field: field.clone(),
            })
        };
        match key.as_str() {
            "type" => kind = parse_type(needs_value()?)?,
            "source" | "src" => source = Some(needs_value()?.to_owned()),
            "target" | "destination" | "dst" => target = Some(needs_value()?.to_owned()),
            "readonly" | "ro" => readonly = parse_go_bool("readonly", value.unwrap_or("true"))?,
            "volume-nocopy" => {
                volume_nocopy = parse_go_bool("volume-nocopy", value.unwrap_or("true"))?;
                volume_option.get_or_insert("volume-nocopy");
            }
            "tmpfs-size" => {
                tmpfs_size = Some(parse_tmpfs_size(needs_value()?)?);
                tmpfs_option.get_or_insert("tmpfs-size");
            }
            "tmpfs-mode" => {
                tmpfs_mode = Some(parse_tmpfs_mode(needs_value()?)?);
                tmpfs_option.get_or_insert("tmpfs-mode");
            }
            "bind-propagation"
            | "bind-recursive"
            | "bind-nonrecursive"
            | "bind-create-mountpoint"
            | "volume-driver"
            | "volume-label"
            | "volume-opt"
            | "volume-subpath"
            | "tmpfs-options"
            | "image-subpath"
            | "consistency" => return Err(MountSpecError::UnsupportedOption { key }),
            _ => return Err(MountSpecError::UnknownKey { key }),
        }
    }

    for (option, family) in [
        (volume_option, MountKind::Volume),
        (tmpfs_option, MountKind::Tmpfs),
    ] {
        if let Some(option) = option.filter(|_| kind != family) {
            return Err(MountSpecError::OptionNotForKind {
                option: option.to_owned(),
                kind,
            });
        }
    }
    let target = match target.filter(|t| !t.is_empty()) {
        Some(target) => clean_target(&target)?,
        None => {
            return Err(MountSpecError::MissingTarget {
                spec: spec.to_owned(),
            });
        }
    };
    let source = mount_flag_source(kind, source, spec)?;
    Ok(MountRequest {
        kind,
        source,
        target,
        readonly,
        tmpfs_size,
        tmpfs_mode,
        volume_nocopy,
        origin: MountOrigin::MountFlag,
    })
}

/// The `source` of a `--mount` spec, checked against its type (an empty value counts as none).
fn mount_flag_source(
    kind: MountKind,
    source: Option<String>,
    spec: &str,
) -> Result<Option<String>, MountSpecError> {
    Ok(match (kind, source.filter(|s| !s.is_empty())) {
        (MountKind::Bind, None) => {
            return Err(MountSpecError::BindSourceRequired {
                spec: spec.to_owned(),
            });
        }
        (MountKind::Bind, Some(src)) if src.starts_with('/') => Some(clean_path(&src)),
        (MountKind::Bind, Some(src)) => {
            return Err(MountSpecError::BindSourceNotAbsolute { path: src });
        }
        (MountKind::Volume, Some(src)) if src.starts_with('/') || looks_like_path(&src) => {
            return Err(MountSpecError::VolumeSourceIsPath { path: src });
        }
        (MountKind::Volume, Some(src)) => Some(volume_name(&src)?),
        (MountKind::Tmpfs, Some(src)) => return Err(MountSpecError::TmpfsSource { path: src }),
        (MountKind::Volume | MountKind::Tmpfs, None) => None,
    })
}

/// Checks a container's mounts together: no two on the same target, no bind source inside the
/// store root, and every `--mount` bind source exists.
///
/// `resolve` returns the canonical (symlink-free) path of a host path that exists, `None`
/// otherwise; it is asked about bind sources, their ancestors and `store_root`.
pub fn validate_set(
    mounts: &[MountRequest],
    store_root: &Path,
    resolve: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<(), MountSpecError> {
    let mut targets = HashSet::new();
    for mount in mounts {
        // Re-cleaned: the fields are public, so a request may not come from our parsers.
        let target = clean_path(&mount.target);
        if !targets.insert(target.clone()) {
            return Err(MountSpecError::DuplicateTarget { target });
        }
    }

    let mut roots = vec![lexical_clean(store_root)];
    if let Some(real) = store_root.to_str().and_then(resolve) {
        roots.push(lexical_clean(&real));
    }
    let inside_store = |candidate: &Path| roots.iter().any(|root| candidate.starts_with(root));

    for mount in mounts {
        let (MountKind::Bind, Some(source)) = (mount.kind, &mount.source) else {
            continue;
        };
        if !source.starts_with('/') {
            return Err(MountSpecError::BindSourceNotAbsolute {
                path: source.clone(),
            });
        }
        let source = clean_path(source);
        let refuse = |resolved: PathBuf| MountSpecError::SourceInsideStore {
            path: source.clone(),
            store_root: store_root.to_path_buf(),
            resolved,
        };
        let lexical = PathBuf::from(&source);
        if inside_store(&lexical) {
            return Err(refuse(lexical));
        }
        match resolve_existing_prefix(&source, resolve) {
            Some((_, false)) | None if mount.origin == MountOrigin::MountFlag => {
                return Err(MountSpecError::BindSourceNotFound { path: source });
            }
            Some((resolved, _)) if inside_store(&resolved) => return Err(refuse(resolved)),
            _ => {}
        }
    }
    Ok(())
}

/// Resolves the longest existing prefix of the absolute, cleaned `path` and appends the rest.
/// The flag says whether the whole path exists.
fn resolve_existing_prefix(
    path: &str,
    resolve: &dyn Fn(&str) -> Option<PathBuf>,
) -> Option<(PathBuf, bool)> {
    let mut prefix = path;
    let mut missing = Vec::new();
    loop {
        if let Some(mut real) = resolve(prefix) {
            let whole = missing.is_empty();
            real.extend(missing.iter().rev());
            return Some((lexical_clean(&real), whole));
        }
        let (parent, name) = prefix.rsplit_once('/')?;
        if name.is_empty() {
            return None; // `prefix` was `/` and even that did not resolve.
        }
        missing.push(name);
        prefix = if parent.is_empty() { "/" } else { parent };
    }
}

/// Go's `path.Clean` on a `/`-separated string.
fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." if parts.last().is_some_and(|last| *last != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            segment => parts.push(segment),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// [`clean_path`] for a `Path` that may not be UTF-8 (the store root, resolved paths).
fn lexical_clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn clean_target(raw: &str) -> Result<String, MountSpecError> {
    if !raw.starts_with('/') {
        return Err(MountSpecError::TargetNotAbsolute {
            target: raw.to_owned(),
        });
    }
    let target = clean_path(raw);
    if target == "/" {
        return Err(MountSpecError::TargetIsRoot {
            target: raw.to_owned(),
        });
    }
    Ok(target)
}

/// A relative source that was meant as a host path, not a volume name.
fn looks_like_path(source: &str) -> bool {
    source.contains('/') || source == "." || source == ".." || source.starts_with('~')
}

fn volume_name(name: &str) -> Result<String, MountSpecError> {
    if valid_volume_name(name) {
        Ok(name.to_owned())
    } else {
        Err(MountSpecError::InvalidVolumeName {
            name: name.to_owned(),
        })
    }
}

const MODE_WORDS: [&str; 11] = [
    "ro", "rw", "z", "Z", "nocopy", "shared", "slave", "private", "rshared", "rslave", "rprivate",
];

/// Docker's test for "is this field a mode list": the empty string counts.
fn is_mode_list(field: &str) -> bool {
    field.is_empty() || field.split(',').all(|word| MODE_WORDS.contains(&word))
}

/// Returns (readonly, nocopy) for a `-v` MODE.
fn parse_mode(mode: &str) -> Result<(bool, bool), MountSpecError> {
    let mut readonly = None;
    let mut nocopy = false;
    if mode.is_empty() {
        return Ok((false, false));
    }
    for word in mode.split(',') {
        let conflict = || MountSpecError::ConflictingModes {
            mode: mode.to_owned(),
        };
        match word {
            "ro" | "rw" if readonly.is_some() => return Err(conflict()),
            "ro" | "rw" => readonly = Some(word == "ro"),
            "nocopy" if nocopy => return Err(conflict()),
            "nocopy" => nocopy = true,
            word if MODE_WORDS.contains(&word) => {
                return Err(MountSpecError::UnsupportedMode {
                    mode: word.to_owned(),
                });
            }
            word => {
                return Err(MountSpecError::InvalidMode {
                    mode: word.to_owned(),
                });
            }
        }
    }
    Ok((readonly.unwrap_or(false), nocopy))
}

fn parse_type(value: &str) -> Result<MountKind, MountSpecError> {
    match value.to_ascii_lowercase().as_str() {
        "bind" => Ok(MountKind::Bind),
        "volume" => Ok(MountKind::Volume),
        "tmpfs" => Ok(MountKind::Tmpfs),
        "npipe" | "cluster" | "image" => Err(MountSpecError::UnsupportedType {
            value: value.to_owned(),
        }),
        _ => Err(MountSpecError::UnknownType {
            value: value.to_owned(),
        }),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(key: &'static str, value: &str) -> Result<bool, MountSpecError> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(MountSpecError::InvalidValue {
            key,
            value: value.to_owned(),
        }),
    }
}

/// `go-units.RAMInBytes`: `^(\d+(\.\d+)?) ?([kmgtp])?i?b?$`, case-insensitive, 1024-based.
fn parse_tmpfs_size(value: &str) -> Result<u64, MountSpecError> {
    let invalid = || MountSpecError::InvalidValue {
        key: "tmpfs-size",
        value: value.to_owned(),
    };
    let number_end = value
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (number.contains('.') && !digits(fraction)) {
        return Err(invalid());
    }
    let suffix = suffix
        .strip_prefix(' ')
        .unwrap_or(suffix)
        .to_ascii_lowercase();
    let unit = suffix.strip_suffix('b').unwrap_or(&suffix);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(invalid()),
    };
    let multiplier = 1u128 << shift;
    let whole: u128 = whole.parse().map_err(|_| invalid())?;
    // Digits past the 23rd are dropped: together they are worth less than 2^50 / 10^23 of a
    // byte, and 23 digits times the largest unit (2^50) still fit in u128 (30 overflowed it).
    let fraction = &fraction[..fraction.len().min(23)];
    let fraction_bytes = if fraction.is_empty() {
        0
    } else {
        let numerator: u128 = fraction.parse().map_err(|_| invalid())?;
        let scale = u32::try_from(fraction.len()).map_err(|_| invalid())?;
        numerator * multiplier / 10u128.pow(scale)
    };
    whole
        .checked_mul(multiplier)
        .and_then(|bytes| bytes.checked_add(fraction_bytes))
        .and_then(|bytes| u64::try_from(bytes).ok())
        .ok_or_else(invalid)
}

/// Octal digits only (Go's `strconv.ParseUint(v, 8, 32)` takes no sign or `0o` prefix), and
/// only permission bits.
fn parse_tmpfs_mode(value: &str) -> Result<u32, MountSpecError> {
    let invalid = || MountSpecError::InvalidValue {
        key: "tmpfs-mode",
        value: value.to_owned(),
    };
    if value.is_empty() || !value.bytes().all(|b| matches!(b, b'0'..=b'7')) {
        return Err(invalid());
    }
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(invalid)
}

/// One CSV record as Go's `encoding/csv` reads it (comma-separated, `"` quoting, `""` escapes).
fn split_csv(spec: &str) -> Result<Vec<String>, MountSpecError> {
    let malformed = |reason| MountSpecError::MalformedCsv {
        spec: spec.to_owned(),
        reason,
    };
    let mut fields = Vec::new();
    let mut chars = spec.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    None => return Err(malformed("unterminated quoted field")),
                    Some('"') if chars.next_if_eq(&'"').is_some() => field.push('"'),
                    Some('"') if matches!(chars.peek(), None | Some(',')) => break,
                    Some('"') => return Err(malformed("extraneous \" after a quoted field")),
                    Some(c) => field.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                match c {
                    '"' => return Err(malformed("bare \" in an unquoted field")),
                    '\n' | '\r' => return Err(malformed("line break outside quotes")),
                    c => field.push(c),
                }
            }
        }
        fields.push(field);
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn bind(source: &str, target: &str) -> MountRequest {
        MountRequest {
            kind: MountKind::Bind,
            source: Some(source.to_owned()),
            target: target.to_owned(),
            readonly: false,
            tmpfs_size: None,
            tmpfs_mode: None,
            volume_nocopy: false,
            origin: MountOrigin::VolumeFlag,
        }
    }

    fn volume(name: Option<&str>, target: &str) -> MountRequest {
        MountRequest {
            kind: MountKind::Volume,
            source: name.map(str::to_owned),
            ..bind("", target)
        }
    }

    fn tmpfs(target: &str) -> MountRequest {
        MountRequest {
            kind: MountKind::Tmpfs,
            source: None,
            origin: MountOrigin::MountFlag,
            ..bind("", target)
        }
    }

    fn ro(mount: MountRequest) -> MountRequest {
        MountRequest {
            readonly: true,
            ..mount
        }
    }

    fn nocopy(mount: MountRequest) -> MountRequest {
        MountRequest {
            volume_nocopy: true,
            ..mount
        }
    }

    fn by_mount(mount: MountRequest) -> MountRequest {
        MountRequest {
            origin: MountOrigin::MountFlag,
            ..mount
        }
    }

    fn sized(mount: MountRequest, size: Option<u64>, mode: Option<u32>) -> MountRequest {
        MountRequest {
            tmpfs_size: size,
            tmpfs_mode: mode,
            ..mount
        }
    }

    fn s(text: &str) -> String {
        text.to_owned()
    }

    /// Each row: the spec, the exact error, and a value its message must name.
    fn assert_errors(
        parse: fn(&str) -> Result<MountRequest, MountSpecError>,
        rows: &[(&str, MountSpecError, &str)],
    ) {
        for (spec, want, named) in rows {
            let got = parse(spec).expect_err(&format!("{spec:?} should be refused"));
            assert_eq!(&got, want, "spec {spec:?}");
            let message = got.to_string();
            assert!(
                message.contains(named),
                "spec {spec:?}: message {message:?} does not name {named:?}"
            );
        }
    }

    #[test]
    fn volume_flag_accepts_docker_forms() {
        let rows = [
            ("/data", volume(None, "/data")),
            ("/data/", volume(None, "/data")),
            ("myvol:/data", volume(Some("myvol"), "/data")),
            (
                "my_vol.1-x:/data:ro",
                ro(volume(Some("my_vol.1-x"), "/data")),
            ),
            ("vol:/data:nocopy", nocopy(volume(Some("vol"), "/data"))),
            (
                "vol:/data:ro,nocopy",
                ro(nocopy(volume(Some("vol"), "/data"))),
            ),
            ("/host//a/./b/../c:/data:rw", bind("/host/a/c", "/data")),
            ("/host:/data:ro", ro(bind("/host", "/data"))),
            ("/host:/data:", bind("/host", "/data")),
            ("/:/host:ro", ro(bind("/", "/host"))),
            ("/rw:/ro", bind("/rw", "/ro")),
            ("/a/../../b:/x/../../y", bind("/b", "/y")),
            (
                "/with space:/with space",
                bind("/with space", "/with space"),
            ),
        ];
        for (spec, want) in rows {
            assert_eq!(parse_volume_flag(spec), Ok(want), "spec {spec:?}");
        }
    }

    #[test]
    #[expect(
        clippy::too_many_lines,
        reason = "one row per case: the table is the test"
    )]
    fn volume_flag_refuses_with_named_errors() {
        use MountSpecError as E;
        let invalid = |spec: &str, reason| E::InvalidSpec {
            spec: s(spec),
            reason,
        };
        let rows = [
            (
                "/a:/b:ro:x",
                E::TooManyColons {
                    spec: s("/a:/b:ro:x"),
                },
                "/a:/b:ro:x",
            ),
            (
                "/a:/b:ro:",
                E::TooManyColons {
                    spec: s("/a:/b:ro:"),
                },
                "/a:/b:ro:",
            ),
            (
                ":/data",
                invalid(":/data", "the first field is empty"),
                ":/data",
            ),
            (
                "/data:ro",
                invalid(
                    "/data:ro",
                    "SRC:DST expected, got DST:MODE (a mode needs a source)",
                ),
                "/data:ro",
            ),
            (
                "/data:",
                invalid(
                    "/data:",
                    "SRC:DST expected, got DST:MODE (a mode needs a source)",
                ),
                "/data:",
            ),
            (
                "v1:/d:ro,rw",
                E::ConflictingModes { mode: s("ro,rw") },
                "ro,rw",
            ),
            (
                "v1:/d:ro,ro",
                E::ConflictingModes { mode: s("ro,ro") },
                "ro,ro",
            ),
            (
                "v1:/d:nocopy,nocopy",
                E::ConflictingModes {
                    mode: s("nocopy,nocopy"),
                },
                "nocopy,nocopy",
            ),
            ("/h:/d:Z", E::UnsupportedMode { mode: s("Z") }, "\"Z\""),
            ("/h:/d:ro,z", E::UnsupportedMode { mode: s("z") }, "\"z\""),
            (
                "/h:/d:rshared",
                E::UnsupportedMode { mode: s("rshared") },
                "rshared",
            ),
            (
                "/h:/d:private",
                E::UnsupportedMode { mode: s("private") },
                "private",
            ),
            ("/h:/d:bogus", E::InvalidMode { mode: s("bogus") }, "bogus"),
            ("/h:/d:RO", E::InvalidMode { mode: s("RO") }, "RO"),
            ("/h:/d:ro,", E::InvalidMode { mode: s("") }, "\"\""),
            (
                "/h:/d:nocopy",
                E::OptionNotForKind {
                    option: s("nocopy"),
                    kind: MountKind::Bind,
                },
                "nocopy",
            ),
            ("data", E::TargetNotAbsolute { target: s("data") }, "data"),
            (
                "vol:data",
                E::TargetNotAbsolute { target: s("data") },
                "data",
            ),
            ("/h:/", E::TargetIsRoot { target: s("/") }, "/"),
            ("/h:/a/..", E::TargetIsRoot { target: s("/a/..") }, "/a/.."),
            ("/..", E::TargetIsRoot { target: s("/..") }, "/.."),
            ("./x:/d", E::BindSourceNotAbsolute { path: s("./x") }, "./x"),
            ("x/y:/d", E::BindSourceNotAbsolute { path: s("x/y") }, "x/y"),
            ("..:/d", E::BindSourceNotAbsolute { path: s("..") }, ".."),
            ("~/x:/d", E::BindSourceNotAbsolute { path: s("~/x") }, "~/x"),
            ("a:/d", E::InvalidVolumeName { name: s("a") }, "\"a\""),
            ("_vol:/d", E::InvalidVolumeName { name: s("_vol") }, "_vol"),
            (
                "vol@1:/d",
                E::InvalidVolumeName { name: s("vol@1") },
                "vol@1",
            ),
            ("völ:/d", E::InvalidVolumeName { name: s("völ") }, "völ"),
        ];
        assert_errors(parse_volume_flag, &rows);
    }

    #[test]
    fn mount_flag_accepts_docker_forms() {
        let rows = [
            (
                "type=bind,source=/h,target=/data",
                by_mount(bind("/h", "/data")),
            ),
            (
                "type=bind,src=/h/,dst=/data/,readonly",
                by_mount(ro(bind("/h", "/data"))),
            ),
            (
                "type=bind,src=/h,destination=/d,ro=false",
                by_mount(bind("/h", "/d")),
            ),
            (
                "type=bind,src=/h,target=/d,ro=1",
                by_mount(ro(bind("/h", "/d"))),
            ),
            (
                "TYPE=BIND,Source=/h,Target=/d,RO=True",
                by_mount(ro(bind("/h", "/d"))),
            ),
            (
                "type=bind,source=/h,target=/d,ro,ro=false",
                by_mount(bind("/h", "/d")),
            ),
            ("target=/data", by_mount(volume(None, "/data"))),
            (
                "type=volume,src=,target=/data",
                by_mount(volume(None, "/data")),
            ),
            (
                "type=volume,source=myvol,target=/data,volume-nocopy",
                by_mount(nocopy(volume(Some("myvol"), "/data"))),
            ),
            (
                "type=volume,src=myvol,target=/data,volume-nocopy=false",
                by_mount(volume(Some("myvol"), "/data")),
            ),
            (
                "type=tmpfs,target=/run,tmpfs-size=64m,tmpfs-mode=1770",
                sized(tmpfs("/run"), Some(64 << 20), Some(0o1770)),
            ),
            (
                "type=tmpfs,dst=/t,tmpfs-size=1.5k,tmpfs-mode=0755",
                sized(tmpfs("/t"), Some(1536), Some(0o755)),
            ),
            (
                "type=tmpfs,dst=/t,tmpfs-size=100",
                sized(tmpfs("/t"), Some(100), None),
            ),
            (
                "type=tmpfs,dst=/t,tmpfs-size=100b",
                sized(tmpfs("/t"), Some(100), None),
            ),
            (
                "type=tmpfs,dst=/t,tmpfs-size=1kb",
                sized(tmpfs("/t"), Some(1024), None),
            ),
            (
                "type=tmpfs,dst=/t,tmpfs-size=2 GiB",
                sized(tmpfs("/t"), Some(2 << 30), None),
            ),
            (
                "type=tmpfs,dst=/t,tmpfs-size=0",
                sized(tmpfs("/t"), Some(0), None),
            ),
            ("type=tmpfs,dst=/t,readonly", ro(tmpfs("/t"))),
            (
                "\"type=bind\",\"source=/h,with,commas\",target=/d",
                by_mount(bind("/h,with,commas", "/d")),
            ),
            (
                "type=bind,\"source=/h \"\"q\"\"\",target=/d",
                by_mount(bind("/h \"q\"", "/d")),
            ),
        ];
        for (spec, want) in rows {
            assert_eq!(parse_mount_flag(spec), Ok(want), "spec {spec:?}");
        }
    }

    /// A fraction of 30 digits times a petabyte overflowed u128: a panic in debug builds, a
    /// wrong size in release ones. Seen while writing the `mount_spec` fuzz target, whose
    /// corpus keeps the reproducer.
    #[test]
    fn tmpfs_size_with_a_long_fraction_of_a_large_unit_is_exact_to_the_byte() {
        let nines = "9".repeat(30);
        let rows = [
            (format!("0.{nines}p"), (1u64 << 50) - 1),
            (format!("16383.{nines}p"), u64::MAX),
            (format!("1.{nines}k"), 2047),
        ];
        for (size, bytes) in rows {
            let spec = format!("type=tmpfs,dst=/t,tmpfs-size={size}");
            assert_eq!(
                parse_mount_flag(&spec),
                Ok(sized(tmpfs("/t"), Some(bytes), None)),
                "spec {spec:?}"
            );
        }
    }

    #[test]
    #[expect(
        clippy::too_many_lines,
        reason = "one row per case: the table is the test"
    )]
    fn mount_flag_refuses_with_named_errors() {
        use MountSpecError as E;
        let csv = |spec: &str, reason| E::MalformedCsv {
            spec: s(spec),
            reason,
        };
        let size = |value: &str| E::InvalidValue {
            key: "tmpfs-size",
            value: s(value),
        };
        let mode = |value: &str| E::InvalidValue {
            key: "tmpfs-mode",
            value: s(value),
        };
        let rows = [
            (
                "type=bind,target=/d",
                E::BindSourceRequired {
                    spec: s("type=bind,target=/d"),
                },
                "type=bind,target=/d",
            ),
            (
                "type=bind,source=,target=/d",
                E::BindSourceRequired {
                    spec: s("type=bind,source=,target=/d"),
                },
                "source=",
            ),
            (
                "type=bind,source=h,target=/d",
                E::BindSourceNotAbsolute { path: s("h") },
                "\"h\"",
            ),
            (
                "type=bind,source=/h",
                E::MissingTarget {
                    spec: s("type=bind,source=/h"),
                },
                "type=bind,source=/h",
            ),
            (
                "type=bind,source=/h,target=",
                E::MissingTarget {
                    spec: s("type=bind,source=/h,target="),
                },
                "target=",
            ),
            (
                "type=bind,source=/h,target=d",
                E::TargetNotAbsolute { target: s("d") },
                "\"d\"",
            ),
            (
                "type=bind,source=/h,target=/",
                E::TargetIsRoot { target: s("/") },
                "/",
            ),
            (
                "type=bind,source=/h,target=//.",
                E::TargetIsRoot { target: s("//.") },
                "//.",
            ),
            (
                "type=tmpfs,source=/h,target=/d",
                E::TmpfsSource { path: s("/h") },
                "/h",
            ),
            (
                "type=volume,source=/h,target=/d",
                E::VolumeSourceIsPath { path: s("/h") },
                "/h",
            ),
            (
                "type=volume,source=a/b,target=/d",
                E::VolumeSourceIsPath { path: s("a/b") },
                "a/b",
            ),
            (
                "type=volume,source=v,target=/d",
                E::InvalidVolumeName { name: s("v") },
                "\"v\"",
            ),
            (
                "type=nfs,target=/d",
                E::UnknownType { value: s("nfs") },
                "nfs",
            ),
            (
                "type=npipe,target=/d",
                E::UnsupportedType { value: s("npipe") },
                "npipe",
            ),
            (
                "type=bind,source=/h,target=/d,bind-propagation=rshared",
                E::UnsupportedOption {
                    key: s("bind-propagation"),
                },
                "bind-propagation",
            ),
            (
                "type=volume,target=/d,volume-label=a=b",
                E::UnsupportedOption {
                    key: s("volume-label"),
                },
                "volume-label",
            ),
            (
                "type=volume,target=/d,volume-driver=nfs",
                E::UnsupportedOption {
                    key: s("volume-driver"),
                },
                "volume-driver",
            ),
            (
                "type=bind,source=/h,target=/d,colour=red",
                E::UnknownKey { key: s("colour") },
                "colour",
            ),
            (
                "type=bind,source=/h,target=/d,bogus",
                E::UnknownKey { key: s("bogus") },
                "bogus",
            ),
            (
                "type=bind,source=/h,target=/d,readonly=maybe",
                E::InvalidValue {
                    key: "readonly",
                    value: s("maybe"),
                },
                "maybe",
            ),
            (
                "type=volume,target=/d,volume-nocopy=yes",
                E::InvalidValue {
                    key: "volume-nocopy",
                    value: s("yes"),
                },
                "volume-nocopy",
            ),
            (
                "type=bind,source=/h,target",
                E::MissingValue { field: s("target") },
                "target",
            ),
            (
                "TYPE,target=/d",
                E::MissingValue { field: s("TYPE") },
                "TYPE",
            ),
            (
                "type=bind,source=/h,target=/d,volume-nocopy",
                E::OptionNotForKind {
                    option: s("volume-nocopy"),
                    kind: MountKind::Bind,
                },
                "volume-nocopy",
            ),
            (
                "type=volume,target=/d,tmpfs-size=1m",
                E::OptionNotForKind {
                    option: s("tmpfs-size"),
                    kind: MountKind::Volume,
                },
                "tmpfs-size",
            ),
            ("type=tmpfs,target=/d,tmpfs-size=1x", size("1x"), "1x"),
            ("type=tmpfs,target=/d,tmpfs-size=-1", size("-1"), "-1"),
            (
                "type=tmpfs,target=/d,tmpfs-size=1.2.3m",
                size("1.2.3m"),
                "1.2.3m",
            ),
            ("type=tmpfs,target=/d,tmpfs-size=.5m", size(".5m"), ".5m"),
            ("type=tmpfs,target=/d,tmpfs-size=1.m", size("1.m"), "1.m"),
            ("type=tmpfs,target=/d,tmpfs-size=m", size("m"), "\"m\""),
            (
                "type=tmpfs,target=/d,tmpfs-size=16384p",
                size("16384p"),
                "16384p",
            ),
            (
                "type=tmpfs,target=/d,tmpfs-size=99999999999999999999",
                size("99999999999999999999"),
                "99999999999999999999",
            ),
            (
                "type=tmpfs,target=/d,tmpfs-mode=0o755",
                mode("0o755"),
                "0o755",
            ),
            ("type=tmpfs,target=/d,tmpfs-mode=789", mode("789"), "789"),
            ("type=tmpfs,target=/d,tmpfs-mode=+755", mode("+755"), "+755"),
            (
                "type=tmpfs,target=/d,tmpfs-mode=17777",
                mode("17777"),
                "17777",
            ),
            (
                "type=bind,source=\"/h\",target=/d",
                csv(
                    "type=bind,source=\"/h\",target=/d",
                    "bare \" in an unquoted field",
                ),
                "source=",
            ),
            (
                "\"type=bind,target=/d",
                csv("\"type=bind,target=/d", "unterminated quoted field"),
                "type=bind",
            ),
            (
                "\"type=bind\"x,target=/d",
                csv(
                    "\"type=bind\"x,target=/d",
                    "extraneous \" after a quoted field",
                ),
                "type=bind",
            ),
            (
                "type=bind,source=/h,target=/d\nro",
                csv(
                    "type=bind,source=/h,target=/d\nro",
                    "line break outside quotes",
                ),
                "target=/d",
            ),
            (
                "type=bind,,target=/d",
                E::InvalidSpec {
                    spec: s("type=bind,,target=/d"),
                    reason: "empty field",
                },
                "type=bind,,target=/d",
            ),
            (
                "",
                E::InvalidSpec {
                    spec: s(""),
                    reason: "empty field",
                },
                "empty field",
            ),
        ];
        assert_errors(parse_mount_flag, &rows);
    }

    #[test]
    fn clean_path_matches_go_path_clean() {
        let rows = [
            ("", "."),
            ("/", "/"),
            ("//a//b/", "/a/b"),
            ("/a/./b/.", "/a/b"),
            ("/a/b/../c", "/a/c"),
            ("/../../a", "/a"),
            ("a/../../b", "../b"),
            ("./", "."),
            ("../..", "../.."),
        ];
        for (raw, want) in rows {
            assert_eq!(clean_path(raw), want, "clean {raw:?}");
        }
    }

    #[test]
    fn volume_names_follow_docker_regex() {
        for good in ["ab", "a1", "9_x.y-z", "A-"] {
            assert!(valid_volume_name(good), "{good:?}");
        }
        for bad in ["", "a", "-a", ".a", "_a", "a b", "a/b", "a:b", "é1"] {
            assert!(!valid_volume_name(bad), "{bad:?}");
        }
        assert!(valid_volume_name(&"v".repeat(255)));
        assert!(!valid_volume_name(&"v".repeat(256)));
    }

    const ROOT: &str = "/var/lib/strata";

    /// A pretend filesystem: existing paths mapped to their canonical form.
    fn fake_fs(entries: &[(&str, &str)]) -> impl Fn(&str) -> Option<PathBuf> {
        let map: HashMap<String, PathBuf> = entries
            .iter()
            .map(|(path, real)| (s(path), PathBuf::from(real)))
            .collect();
        move |path| map.get(path).cloned()
    }

    fn v(spec: &str) -> MountRequest {
        parse_volume_flag(spec).expect("valid -v spec")
    }

    fn m(spec: &str) -> MountRequest {
        parse_mount_flag(spec).expect("valid --mount spec")
    }

    fn inside(path: &str, resolved: &str) -> MountSpecError {
        MountSpecError::SourceInsideStore {
            path: s(path),
            store_root: PathBuf::from(ROOT),
            resolved: PathBuf::from(resolved),
        }
    }

    #[test]
    fn set_refuses_duplicate_targets_after_cleaning() {
        let fs = fake_fs(&[]);
        let mounts = [v("v1:/data"), m("type=volume,src=v2,dst=/data/")];
        let err = validate_set(&mounts, Path::new(ROOT), &fs).expect_err("duplicate");
        assert_eq!(err, MountSpecError::DuplicateTarget { target: s("/data") });
        assert!(err.to_string().contains("\"/data\""), "{err}");
    }

    #[test]
    fn set_allows_nested_targets_and_sources_beside_the_store() {
        let fs = fake_fs(&[
            ("/var/lib/strata-other", "/var/lib/strata-other"),
            ("/srv", "/srv"),
        ]);
        let mounts = [
            v("v1:/data"),
            v("/srv:/data/sub"),
            m("type=bind,src=/var/lib/strata-other,dst=/other"),
            v("/var/lib/strata-other/missing:/other2"),
            v("/:/host:ro"),
        ];
        assert_eq!(validate_set(&mounts, Path::new(ROOT), &fs), Ok(()));
    }

    #[test]
    fn set_refuses_bind_sources_inside_the_store_root() {
        let fs = fake_fs(&[
            ("/srv/link", "/var/lib/strata/overlay2"),
            ("/srv/dirlink", "/var/lib/strata"),
            ("/var/lib/strata", "/var/lib/strata"),
            ("/var/lib/strata/overlay2/x", "/var/lib/strata/overlay2/x"),
        ]);
        let root = Path::new(ROOT);
        let rows = [
            (
                v("/var/lib/strata/overlay2/x:/x"),
                inside("/var/lib/strata/overlay2/x", "/var/lib/strata/overlay2/x"),
            ),
            (
                m("type=bind,src=/var/lib/strata,dst=/x"),
                inside("/var/lib/strata", "/var/lib/strata"),
            ),
            (
                v("/var/lib/other/../strata/volumes:/x"),
                inside("/var/lib/strata/volumes", "/var/lib/strata/volumes"),
            ),
            // Built by hand, not cleaned: validate_set cleans again.
            (
                bind("/var/lib/x/../strata/tmp", "/x"),
                inside("/var/lib/strata/tmp", "/var/lib/strata/tmp"),
            ),
            (
                m("type=bind,src=/srv/link,dst=/x"),
                inside("/srv/link", "/var/lib/strata/overlay2"),
            ),
            // Missing under a symlink: `-v` would mkdir -p through it, into the store.
            (
                v("/srv/dirlink/new/dir:/x"),
                inside("/srv/dirlink/new/dir", "/var/lib/strata/new/dir"),
            ),
        ];
        for (mount, want) in rows {
            let err = validate_set(std::slice::from_ref(&mount), root, &fs)
                .expect_err(&format!("{mount:?} should be refused"));
            assert_eq!(err, want);
            let source = mount.source.as_deref().unwrap_or_default();
            let message = err.to_string();
            assert!(message.contains(ROOT), "{message}");
            assert!(
                message.contains(&clean_path(source)),
                "{message} names {source}"
            );
        }
    }

    #[test]
    fn set_compares_against_the_resolved_store_root() {
        let fs = fake_fs(&[
            (ROOT, "/data/strata"),
            ("/data/strata/volumes", "/data/strata/volumes"),
        ]);
        let mounts = [v("/data/strata/volumes:/x")];
        let err = validate_set(&mounts, Path::new(ROOT), &fs).expect_err("inside via root link");
        assert_eq!(err, inside("/data/strata/volumes", "/data/strata/volumes"));
    }

    #[test]
    fn set_requires_mount_flag_bind_sources_to_exist() {
        let fs = fake_fs(&[("/", "/"), ("/srv", "/srv")]);
        let root = Path::new(ROOT);
        let err = validate_set(&[m("type=bind,src=/srv/missing,dst=/x")], root, &fs)
            .expect_err("--mount bind source must exist");
        assert_eq!(
            err,
            MountSpecError::BindSourceNotFound {
                path: s("/srv/missing")
            }
        );
        assert!(err.to_string().contains("/srv/missing"), "{err}");
        // `-v` creates a missing bind source, as Docker does.
        assert_eq!(validate_set(&[v("/srv/missing:/x")], root, &fs), Ok(()));
        assert_eq!(
            validate_set(&[v("/nowhere/at/all:/x")], root, &fake_fs(&[])),
            Ok(())
        );
    }
}
