//! Every raw syscall and `unsafe` block of the store lives under this module, as safe wrappers.
pub(crate) mod fs;
pub(crate) mod mount;
pub(crate) mod ns;

/// The nice value of threads doing work no caller waits for (deleting, preparing directories).
const BACKGROUND_NICE: libc::c_int = 10;

/// Lowers the calling thread's CPU priority to [`BACKGROUND_NICE`], so that on a busy host its
/// work yields to the threads answering requests. A hint: failure is logged, not returned.
pub(crate) fn lower_thread_priority() {
    // SAFETY: setpriority takes plain integers; on Linux `PRIO_PROCESS` with `who` 0 means the
    // calling thread only.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower a background thread's priority");
    }
}
