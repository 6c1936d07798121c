//! Mounts are data: drivers describe them as [`MountSpec`], pure functions turn a spec into
//! mount options (table-tested without root), and [`mount`] is the only place that mounts.
//!
//! overlayfs takes at most 500 lower layers (`OVL_MAX_STACK`). The classic mount(2) takes its
//! options in one page, which absolute lowerdir paths outgrow at about 40 layers; Docker's trick
//! is relative `l/<26 chars>` short links from the driver home, which fits Docker's 128-layer
//! limit. Kernels >= 6.8 accept `lowerdir+` one layer per `fsconfig(2)` call, with no page limit
//! (Documentation/filesystems/overlayfs.rst, "Multiple lower layers"). We try that first, and
//! fall back to the classic call with relative paths when the kernel does not know `lowerdir+`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use crate::sys::mount as sys;

/// overlayfs' stacking limit (`OVL_MAX_STACK` in fs/overlayfs/params.h).
pub const MAX_LOWER_LAYERS: usize = 500;

/// The classic mount(2) copies at most one page of options.
const PAGE_SIZE: usize = 4096;

/// A container's writable directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpperDirs {
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// A mount, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// overlayfs: `lower` lists layers top-most first, as overlay's `lowerdir` does, each
    /// relative to `base`. Without `upper` the mount is read-only.
    Overlay {
        base: PathBuf,
        lower: Vec<PathBuf>,
        upper: Option<UpperDirs>,
    },
    /// A bind mount (vfs layers, volumes).
    Bind { source: PathBuf, readonly: bool },
}

/// Why a mount or unmount failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    #[error("cannot stack {0} layers: overlayfs allows at most {MAX_LOWER_LAYERS}")]
    TooManyLayers(usize),
    #[error(
        "cannot mount {layers} layers on this kernel: the options need {len} bytes, over a page; kernels >= 6.8 lift this limit"
    )]
    OptionsTooLong { layers: usize, len: usize },
    #[error("mounting {what} at {target}: {source}")]
    Mount {
        what: &'static str,
        target: PathBuf,
        source: io::Error,
    },
    #[error("unmounting {target}: {source}")]
    Unmount { target: PathBuf, source: io::Error },
}

/// The classic `mount(2)` option string for an overlay spec, with paths as given (relative to
/// `base`). Pure.
pub fn overlay_options(lower: &[PathBuf], upper: Option<&UpperDirs>) -> Result<String, MountError> {
    if lower.len() > MAX_LOWER_LAYERS {
        return Err(MountError::TooManyLayers(lower.len()));
    }
    let mut out = String::from("lowerdir=");
    for (i, l) in lower.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&escape_overlay_path(l));
    }
    if let Some(u) = upper {
        out.push_str(",upperdir=");
        out.push_str(&escape_overlay_path(&u.upper));
        out.push_str(",workdir=");
        out.push_str(&escape_overlay_path(&u.work));
    }
    if out.len() >= PAGE_SIZE {
        return Err(MountError::OptionsTooLong {
            layers: lower.len(),
            len: out.len(),
        });
    }
    Ok(out)
}

/// overlayfs splits options on ',' and lowerdir on ':'; both are escaped with '\'.
fn escape_overlay_path(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

const API_UNKNOWN: u8 = 0;
const API_NEW: u8 = 1;
const API_CLASSIC: u8 = 2;

/// Which mount API overlay mounts use, probed on first use.
static OVERLAY_API: AtomicU8 = AtomicU8::new(API_UNKNOWN);

/// Which mount API this kernel gets for overlay: `"fsconfig lowerdir+"` or `"mount(2)"`.
pub fn overlay_api_name() -> &'static str {
    match OVERLAY_API.load(Ordering::Relaxed) {
        API_CLASSIC => "mount(2) with relative short links",
        API_NEW => "fsconfig(2) lowerdir+",
        _ => "not probed yet",
    }
}

/// Forces the classic mount(2) path, for tests of the fallback.
#[doc(hidden)]
pub fn force_classic_overlay_api() {
    OVERLAY_API.store(API_CLASSIC, Ordering::Relaxed);
}

/// Carries out `spec` at `target` (an existing directory).
pub fn mount(spec: &MountSpec, target: &Path) -> Result<(), MountError> {
    match spec {
        MountSpec::Bind { source, readonly } => {
            sys::bind(source, target, *readonly).map_err(|source| MountError::Mount {
                what: "bind",
                target: target.to_path_buf(),
                source,
            })
        }
        MountSpec::Overlay { base, lower, upper } => {
            if lower.len() > MAX_LOWER_LAYERS {
                return Err(MountError::TooManyLayers(lower.len()));
            }
            if OVERLAY_API.load(Ordering::Relaxed) != API_CLASSIC {
                match mount_overlay_new_api(base, lower, upper.as_ref(), target) {
                    Ok(()) => {
                        OVERLAY_API.store(API_NEW, Ordering::Relaxed);
                        return Ok(());
                    }
                    // ENOSYS: no fsopen (< 5.2). EINVAL from `lowerdir+`: overlay predates 6.8.
                    Err(NewApiError::Unsupported(e)) => {
                        tracing::info!(error = %e, "overlay: fsconfig lowerdir+ unsupported, using mount(2)");
                        OVERLAY_API.store(API_CLASSIC, Ordering::Relaxed);
                    }
                    Err(NewApiError::Failed(source)) => {
                        return Err(MountError::Mount {
                            what: "overlay",
                            target: target.to_path_buf(),
                            source,
                        });
                    }
                }
            }
            let data = overlay_options(lower, upper.as_ref())?;
            sys::mount_from_dir(base, "overlay", &data, target, upper.is_none()).map_err(|source| {
                MountError::Mount {
                    what: "overlay",
                    target: target.to_path_buf(),
                    source,
                }
            })
        }
    }
}

enum NewApiError {
    Unsupported(io::Error),
    Failed(io::Error),
}

fn mount_overlay_new_api(
    base: &Path,
    lower: &[PathBuf],
    upper: Option<&UpperDirs>,
    target: &Path,
) -> Result<(), NewApiError> {
    use std::os::unix::ffi::OsStrExt;
    let ctx = sys::FsContext::open(c"overlay").map_err(NewApiError::Unsupported)?;
    ctx.set("source", b"overlay").map_err(NewApiError::Failed)?;
    for (i, l) in lower.iter().enumerate() {
        let path = base.join(l);
        if let Err(e) = ctx.set("lowerdir+", path.as_os_str().as_bytes()) {
            // Only the first `lowerdir+` tells whether the kernel knows the key.
            return Err(if i == 0 && e.raw_os_error() == Some(libc::EINVAL) {
                NewApiError::Unsupported(e)
            } else {
                NewApiError::Failed(e)
            });
        }
    }
    if let Some(u) = upper {
        ctx.set("upperdir", base.join(&u.upper).as_os_str().as_bytes())
            .map_err(NewApiError::Failed)?;
        ctx.set("workdir", base.join(&u.work).as_os_str().as_bytes())
            .map_err(NewApiError::Failed)?;
    }
    // Before 6.8 overlay accepts any key at fsconfig time and only fails the create with
    // EINVAL; on the first mount that means "no `lowerdir+`", so fall back to mount(2).
    ctx.mount_at(target, upper.is_none())
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) if OVERLAY_API.load(Ordering::Relaxed) == API_UNKNOWN => {
                NewApiError::Unsupported(e)
            }
            _ => NewApiError::Failed(e),
        })
}

/// Unmounts `target`. A busy mount is detached lazily, so the path is free at once and the
/// kernel finishes when the last user leaves.
pub fn unmount(target: &Path) -> Result<(), MountError> {
    match sys::unmount(target, false) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            tracing::warn!(target = %target.display(), "mount busy; detaching lazily");
            sys::unmount(target, true).map_err(|source| MountError::Unmount {
                target: target.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(MountError::Unmount {
            target: target.to_path_buf(),
            source,
        }),
    }
}

/// Takes the mount at `target` out of the mount tree at once (`MNT_DETACH`); the filesystem's
/// teardown (for an overlay, a sync of its upper filesystem) runs when its last reference
/// goes, here or on the janitor's thread.
pub(crate) fn detach(target: &Path) -> Result<(), MountError> {
    sys::unmount(target, true).map_err(|source| MountError::Unmount {
        target: target.to_path_buf(),
        source,
    })
}

/// Mount points at or below `root`, deepest first (the order to unmount them), read from
/// `/proc/self/mountinfo`.
pub fn mounts_under(root: &Path) -> io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut found: Vec<PathBuf> = parse_mountinfo_targets(&text)
        .filter(|p| p.starts_with(root))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// Mount points (field 5) of mountinfo text, with the kernel's octal escapes (`\040` for a
/// space) decoded. Pure.
pub fn parse_mountinfo_targets(text: &str) -> impl Iterator<Item = PathBuf> + '_ {
    use std::os::unix::ffi::OsStringExt;
    text.lines().filter_map(|line| {
        let field = line.split(' ').nth(4)?;
        let mut out = Vec::with_capacity(field.len());
        let b = field.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\'
                && i + 3 < b.len()
                && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
            {
                out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
                i += 4;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        Some(PathBuf::from(std::ffi::OsString::from_vec(out)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lowers(n: usize, prefix: &str) -> Vec<PathBuf> {
        (0..n)
            .map(|i| PathBuf::from(format!("{prefix}{i:026}")))
            .collect()
    }

    #[test]
    fn overlay_options_table() {
        let upper = UpperDirs {
            upper: "c/diff".into(),
            work: "c/work".into(),
        };
        let cases: Vec<(Vec<PathBuf>, Option<&UpperDirs>, &str)> = vec![
            (
                vec!["l/A".into(), "empty".into()],
                None,
                "lowerdir=l/A:empty",
            ),
            (
                vec!["l/B".into(), "l/A".into()],
                Some(&upper),
                "lowerdir=l/B:l/A,upperdir=c/diff,workdir=c/work",
            ),
            (
                vec!["a:b".into(), "c,d".into()],
                None,
                r"lowerdir=a\:b:c\,d",
            ),
        ];
        for (lower, up, want) in cases {
            assert_eq!(overlay_options(&lower, up).unwrap(), want);
        }
    }

    #[test]
    fn docker_limit_of_128_short_links_fits_in_a_page() {
        let opts = overlay_options(&lowers(128, "l/"), None).unwrap();
        assert!(opts.len() < PAGE_SIZE, "{}", opts.len());
    }

    #[test]
    fn more_than_a_page_of_options_is_refused_with_the_count() {
        let err = overlay_options(&lowers(200, "l/"), None).unwrap_err();
        assert!(
            matches!(err, MountError::OptionsTooLong { layers: 200, .. }),
            "{err}"
        );
    }

    #[test]
    fn more_than_the_stacking_limit_is_refused() {
        let err = overlay_options(&lowers(501, ""), None).unwrap_err();
        assert!(matches!(err, MountError::TooManyLayers(501)));
    }

    #[test]
    fn mountinfo_targets_are_unescaped() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 0:5 / /var/lib/strata/overlay2/x/merged rw - overlay overlay rw,lowerdir=l/A\n";
        let got: Vec<_> = parse_mountinfo_targets(text).collect();
        assert_eq!(
            got,
            vec![
                PathBuf::from("/mnt/with space"),
                PathBuf::from("/var/lib/strata/overlay2/x/merged")
            ]
        );
    }
}
