//! The exec child's set-up between fork and exec: a private mount namespace, the container's
//! mounts, `/proc` and a minimal `/dev`, `pivot_root` into the merged directory, then the
//! user. Everything the child needs is prepared as C strings before the fork, because after
//! fork in a multi-threaded daemon only async-signal-safe calls are allowed (no allocation).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One mount to make inside the new namespace, relative to nothing: absolute host paths.
#[derive(Debug)]
pub(crate) enum ChildMount {
    /// Bind `source` onto `target`; remount read-only if asked.
    Bind {
        source: CString,
        target: CString,
        readonly: bool,
    },
    /// A tmpfs at `target` with `options` (e.g. `mode=1777`).
    Tmpfs { target: CString, options: CString },
}

/// A device node created in the container's `/dev` tmpfs.
#[derive(Debug)]
pub(crate) struct DevNode {
    pub path: CString,
    pub major: u32,
    pub minor: u32,
}

/// Everything the child does before exec, prepared in the parent.
#[derive(Debug)]
pub(crate) struct ChildSetup {
    pub root: CString,
    pub mounts: Vec<ChildMount>,
    pub proc_target: CString,
    pub dev_target: CString,
    pub dev_nodes: Vec<DevNode>,
    pub workdir: CString,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
}

pub(crate) fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", path.display()),
        )
    })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl ChildSetup {
    /// Runs in the forked child. Only raw syscalls on memory prepared before the fork.
    pub(crate) fn apply(&self) -> io::Result<()> {
        let none = std::ptr::null::<libc::c_char>();
        // SAFETY (for every block below): each call is a plain syscall wrapper taking C strings
        // owned by `self`, which lives across the call; no allocation or locking happens.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Nothing we mount may propagate back to the host.
            check(libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for m in &self.mounts {
                match m {
                    ChildMount::Bind {
                        source,
                        target,
                        readonly,
                    } => {
                        check(libc::mount(
                            source.as_ptr(),
                            target.as_ptr(),
                            none,
                            libc::MS_BIND | libc::MS_REC,
                            std::ptr::null(),
                        ))?;
                        if *readonly {
                            let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                            check(libc::mount(
                                none,
                                target.as_ptr(),
                                none,
                                flags,
                                std::ptr::null(),
                            ))?;
                        }
                    }
                    ChildMount::Tmpfs { target, options } => {
                        check(libc::mount(
                            c"tmpfs".as_ptr(),
                            target.as_ptr(),
                            c"tmpfs".as_ptr(),
                            libc::MS_NOSUID | libc::MS_NODEV,
                            options.as_ptr().cast(),
                        ))?;
                    }
                }
            }
            let hardened = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            check(libc::mount(
                c"proc".as_ptr(),
                self.proc_target.as_ptr(),
                c"proc".as_ptr(),
                hardened,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.dev_target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID,
                c"mode=755,size=65536k".as_ptr().cast(),
            ))?;
            for node in &self.dev_nodes {
                let dev = libc::makedev(node.major, node.minor);
                check(libc::mknod(node.path.as_ptr(), libc::S_IFCHR | 0o666, dev))?;
                // mknod applies the umask; devices must be usable by any user.
                check(libc::chmod(node.path.as_ptr(), 0o666))?;
            }
            // runc's trick: pivot_root(".", ".") stacks the old root under the new one, and a
            // lazy unmount of "." drops it, with no put_old directory inside the container.
            check(libc::chdir(self.root.as_ptr()))?;
            check(
                i32::try_from(libc::syscall(
                    libc::SYS_pivot_root,
                    c".".as_ptr(),
                    c".".as_ptr(),
                ))
                .unwrap_or(-1),
            )?;
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
            check(libc::chdir(c"/".as_ptr()))?;
            check(libc::chdir(self.workdir.as_ptr()))?;
            check(libc::setgroups(self.groups.len(), self.groups.as_ptr()))?;
            check(libc::setgid(self.gid))?;
            check(libc::setuid(self.uid))?;
        }
        Ok(())
    }
}

/// Gives the calling thread its own, empty but for stdio, file descriptor table: descriptors
/// it opens afterwards are invisible to the rest of the process and to children other threads
/// fork, and it holds no copies of the process's descriptors (which would keep files, locks or
/// mounts alive behind their owners' backs).
pub(crate) fn private_fd_table() -> io::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FILES).map_err(io::Error::from)?;
    // SAFETY: close_range takes plain integers; it only closes descriptors of this thread's
    // table, which nothing else uses now that it is private.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // Before Linux 5.9: close them one by one, as listed for this thread.
    let fds: Vec<i32> = std::fs::read_dir("/proc/thread-self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: as above; a descriptor already closed (the directory listing's own) fails
        // harmlessly with EBADF.
        unsafe { libc::close(fd) };
    }
    Ok(())
}
