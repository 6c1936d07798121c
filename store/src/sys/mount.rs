//! `mount(2)`, the new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`), `umount2` and `syncfs`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn cpath(path: &Path) -> io::Result<CString> {
    cstring(path.as_os_str().as_bytes())
}

/// A filesystem context from `fsopen(2)`, configured key by key.
#[derive(Debug)]
pub(crate) struct FsContext {
    fd: OwnedFd,
}

impl FsContext {
    /// `fsopen(fstype)`. Fails with ENOSYS on kernels before 5.2.
    pub(crate) fn open(fstype: &CStr) -> io::Result<Self> {
        // SAFETY: fstype is a valid NUL-terminated string; the flags are a plain integer.
        let fd = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
        let fd =
            i32::try_from(fd).map_err(|_| io::Error::other("fsopen returned an impossible fd"))?;
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fsopen returned a new file descriptor that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// `fsconfig(FSCONFIG_SET_STRING, key, value)`.
    pub(crate) fn set(&self, key: &str, value: &[u8]) -> io::Result<()> {
        let key = cstring(key.as_bytes())?;
        let value = cstring(value)?;
        // SAFETY: the fd is an open fs context; key and value are valid C strings that outlive
        // the call; aux must be 0 for SET_STRING.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Creates the superblock, makes a detached mount of it and attaches it at `target`.
    pub(crate) fn mount_at(self, target: &Path, readonly: bool) -> io::Result<()> {
        // SAFETY: the fd is an open fs context; key and value must be NULL for CMD_CREATE.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_char>(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let attrs = if readonly { MOUNT_ATTR_RDONLY } else { 0 };
        // SAFETY: the fd is a configured fs context; flags and attrs are plain integers.
        let mfd = unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.fd.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                attrs,
            )
        };
        let mfd = i32::try_from(mfd)
            .map_err(|_| io::Error::other("fsmount returned an impossible fd"))?;
        if mfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fsmount returned a new file descriptor that nothing else owns.
        let mfd = unsafe { OwnedFd::from_raw_fd(mfd) };
        let target = cpath(target)?;
        let empty = c"";
        // SAFETY: mfd is a detached mount; both strings are valid C strings for the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mfd.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// Classic `mount(2)` of `fstype` with option string `data`, with relative paths in `data`
/// resolved from `cwd`. The current directory is per process, so the mount runs in a forked
/// child that changes directory, mounts and exits (Docker's overlay2 does the same with a
/// re-exec) — the daemon's other threads never see a changed directory.
pub(crate) fn mount_from_dir(
    cwd: &Path,
    fstype: &str,
    data: &str,
    target: &Path,
    readonly: bool,
) -> io::Result<()> {
    let cwd = cpath(cwd)?;
    let fstype = cstring(fstype.as_bytes())?;
    let data = cstring(data.as_bytes())?;
    let target = cpath(target)?;
    let flags = if readonly { libc::MS_RDONLY } else { 0 };
    // SAFETY: after fork the child only calls async-signal-safe functions (chdir, mount,
    // _exit) on memory prepared before the fork, so holding no locks cannot deadlock it.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; all pointers are valid C strings owned by this (copied) process.
        unsafe {
            if libc::chdir(cwd.as_ptr()) != 0 {
                libc::_exit(*libc::__errno_location());
            }
            let rc = libc::mount(
                c"overlay".as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                flags,
                data.as_ptr().cast(),
            );
            libc::_exit(if rc == 0 {
                0
            } else {
                *libc::__errno_location()
            });
        }
    }
    let status =
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).map_err(io::Error::from)?;
    match status {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        nix::sys::wait::WaitStatus::Exited(_, errno) => Err(io::Error::from_raw_os_error(errno)),
        other => Err(io::Error::other(format!(
            "mount helper ended abnormally: {other:?}"
        ))),
    }
}

/// A bind mount of `source` at `target`, then a read-only remount if asked (the kernel ignores
/// `MS_RDONLY` on the initial bind).
pub(crate) fn bind(source: &Path, target: &Path, readonly: bool) -> io::Result<()> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    if readonly {
        let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, remount, None::<&str>)
        {
            let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            return Err(e.into());
        }
    }
    Ok(())
}

/// `umount2(target)`; `detach` makes it lazy (`MNT_DETACH`) for mounts still busy.
pub(crate) fn unmount(target: &Path, detach: bool) -> io::Result<()> {
    let flags = if detach {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    nix::mount::umount2(target, flags).map_err(io::Error::from)
}

/// An `O_PATH` reference to the directory at `path` (for a mount point, the mounted root):
/// while it is open, the mount's superblock outlives a lazy unmount.
pub(crate) fn open_mount_root(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(path)?;
    Ok(dir.into())
}

/// `syncfs(2)` on the filesystem holding `path`: one flush instead of an fsync per file.
pub(crate) fn syncfs(path: &Path) -> io::Result<()> {
    let dir = std::fs::File::open(path)?;
    // SAFETY: the fd is open for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_syncfs, dir.as_raw_fd()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
