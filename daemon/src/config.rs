//! Daemon configuration: built-in defaults, then a TOML file, then command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_ROOT: &str = "/var/lib/strata";
pub const DEFAULT_SOCKET: &str = "/run/strata/strata.sock";
pub const DEFAULT_CONFIG: &str = "/etc/strata/stratad.toml";
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9750);
/// Seconds between scans of the writable layers (sizes and copied-up files).
pub const DEFAULT_SCAN_INTERVAL: u64 = 30;

/// Settings a TOML file (or the command line) may hold; every key is optional.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub root: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub driver: Option<String>,
    pub log: Option<String>,
    pub metrics_addr: Option<SocketAddr>,
    pub scan_interval: Option<u64>,
    pub socket_group: Option<String>,
}

/// The settings in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub driver: String,
    pub log: String,
    pub metrics_addr: SocketAddr,
    /// Seconds between scans of the writable layers.
    pub scan_interval: u64,
    /// The group that owns the socket (mode 0660): its members may use the API, as root can.
    /// `None`: root's group.
    pub socket_group: Option<String>,
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
    pub fn merge(file: FileConfig, flags: FileConfig) -> Self {
        Self {
            root: flags
                .root
                .or(file.root)
                .unwrap_or_else(|| DEFAULT_ROOT.into()),
            socket: flags
                .socket
                .or(file.socket)
                .unwrap_or_else(|| DEFAULT_SOCKET.into()),
            driver: flags
                .driver
                .or(file.driver)
                .unwrap_or_else(|| "overlay2".into()),
            log: flags.log.or(file.log).unwrap_or_else(|| "info".into()),
            metrics_addr: flags
                .metrics_addr
                .or(file.metrics_addr)
                .unwrap_or(DEFAULT_METRICS_ADDR),
            scan_interval: flags
                .scan_interval
                .or(file.scan_interval)
                .unwrap_or(DEFAULT_SCAN_INTERVAL)
                .max(1),
            socket_group: flags.socket_group.or(file.socket_group),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let file: FileConfig = toml::from_str(
            "root = \"/srv/strata\"\nsocket = \"/tmp/s.sock\"\nmetrics_addr = \"0.0.0.0:9999\"\n",
        )
        .unwrap();
        let flags = FileConfig {
            socket: Some("/x.sock".into()),
            ..FileConfig::default()
        };
        let c = Config::merge(file, flags);
        assert_eq!(c.root, PathBuf::from("/srv/strata"));
        assert_eq!(c.socket, PathBuf::from("/x.sock"));
        assert_eq!(c.driver, "overlay2");
        assert_eq!(c.metrics_addr.port(), 9999);
        let d = Config::merge(FileConfig::default(), FileConfig::default());
        assert_eq!(d.root, PathBuf::from(DEFAULT_ROOT));
        assert_eq!(d.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(d.metrics_addr, DEFAULT_METRICS_ADDR);
        assert_eq!(d.scan_interval, DEFAULT_SCAN_INTERVAL);
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
