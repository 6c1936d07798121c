//! Mount specs from the fuzzer through `mountspec`: the whole input (if UTF-8) as one `-v`
//! value and one `--mount` value, then each of its lines through both parsers, and the
//! requests they accept as one container's set through `validate_set`, against a small
//! pretend filesystem with symlinks into and around the store root.
//!
//! Asserts that nothing panics, and what the module documents:
//! - an accepted request has a clean absolute target other than `/`; a bind has a clean
//!   absolute source; a volume a valid name or none; a tmpfs no source; `tmpfs-*` only on a
//!   tmpfs (mode within `0o7777`), `nocopy` only on a volume; `readonly` and `nocopy` of a `-v`
//!   spec are exactly what its MODE field says;
//! - rendering an accepted request back into a spec of the same flag parses to the same
//!   request;
//! - an accepted set has no two mounts on one target, no bind source inside the store root
//!   (lexically or after resolving symlinks, for a missing `-v` source where `mkdir -p` would
//!   create it), and every `--mount` bind source exists.
#![no_main]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use strata_store::mountspec::{
    MountKind, MountOrigin, MountRequest, parse_mount_flag, parse_volume_flag, valid_volume_name,
    validate_set,
};

/// The store root as the daemon was given it: a symlink to [`REAL_STORE_ROOT`].
const STORE_ROOT: &str = "/srv/store";
const REAL_STORE_ROOT: &str = "/var/lib/strata";

/// Directories and files of the pretend filesystem (every ancestor listed).
const EXISTING: &[&str] = &[
    "/",
    "/srv",
    "/srv/data",
    "/srv/data/file",
    "/var",
    "/var/lib",
    "/var/lib/strata",
    "/var/lib/strata/overlay2",
    "/var/lib/strata/volumes",
    "/var/lib/strata-other",
    "/home",
    "/home/user",
];

/// Symlinks of the pretend filesystem: path and target, as `readlink` returns it.
const SYMLINKS: &[(&str, &str)] = &[
    ("/srv/store", "/var/lib/strata"),
    ("/srv/layers", "../var/lib/strata/overlay2"),
    ("/srv/up", ".."),
    ("/srv/loop", "loop"),
    ("/srv/dangling", "/var/lib/strata/new"),
    ("/home/user/link", "/srv"),
    ("/var/lib/strata-link", "strata"),
];

/// Symlinks one walk may follow before giving up, as the kernel does (`ELOOP`).
const MAX_LINKS: usize = 40;

/// Where `path` leads in the pretend filesystem, following symlinks as the kernel does, and
/// whether all of it exists. A missing component and those after it are appended as they are:
/// that is where `mkdir -p` would create them. `None` where the walk fails (a symlink loop, a
/// dangling symlink, a component below a file), as `mkdir -p` would too.
fn walk(path: &str) -> Option<(String, bool)> {
    // Components still to walk, next last; `true` for those from a symlink's target.
    let components = |path: &str, from_link: bool| -> Vec<(String, bool)> {
        path.split('/')
            .rev()
            .map(|c| (c.to_owned(), from_link))
            .collect()
    };
    let absolute = |parts: &[String]| format!("/{}", parts.join("/"));
    let mut resolved: Vec<String> = Vec::new();
    let mut rest = components(path, false);
    let mut links = 0;
    let mut missing = false;
    while let Some((component, from_link)) = rest.pop() {
        match component.as_str() {
            "" | "." => {}
            ".." => {
                resolved.pop();
            }
            _ if missing => resolved.push(component),
            _ => {
                let here = absolute(&resolved);
                if !is_dir(&here) {
                    return None;
                }
                let candidate = format!("{}/{component}", here.trim_end_matches('/'));
                if let Some((_, target)) = SYMLINKS.iter().find(|(link, _)| *link == candidate) {
                    links += 1;
                    if links > MAX_LINKS {
                        return None;
                    }
                    if target.starts_with('/') {
                        resolved.clear();
                    }
                    rest.extend(components(target, true));
                } else if EXISTING.contains(&candidate.as_str()) {
                    resolved.push(component);
                } else if from_link {
                    return None;
                } else {
                    missing = true;
                    resolved.push(component);
                }
            }
        }
    }
    Some((absolute(&resolved), !missing))
}

fn is_dir(path: &str) -> bool {
    EXISTING.contains(&path) && path != "/srv/data/file"
}

/// `validate_set`'s `resolve`: the canonical path of an existing path.
fn resolve(path: &str) -> Option<PathBuf> {
    if !path.starts_with('/') {
        return None;
    }
    match walk(path) {
        Some((real, true)) => Some(PathBuf::from(real)),
        _ => None,
    }
}

/// Whether `path` is `root` or below it, comparing whole components.
fn inside(path: &str, root: &str) -> bool {
    path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// An absolute path with no empty, `.` or `..` component and no trailing `/` (or `/` itself).
fn is_clean_absolute(path: &str) -> bool {
    path == "/"
        || path.strip_prefix('/').is_some_and(|rest| {
            rest.split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
        })
}

fn check_request(request: &MountRequest, spec: &str) {
    let context = || format!("spec {spec:?} -> {request:?}");
    assert!(
        is_clean_absolute(&request.target) && request.target != "/",
        "target not clean, absolute and below /: {}",
        context()
    );
    match (request.kind, request.source.as_deref()) {
        (MountKind::Bind, Some(source)) => {
            assert!(is_clean_absolute(source), "bind source: {}", context());
        }
        (MountKind::Volume | MountKind::Tmpfs, None) => {}
        (MountKind::Volume, Some(name)) => {
            assert!(valid_volume_name(name), "volume name: {}", context());
        }
        _ => panic!("source does not fit the kind: {}", context()),
    }
    assert!(
        request.kind == MountKind::Tmpfs
            || (request.tmpfs_size.is_none() && request.tmpfs_mode.is_none()),
        "tmpfs options on another kind: {}",
        context()
    );
    assert!(
        request.tmpfs_mode.is_none_or(|mode| mode <= 0o7777),
        "tmpfs mode: {}",
        context()
    );
    assert!(
        !request.volume_nocopy || request.kind == MountKind::Volume,
        "nocopy on another kind: {}",
        context()
    );
}

/// A `-v` spec: the request, its mode exactly as the spec's MODE field says, and round trip.
fn check_volume_flag(spec: &str) {
    let Ok(request) = parse_volume_flag(spec) else {
        return;
    };
    check_request(&request, spec);
    assert_eq!(request.origin, MountOrigin::VolumeFlag, "spec {spec:?}");
    assert_ne!(request.kind, MountKind::Tmpfs, "spec {spec:?}");
    let fields: Vec<&str> = spec.split(':').collect();
    let words: Vec<&str> = fields.get(2).map_or(Vec::new(), |m| m.split(',').collect());
    assert_eq!(
        request.readonly,
        words.contains(&"ro"),
        "readonly of {spec:?}"
    );
    assert_eq!(
        request.volume_nocopy,
        words.contains(&"nocopy"),
        "nocopy of {spec:?}"
    );

    let mut rendered = if let Some(source) = &request.source {
        format!("{source}:{}", request.target)
    } else {
        // Docker refuses `DST:MODE`: an anonymous volume has no mode to render.
        assert!(
            !request.readonly && !request.volume_nocopy,
            "anonymous volume with a mode from {spec:?}"
        );
        request.target.clone()
    };
    let mode: Vec<&str> = [(request.readonly, "ro"), (request.volume_nocopy, "nocopy")]
        .into_iter()
        .filter_map(|(set, word)| set.then_some(word))
        .collect();
    if !mode.is_empty() {
        rendered = format!("{rendered}:{}", mode.join(","));
    }
    assert_eq!(
        parse_volume_flag(&rendered).as_ref(),
        Ok(&request),
        "{spec:?} rendered as {rendered:?}"
    );
}

/// A `--mount` spec: the request, and round trip through a fully quoted rendering.
fn check_mount_flag(spec: &str) {
    let Ok(request) = parse_mount_flag(spec) else {
        return;
    };
    check_request(&request, spec);
    assert_eq!(request.origin, MountOrigin::MountFlag, "spec {spec:?}");

    let mut fields = vec![
        format!("type={}", request.kind),
        format!("target={}", request.target),
    ];
    if let Some(source) = &request.source {
        fields.push(format!("source={source}"));
    }
    if request.readonly {
        fields.push("readonly=true".to_owned());
    }
    if request.volume_nocopy {
        fields.push("volume-nocopy=true".to_owned());
    }
    if let Some(size) = request.tmpfs_size {
        fields.push(format!("tmpfs-size={size}"));
    }
    if let Some(mode) = request.tmpfs_mode {
        fields.push(format!("tmpfs-mode={mode:o}"));
    }
    let rendered = fields
        .iter()
        .map(|f| format!("\"{}\"", f.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        parse_mount_flag(&rendered).as_ref(),
        Ok(&request),
        "{spec:?} rendered as {rendered:?}"
    );
}

/// What an accepted set guarantees, checked against [`walk`], not against `validate_set`'s own
/// prefix resolution.
fn check_accepted_set(set: &[MountRequest]) {
    let mut targets = HashSet::new();
    for request in set {
        assert!(
            targets.insert(request.target.as_str()),
            "duplicate target {:?} accepted in {set:?}",
            request.target
        );
    }
    for request in set {
        let (MountKind::Bind, Some(source)) = (request.kind, request.source.as_deref()) else {
            continue;
        };
        for root in [STORE_ROOT, REAL_STORE_ROOT] {
            assert!(!inside(source, root), "{source:?} is inside {root}");
        }
        match walk(source) {
            Some((real, whole)) => {
                assert!(
                    !inside(&real, REAL_STORE_ROOT),
                    "{source:?} leads to {real:?}, inside the store"
                );
                assert!(
                    whole || request.origin == MountOrigin::VolumeFlag,
                    "--mount bind source {source:?} does not exist"
                );
            }
            None => assert_eq!(
                request.origin,
                MountOrigin::VolumeFlag,
                "--mount bind source {source:?} cannot be resolved"
            ),
        }
    }
}

/// More mounts than any container needs, so long inputs stay fast.
const MAX_SET: usize = 16;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_volume_flag(text);
    check_mount_flag(text);
    let mut set = Vec::new();
    for line in text.split('\n').take(MAX_SET) {
        check_volume_flag(line);
        check_mount_flag(line);
        set.extend(parse_volume_flag(line));
        set.extend(parse_mount_flag(line));
    }
    match validate_set(&set, Path::new(STORE_ROOT), &resolve) {
        Ok(()) => check_accepted_set(&set),
        // The message is what the API answers: building it must not panic either.
        Err(e) => drop(e.to_string()),
    }
});
