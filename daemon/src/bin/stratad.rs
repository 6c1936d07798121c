//! `stratad`: opens the store, serves the API on a unix socket and `/metrics` over TCP, scans
//! writable layers in the background, until SIGTERM or SIGINT.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use strata_daemon::api::{AppState, router};
use strata_daemon::config::{Config, DEFAULT_CONFIG, FileConfig};
use strata_daemon::copyup::Attribution;
use strata_daemon::metrics::{Metrics, ScanResults, track_api_latency};
use strata_store::{ScanCache, Store, StoreOptions};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

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
    /// Address of the Prometheus `/metrics` endpoint [default: 127.0.0.1:9750]
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Seconds between scans of containers' writable layers [default: 30]
    #[arg(long)]
    scan_interval: Option<u64>,
    /// Group owning the API socket (mode 0660): its members may use the API [default: root's]
    #[arg(long)]
    socket_group: Option<String>,
    /// TOML config file with the same keys (root, socket, driver, log, `metrics_addr`, `scan_interval`)
    #[arg(long)]
    config: Option<PathBuf>,
    /// Recover a store whose database is refused as corrupt, then exit (see docs/recovery.md):
    /// readable records go into a fresh database, the damaged file and unnamed directories are
    /// kept aside
    #[arg(long)]
    salvage: bool,
}

/// glibc gives every thread that allocates its own malloc arena (up to 8 per core), and an
/// arena keeps what was freed in it: with the request threads of a busy daemon, the resident
/// size grows by arenas, not by data (measured: 123 MiB after 10,000 concurrent creates and a
/// few listings, 42 MiB with two arenas; `cargo xtask bench containers` has the figures). Two
/// arenas are plenty for a daemon whose threads mostly wait on the disk. Must run before any
/// thread is started.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
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
    let flags = FileConfig {
        root: args.root,
        socket: args.socket,
        driver: args.driver,
        log: None,
        metrics_addr: args.metrics_addr,
        scan_interval: args.scan_interval,
        socket_group: args.socket_group,
    };
    let config = Config::merge(file, flags);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if args.salvage {
        return salvage(&config);
    }
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

/// `--salvage`: a report for the operator on stdout, nonzero exit if it could not be done.
fn salvage(config: &Config) -> ExitCode {
    let opts = StoreOptions {
        root: config.root.clone(),
        driver: config.driver.clone(),
    };
    let report = match Store::salvage(&opts) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("stratad: error: salvaging {}: {e}", config.root.display());
            return ExitCode::FAILURE;
        }
    };
    println!("salvaged {}:", config.root.display());
    println!(
        "  kept {} layer(s), {} image(s), {} container(s), {} volume(s)",
        report.layers, report.images, report.containers, report.volumes
    );
    println!(
        "  damaged database kept as {}",
        report.damaged_copy.display()
    );
    for line in &report.lost {
        println!("  lost: {line}");
    }
    for dir in &report.set_aside {
        println!("  set aside: {}", dir.display());
    }
    for volume in &report.adopted_volumes {
        println!("  recorded again: volume {volume} (its labels were lost)");
    }
    for f in &report.fsck.findings {
        let state = if f.repaired { "repaired" } else { "left" };
        println!(
            "  fsck: {state}: {} {}: {}",
            f.check.name(),
            f.object,
            f.problem
        );
    }
    ExitCode::SUCCESS
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
    let store = Arc::new(store);
    let attribution = Arc::new(Attribution::new(
        strata_daemon::copyup::start_probe(),
        &store.mounted_container_devices(),
    ));
    let observer = attribution.clone();
    store.set_mount_observer(Box::new(move |event| observer.observe(event)));

    let scans = ScanResults::default();
    let metrics = Arc::new(Metrics::new(
        store.clone(),
        attribution.clone(),
        scans.clone(),
    ));
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {}", config.metrics_addr))?;
    let metrics_bound = metrics_listener.local_addr().unwrap_or(config.metrics_addr);
    tracing::info!(addr = %metrics_bound, "serving /metrics");
    let listener = bind(&config.socket, config.socket_group.as_deref())?;
    tracing::info!(socket = %config.socket.display(), "listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(scan_layers(
        store.clone(),
        scans.clone(),
        Duration::from_secs(config.scan_interval),
        stop_rx.clone(),
    ));
    let metrics_app = axum::Router::new()
        .route("/metrics", axum::routing::get(serve_metrics))
        .with_state(metrics.clone());
    let metrics_server = tokio::spawn(
        axum::serve(metrics_listener, metrics_app)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    let app = router(AppState {
        store,
        attribution,
        scans,
    })
    .route_layer(axum::middleware::from_fn_with_state(
        metrics,
        track_api_latency,
    ));
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let served = strata_daemon::api::serve::serve(listener, app, stopped(stop_rx)).await;
    let _ = std::fs::remove_file(&config.socket);
    served.context("serving the API")?;
    if let Ok(Err(e)) = metrics_server.await {
        tracing::warn!(error = %e, "metrics endpoint ended with an error");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn serve_metrics(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match metrics.encode() {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Scans containers' writable layers on an interval: sizes for listings (recorded) and
/// copied-up files and bytes for `/metrics`; also refreshes volume sizes.
async fn scan_layers(
    store: Arc<Store>,
    results: ScanResults,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let cache = Arc::new(std::sync::Mutex::new(ScanCache::default()));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (store, cache, results) = (store.clone(), cache.clone(), results.clone());
        let scanned = tokio::task::spawn_blocking(move || {
            let mut cache = cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let scans = store.scan_writable_layers(&mut cache)?;
            *results
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = scans;
            store.refresh_volume_sizes(every)
        })
        .await;
        match scanned {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "scanning writable layers"),
            Err(e) => tracing::error!(error = %e, "layer scanner panicked"),
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

/// The socket is `root:GROUP` mode 0660: root and the group's members may use the API (which
/// can run commands in containers as any user: membership is as good as root, as with the
/// docker group).
fn bind(path: &Path, group: Option<&str>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let gid = group
        .map(|name| match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Ok(g.gid),
            Ok(None) => bail!("socket group {name:?} does not exist"),
            Err(e) => Err(e).with_context(|| format!("looking up group {name:?}")),
        })
        .transpose()?;
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting mode 0660 on {}", path.display()))?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid))
            .with_context(|| format!("giving {} to group {gid}", path.display()))?;
    }
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
