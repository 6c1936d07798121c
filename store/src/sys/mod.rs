//! Every raw syscall and `unsafe` block of the store lives under this module, as safe wrappers.
pub(crate) mod fs;
pub(crate) mod mount;
pub(crate) mod ns;
