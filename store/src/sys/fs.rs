//! Safe wrappers over the `*at` family of file-system syscalls used to build layer directories
//! without ever following a symlink out of them.
//!
//! Every function takes a directory fd plus one final path component (`name`, never containing
//! `/`), or a path that is resolved with `openat2(2)` under `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`. Callers attach the entry names to errors.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A point in time as `utimensat(2)` wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timestamp {
    pub(crate) sec: i64,
    pub(crate) nsec: u32,
}

impl Timestamp {
    fn to_timespec(self) -> libc::timespec {
        libc::timespec {
            tv_sec: self.sec,
            tv_nsec: i64::from(self.nsec),
        }
    }
}

/// The file type of an existing directory entry, from `fstatat(2)` without following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Dir,
    Symlink,
    Other,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Wraps a freshly returned fd, or the error `errno` describes.
fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(fd)?;
    // SAFETY: `fd` was just returned by a successful open-like syscall, so it is a valid, open
    // descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Opens `path` (trusted: chosen by our caller, not by archive content) as a directory.
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    owned(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

/// Opens the directory `rel` (relative, no `..`) beneath `root`, refusing any symlink on the way
/// (`ELOOP`) and any escape (`EXDEV`). `rel` may be `.` for `root` itself.
pub(crate) fn open_dir_beneath(
    root: BorrowedFd<'_>,
    rel: &CStr,
    path_only: bool,
) -> io::Result<OwnedFd> {
    let access = if path_only {
        libc::O_PATH
    } else {
        libc::O_RDONLY
    };
    let flags = access | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    match openat2(root, rel, flags, resolve) {
        // Kernels before 5.6, or a seccomp profile that hides openat2: walk one component
        // at a time with O_NOFOLLOW, which gives the same guarantees for paths without `..`.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            open_dir_walk(root, rel, flags)
        }
        opened => opened,
    }
}

/// Opens the regular file `rel` (relative bytes, no `..`) beneath `root` for reading, refusing
/// any symlink on the way or at the end (`ELOOP`) and any escape (`EXDEV`).
pub(crate) fn open_file_beneath(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<OwnedFd> {
    let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b"."[..], rel),
    };
    let dir = open_dir_beneath(root, &cstring(parent)?, true)?;
    let name = cstring(name)?;
    // SAFETY: `dir` is an open directory fd and `name` a valid C string; O_NOFOLLOW refuses a
    // symlink as the last component.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// `openat2(2)` of `rel` under `dir` with `resolve` flags, retried on `EAGAIN` (a concurrent
/// rename raced the lookup; the man page asks for a retry) and `EINTR`.
fn openat2(
    dir: BorrowedFd<'_>,
    rel: &CStr,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain old data for which all-zero is the documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = u64::try_from(flags).unwrap_or_default();
    how.resolve = resolve;
    loop {
        // SAFETY: `how` and `rel` are valid for the duration of the call and the size passed is
        // the size of `how`; the returned fd, if any, is owned by nobody else.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                rel.as_ptr(),
                &raw const how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if ret >= 0 {
            let fd = RawFd::try_from(ret)
                .map_err(|_| io::Error::other("openat2 returned an invalid fd"))?;
            return owned(fd);
        }
        let err = io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
            return Err(err);
        }
    }
}

fn open_dir_walk(root: BorrowedFd<'_>, rel: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let mut current = dup(root)?;
    for comp in rel.to_bytes().split(|&b| b == b'/') {
        if comp.is_empty() || comp == b"." {
            continue;
        }
        if comp == b".." {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        let c = cstring(comp)?;
        // SAFETY: `current` is an open directory fd and `c` a valid C string.
        // O_NOFOLLOW on a symlink gives ELOOP, as RESOLVE_NO_SYMLINKS does.
        current = owned(unsafe { libc::openat(current.as_raw_fd(), c.as_ptr(), flags) })?;
    }
    Ok(current)
}

fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd that we own.
    owned(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })
}

/// Opens the directory `name` in `dir` without following a symlink there.
pub(crate) fn open_dir_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    path_only: bool,
) -> io::Result<OwnedFd> {
    let access = if path_only {
        libc::O_PATH
    } else {
        libc::O_RDONLY
    };
    // SAFETY: `dir` is an open fd and `name` a valid C string.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            access | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// Creates the regular file `name` in `dir`; fails with `EEXIST` if any entry (even a dangling
/// symlink) already has that name.
pub(crate) fn create_file_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<File> {
    // SAFETY: `dir` is an open fd and `name` a valid C string; mode is passed as the variadic
    // third argument open(2) expects with O_CREAT.
    let fd = owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode,
        )
    })?;
    Ok(File::from(fd))
}

pub(crate) fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `dir` is an open fd and `name` a valid C string.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub(crate) fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are valid C strings and `dir` is an open fd.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// `linkat(2)` without `AT_SYMLINK_FOLLOW`: a symlink target is linked itself, never followed.
pub(crate) fn hardlink_at(
    old_dir: BorrowedFd<'_>,
    old_name: &CStr,
    new_dir: BorrowedFd<'_>,
    new_name: &CStr,
) -> io::Result<()> {
    // SAFETY: fds are open and strings valid for the call.
    cvt(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old_name.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// `mknodat(2)`; `mode` includes the file type bits (`S_IFCHR`, `S_IFBLK`, `S_IFIFO`).
pub(crate) fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: u32,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    let dev = libc::makedev(major, minor);
    // SAFETY: `dir` is an open fd and `name` a valid C string.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) }).map(drop)
}

/// `fchownat(2)` with `AT_SYMLINK_NOFOLLOW`.
pub(crate) fn lchown_at(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: `dir` is an open fd and `name` a valid C string.
    cvt(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub(crate) fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: `fd` is an open fd.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: `fd` is an open fd.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// Changes the mode of `name` (never a symlink: callers only pass names they just created as
/// devices or fifos). Uses `fchmodat2(2)` with `AT_SYMLINK_NOFOLLOW` where the kernel has it
/// (6.6+), so even a racing swap for a symlink cannot redirect the chmod.
pub(crate) fn chmod_at_nofollow(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `dir` is an open fd and `name` a valid C string; fchmodat2 takes
    // (dirfd, path, mode, flags).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            mode,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // SAFETY: as above; plain fchmodat(2) without flags.
    cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

/// Sets access and modification time of `name` without following a symlink there.
pub(crate) fn set_times_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    atime: Timestamp,
    mtime: Timestamp,
) -> io::Result<()> {
    let times = [atime.to_timespec(), mtime.to_timespec()];
    // SAFETY: `times` points at two timespecs as utimensat(2) requires; `dir` is open and
    // `name` valid.
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub(crate) fn set_times_fd(
    fd: BorrowedFd<'_>,
    atime: Timestamp,
    mtime: Timestamp,
) -> io::Result<()> {
    let times = [atime.to_timespec(), mtime.to_timespec()];
    // SAFETY: `times` points at two timespecs; `fd` is an open, non-O_PATH fd.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

/// Starts writing back `len` bytes of `fd` from `offset` (0: to the end) without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): the device writes while the caller goes on, so
/// that a later `syncfs` finds little left to do. A hint, not a durability guarantee.
pub(crate) fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let offset = libc::off64_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    let len = libc::off64_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `fd` is an open descriptor; the call only reads its arguments.
    cvt(unsafe { libc::sync_file_range(fd.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) })
        .map(drop)
}

pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, key: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `key` is a valid C string and `value` a valid buffer of the given length.
    cvt(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// `lsetxattr(2)` on `name` inside `dir`, for entries that cannot be opened for an fd (symlinks,
/// devices). The path goes through `/proc/self/fd/<dir>`, which pins the directory we already
/// hold; `name` is a single component and `lsetxattr` does not follow a final symlink.
pub(crate) fn lsetxattr_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    key: &CStr,
    value: &[u8],
) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.to_bytes());
    let path = cstring(&path)?;
    // SAFETY: all pointers are valid C strings / buffers for the duration of the call.
    cvt(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// The type of `name` in `dir`, without following a symlink.
pub(crate) fn kind_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<FileKind> {
    // SAFETY: `stat` is plain old data; zeroed is a valid value that fstatat overwrites.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is open, `name` valid and `st` a valid out-pointer.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &raw mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    })
}

/// The target of the symlink `name` in `dir`.
pub(crate) fn readlink_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` is writable for `buf.len()` bytes; `dir` is open and `name` valid.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    buf.truncate(n);
    Ok(buf)
}

/// `unlinkat(2)`; `dir_entry` selects `AT_REMOVEDIR`.
pub(crate) fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, dir_entry: bool) -> io::Result<()> {
    let flags = if dir_entry { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `dir` is open and `name` valid.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// Removes `name` in `dir`: a directory with everything below it (never following symlinks:
/// each level is opened with `O_NOFOLLOW` and its entries unlinked through that fd), or any
/// other entry.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    match kind_at(dir, name)? {
        FileKind::Dir => {
            let child = open_dir_at(dir, name, false)?;
            for (entry, is_dir) in read_dir_names(child.as_fd())? {
                if is_dir == Some(true) {
                    remove_all_at(child.as_fd(), &entry)?;
                } else if is_dir == Some(false) {
                    unlink_at(child.as_fd(), &entry, false)?;
                } else {
                    remove_all_at(child.as_fd(), &entry)?;
                }
            }
            unlink_at(dir, name, true)
        }
        _ => unlink_at(dir, name, false),
    }
}

/// Names in the directory `fd` (without `.` and `..`), each with `Some(is_dir)` when the file
/// system reports the type in `d_type`, `None` when it does not.
fn read_dir_names(fd: BorrowedFd<'_>) -> io::Result<Vec<(CString, Option<bool>)>> {
    let own = dup(fd)?;
    // SAFETY: `own` is a valid directory fd; on success fdopendir takes ownership of it, so we
    // release it from `OwnedFd` with into_raw_fd only after success.
    let stream = unsafe { libc::fdopendir(own.as_raw_fd()) };
    if stream.is_null() {
        return Err(io::Error::last_os_error());
    }
    let _ = std::os::fd::IntoRawFd::into_raw_fd(own);
    let mut out = Vec::new();
    loop {
        // SAFETY: `stream` is a valid DIR* until closedir below. errno is reset so that a NULL
        // return can be told apart (end of stream vs error).
        let ent = unsafe {
            *libc::__errno_location() = 0;
            libc::readdir64(stream)
        };
        if ent.is_null() {
            // SAFETY: reading errno of this thread.
            let errno = unsafe { *libc::__errno_location() };
            // SAFETY: `stream` is valid and closed exactly once.
            unsafe { libc::closedir(stream) };
            if errno != 0 {
                return Err(io::Error::from_raw_os_error(errno));
            }
            return Ok(out);
        }
        // SAFETY: `ent` is non-null and points at a dirent64 valid until the next readdir call;
        // `d_name` is NUL-terminated.
        let (name, d_type) = unsafe { (CStr::from_ptr((*ent).d_name.as_ptr()), (*ent).d_type) };
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        let is_dir = match d_type {
            libc::DT_UNKNOWN => None,
            libc::DT_DIR => Some(true),
            _ => Some(false),
        };
        out.push((name.to_owned(), is_dir));
    }
}

/// Opens `rel` as if `root` were `/` (`RESOLVE_IN_ROOT`: absolute symlinks and `..` stay
/// inside `root`), for reading a container's files from the host without following its
/// symlinks out.
pub(crate) fn open_in_root(root: &Path, rel: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    in_root(open_dir(root)?.as_fd(), rel, flags)
}

/// [`open_in_root`] with the root already open.
fn in_root(root: BorrowedFd<'_>, rel: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let rel = rel.trim_start_matches('/');
    let rel = cstring(if rel.is_empty() { b"." } else { rel.as_bytes() })?;
    openat2(
        root,
        &rel,
        flags | libc::O_CLOEXEC,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// `mkdir -p` of `rel` inside `root`, resolving every component as the container would
/// (`RESOLVE_IN_ROOT`), and returns the host path of the resulting directory, which is
/// always under `root`.
pub(crate) fn mkdir_all_in_root(root: &Path, rel: &str) -> io::Result<PathBuf> {
    let root_fd = open_dir(root)?;
    let dir_flags = libc::O_PATH | libc::O_DIRECTORY;
    let mut prefix = String::new();
    for part in rel.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let parent_rel = prefix.clone();
        prefix = if prefix.is_empty() {
            part.to_owned()
        } else {
            format!("{prefix}/{part}")
        };
        match in_root(root_fd.as_fd(), &prefix, dir_flags) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let parent = in_root(root_fd.as_fd(), &parent_rel, dir_flags)?;
                let name = cstring(part.as_bytes())?;
                // SAFETY: `parent` is an open directory and `name` a valid C string.
                let rc = unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) };
                if rc < 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(e);
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    let fd = in_root(root_fd.as_fd(), &prefix, dir_flags)?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if !real.starts_with(root) {
        return Err(io::Error::other(format!(
            "{rel} resolves outside the container"
        )));
    }
    Ok(real)
}
