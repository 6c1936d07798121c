//! The one error type of the testkit.

use std::path::Path;

/// What can go wrong building snapshots or starting daemons.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem or pipe operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Input (a tar stream, a JSON document) is not what was expected.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A program the fixture needs is not installed.
    #[error("{program} not found: {hint}")]
    ProgramNotFound { program: String, hint: &'static str },
    /// A daemon exited or did not come up in time; `log_tail` is the end of its log.
    #[error("{daemon} did not become ready: {reason}\n--- last lines of its log ---\n{log_tail}")]
    DaemonNotReady {
        daemon: &'static str,
        reason: String,
        log_tail: String,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, what: &str, source: std::io::Error) -> Self {
        Error::Io {
            context: format!("{what} {}", path.display()),
            source,
        }
    }
}
