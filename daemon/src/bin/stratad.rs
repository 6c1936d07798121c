//! `stratad`: opens the store and serves the API on a unix socket until SIGTERM or SIGINT.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use strata_daemon::api::{AppState, router};
use strata_daemon::config::{Config, DEFAULT_CONFIG, FileConfig};
use strata_store::{Store, StoreOptions};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};

/// The Strata storage daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Store root (database, layers, staging) [default: /var/lib/strata]
    #[arg(long)]
    root: Option<PathBuf>,
    /// API socket [default: /run/strata/strata.sock]
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Storage driver: overlay2 or vfs [default: overlay2]
    #[arg(long)]
    driver: Option<String>,
    /// TOML config file with the same keys (root, socket, driver, log)
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let named = args.config.is_some();
    let config_path = args.config.clone().unwrap_or_else(|| DEFAULT_CONFIG.into());
    let file = match FileConfig::load(&config_path, named) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("stratad: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = Config::merge(file, args.root, args.socket, args.driver);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stratad: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("stratad: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    claim_socket(&config.socket).await?;
    let opts = StoreOptions {
        root: config.root.clone(),
        driver: config.driver.clone(),
    };
    let (store, report) = tokio::task::spawn_blocking(move || Store::open(&opts))
        .await?
        .with_context(|| format!("opening store at {}", config.root.display()))?;
    tracing::info!(
        root = %store.root().display(),
        driver = store.driver_name(),
        removed_tmp = report.removed_tmp.len(),
        removed_orphans = report.removed_orphans.len(),
        unmounted_stale = report.unmounted_stale.len(),
        "store open"
    );
    let listener = bind(&config.socket)?;
    tracing::info!(socket = %config.socket.display(), "listening");
    let store = Arc::new(store);
    tokio::spawn(refresh_sizes(store.clone()));
    let app = router(AppState { store });
    let served = strata_daemon::api::serve::serve(listener, app, shutdown_signal()).await;
    let _ = std::fs::remove_file(&config.socket);
    served.context("serving the API")?;
    tracing::info!("stopped");
    Ok(())
}

/// How stale a container's recorded writable-layer size may get before the refresher
/// measures it again, and how often the refresher looks.
const SIZE_MAX_AGE: Duration = Duration::from_mins(1);
const SIZE_REFRESH_EVERY: Duration = Duration::from_secs(15);

/// Keeps containers' writable-layer sizes current in the background, so `container ls
/// --size` and `system df` read records instead of walking upper dirs.
async fn refresh_sizes(store: Arc<Store>) {
    let mut tick = tokio::time::interval(SIZE_REFRESH_EVERY);
    loop {
        tick.tick().await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.refresh_container_sizes(SIZE_MAX_AGE)).await
        {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::debug!(containers = n, "refreshed writable-layer sizes"),
            Ok(Err(e)) => tracing::warn!(error = %e, "refreshing writable-layer sizes"),
            Err(e) => tracing::error!(error = %e, "size refresher panicked"),
        }
    }
}

/// Refuses to start when a live daemon answers on the socket; removes a stale socket file.
async fn claim_socket(path: &Path) -> anyhow::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        );
    }
    if UnixStream::connect(path).await.is_ok() {
        bail!("another stratad is already listening on {}", path.display());
    }
    std::fs::remove_file(path)
        .with_context(|| format!("removing stale socket {}", path.display()))?;
    tracing::info!(socket = %path.display(), "removed stale socket");
    Ok(())
}

fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting mode 0660 on {}", path.display()))?;
    Ok(listener)
}

async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
