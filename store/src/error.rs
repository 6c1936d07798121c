//! One error enum per kind of operation, all converting into the crate [`Error`]. Each says
//! what state the store is in after it (in the docs of the functions that return it).

use std::io;
use std::path::PathBuf;

use crate::archive::{ArchiveError, ExportError};
use crate::driver::DriverError;
use crate::ids::IdError;
use crate::meta::MetaError;
use crate::mounts::MountError;

/// Opening a store failed; nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("store root {path}: {source}")]
    Root { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("starting the background worker threads: {0}")]
    Janitor(io::Error),
}

/// An import was refused or failed. The store is as it was before: no records, no directories.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("image {0} has no layers")]
    NoLayers(String),
    #[error("image {image} has {layers} layers; overlayfs stacks at most {max}")]
    TooManyLayers {
        image: String,
        layers: usize,
        max: usize,
    },
    #[error("staging import in {path}: {source}")]
    Staging { path: PathBuf, source: io::Error },
}

/// What kind of failure an [`Error`] is, for callers that map errors to responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    InUse,
    Invalid,
    /// The store's filesystem is full (ENOSPC, EDQUOT): nothing was recorded; retry once
    /// space is freed.
    NoSpace,
    Internal,
}

/// Any store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("no such {kind}: {name}")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        if self.is_no_space() {
            return ErrorKind::NoSpace;
        }
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::InUse(_) => ErrorKind::InUse,
            Error::Invalid(_)
            | Error::Id(_)
            | Error::Import(
                ImportError::Archive(_)
                | ImportError::NoLayers(_)
                | ImportError::TooManyLayers { .. },
            )
            | Error::Mount(MountError::TooManyLayers(_) | MountError::OptionsTooLong { .. }) => {
                ErrorKind::Invalid
            }
            _ => ErrorKind::Internal,
        }
    }

    /// Whether an `ENOSPC` or `EDQUOT` is anywhere in the chain of causes.
    fn is_no_space(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<io::Error>()
                && matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            {
                return true;
            }
            if let Some(redb::StorageError::Io(io)) = e.downcast_ref::<redb::StorageError>()
                && matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            {
                return true;
            }
            cause = e.source();
        }
        false
    }

    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }
}

/// Whether `s` could be an id prefix: 4 to 64 lowercase hex digits.
pub(crate) fn is_hex_prefix(s: &str) -> bool {
    (4..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The one item whose hex id starts with `prefix`: not found, or ambiguous, name the `kind`.
pub(crate) fn unique_by_prefix<T>(
    items: impl IntoIterator<Item = T>,
    hex_of: impl Fn(&T) -> String,
    prefix: &str,
    kind: &'static str,
) -> Result<T, Error> {
    let mut found = items.into_iter().filter(|t| hex_of(t).starts_with(prefix));
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(Error::NotFound {
            kind,
            name: prefix.to_owned(),
        }),
        (Some(_), Some(_)) => Err(Error::Invalid(format!(
            "{kind} id prefix {prefix} is ambiguous"
        ))),
    }
}
