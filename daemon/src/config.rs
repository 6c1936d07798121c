//! Daemon configuration: built-in defaults, then a TOML file, then command-line flags.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_ROOT: &str = "/var/lib/strata";
pub const DEFAULT_SOCKET: &str = "/run/strata/strata.sock";
pub const DEFAULT_CONFIG: &str = "/etc/strata/stratad.toml";

/// Settings a TOML file may hold; every key is optional.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub root: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub driver: Option<String>,
    pub log: Option<String>,
}

/// The settings in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub driver: String,
    pub log: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

impl FileConfig {
    /// Reads `path`. A missing file is an error only when the user named it.
    pub fn load(path: &Path, named: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.into(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.into(),
                source,
            }),
        }
    }
}

impl Config {
    /// Flags win over the file, the file over defaults.
    pub fn merge(
        file: FileConfig,
        root: Option<PathBuf>,
        socket: Option<PathBuf>,
        driver: Option<String>,
    ) -> Self {
        Self {
            root: root.or(file.root).unwrap_or_else(|| DEFAULT_ROOT.into()),
            socket: socket
                .or(file.socket)
                .unwrap_or_else(|| DEFAULT_SOCKET.into()),
            driver: driver.or(file.driver).unwrap_or_else(|| "overlay2".into()),
            log: file.log.unwrap_or_else(|| "info".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let file: FileConfig =
            toml::from_str("root = \"/srv/strata\"\nsocket = \"/tmp/s.sock\"\n").unwrap();
        let c = Config::merge(file.clone(), None, Some("/x.sock".into()), None);
        assert_eq!(c.root, PathBuf::from("/srv/strata"));
        assert_eq!(c.socket, PathBuf::from("/x.sock"));
        assert_eq!(c.driver, "overlay2");
        let d = Config::merge(FileConfig::default(), None, None, None);
        assert_eq!(d.root, PathBuf::from(DEFAULT_ROOT));
        assert_eq!(d.socket, PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn unknown_keys_and_missing_named_files_are_errors() {
        assert!(toml::from_str::<FileConfig>("rot = \"/x\"").is_err());
        let err = FileConfig::load(Path::new("/nonexistent/stratad.toml"), true).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/stratad.toml"));
        assert_eq!(
            FileConfig::load(Path::new("/nonexistent/stratad.toml"), false).unwrap(),
            FileConfig::default()
        );
    }
}
