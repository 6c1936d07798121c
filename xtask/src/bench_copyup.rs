//! `cargo xtask bench copyup`: what copying a 100 MiB file up through a container costs, beside
//! `cp` of the same file on the same filesystem (the kernel's own copy, the floor).
//!
//! Each run makes a fresh container from an image whose top layer holds the file, mounts it
//! through the API, and times the host's `open(O_WRONLY | O_APPEND)` of the file through the
//! merged directory, which is where overlayfs copies it up; then it times copying the layer's
//! file to a scratch path on the same filesystem, and that copy's fsync (overlayfs syncs what
//! it copied up). Runs alternate which goes first.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hyper::Method;
use serde_json::{Value, json};
use strata_testkit::{LayerBuilder, Stratad, busybox_image};

use crate::bench;
use crate::bench_containers::{ApiConnection, ms};
use crate::bench_report::{Figure, quantile};
use crate::workspace_root;

const TAG: &str = "strata-bench/copyup:latest";

#[derive(Debug)]
pub(crate) struct Options {
    mib: usize,
    runs: usize,
    dir: PathBuf,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            mib: 100,
            runs: 7,
            dir: workspace_root().join("target/bench-copyup"),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--copyup-mib" => options.mib = value()?.parse().context("--copyup-mib")?,
                "--runs" => options.runs = value()?.parse().context("--runs")?,
                "--dir" => options.dir = PathBuf::from(value()?),
                other => bail!("unknown option {other}"),
            }
        }
        ensure!(
            options.mib > 0 && options.runs > 0,
            "--copyup-mib and --runs must be positive"
        );
        Ok(options)
    }
}

/// The copy-up: opening the lower file for append through the container's merged directory.
fn copy_up(merged: &Path) -> Result<Duration> {
    let start = Instant::now();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(merged.join("big/blob"))
        .context("opening the file through the container")?;
    let elapsed = start.elapsed();
    file.write_all(b"!")?;
    Ok(elapsed)
}

/// The busybox image with a top layer holding `big/blob` of `mib` MiB; returns its archive.
fn write_image(dir: &Path, mib: usize) -> Result<PathBuf> {
    let mut image = busybox_image(TAG);
    let mut layer = LayerBuilder::new();
    let content: Vec<u8> = (0..mib << 20)
        .map(|i| u8::try_from(i % 253).unwrap_or(0))
        .collect();
    layer.dir("big", 0o755).file("big/blob", &content, 0o644);
    image.layers.push(layer.build());
    let archive = dir.join("copyup.tar");
    std::fs::write(&archive, image.docker_save_legacy())?;
    Ok(archive)
}

/// Creates and mounts a container of the image, copies the file up, removes the container.
async fn copy_up_in_a_fresh_container(api: &mut ApiConnection) -> Result<Duration> {
    let body = json!({ "image": TAG });
    let created = parse(
        &api.call(Method::POST, "/v1/containers", Some(&body))
            .await?,
    )?;
    let id = created["id"]
        .as_str()
        .context("create answered no id")?
        .to_owned();
    let mount = format!("/v1/containers/mount?ref={id}");
    let mounted = parse(&api.call(Method::POST, &mount, None).await?)?;
    let merged = PathBuf::from(mounted["path"].as_str().context("no mount path")?);
    let took = copy_up(&merged)?;
    let remove = format!("/v1/containers?ref={id}&force=true");
    api.call(Method::DELETE, &remove, None).await?;
    Ok(took)
}

fn parse(bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).context("the daemon's answer is not JSON")
}

pub(crate) fn copyup(options: &Options) -> Result<Vec<Figure>> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the copy-up benchmark needs root (overlay mounts)"
    );
    let (stratad, strata_cli) = bench::build_release_binaries()?;
    let work = bench::work_dir(&options.dir)?;
    let archive = write_image(work.path(), options.mib)?;
    let strata = Stratad::start_in(&stratad, work.path());
    bench::strata_import(&strata, &strata_cli, &archive);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut api = ApiConnection::new(strata.socket());
    let layers = parse(&runtime.block_on(api.call(Method::GET, "/v1/layers", None))?)?;
    let lower = layers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["diff_path"].as_str())
        .map(|p| Path::new(p).join("big/blob"))
        .find(|p| p.exists())
        .context("no layer holds big/blob")?;

    let mut copy_ups = Vec::new();
    let mut copies = Vec::new();
    let mut copies_synced = Vec::new();
    for run in 0..=options.runs {
        let mut one_copy_up = || runtime.block_on(copy_up_in_a_fresh_container(&mut api));
        // overlayfs fsyncs a file it copied up (`ovl_copy_up_data`, unless mounted volatile):
        // `cp` and then fsync is the floor with the same durability.
        let one_copy = || -> Result<(Duration, Duration)> {
            let to = work.path().join(format!("copy-{run}"));
            let start = Instant::now();
            std::fs::copy(&lower, &to).context("cp of the layer's file")?;
            let copied = start.elapsed();
            std::fs::File::open(&to)?.sync_all()?;
            let synced = start.elapsed();
            std::fs::remove_file(&to)?;
            Ok((copied, synced))
        };
        let (a, b) = if run % 2 == 0 {
            let a = one_copy_up()?;
            (a, one_copy()?)
        } else {
            let b = one_copy()?;
            (one_copy_up()?, b)
        };
        // Run 0 warms the page cache for both; it is not reported.
        if run > 0 {
            copy_ups.push(a);
            copies.push(b.0);
            copies_synced.push(b.1);
        }
    }
    drop(strata);
    work.close().context("removing the work directory")?;
    let (up, cp, synced) = (
        ms(quantile(&copy_ups, 50)),
        ms(quantile(&copies, 50)),
        ms(quantile(&copies_synced, 50)),
    );
    println!(
        "copy-up of {} MiB: {up:.1} ms through the container; cp {cp:.1} ms, cp && fsync {synced:.1} ms",
        options.mib
    );
    let what = format!(
        "copy-up of a {} MiB file, median of {}",
        options.mib, options.runs
    );
    Ok(vec![
        Figure::new("copyup", what.clone(), format!("{up:.1} ms")).peer(
            format!("cp {cp:.1} ms"),
            format!("{:.2}x the time of cp", up / cp),
        ),
        Figure::new("copyup", what, format!("{up:.1} ms")).peer(
            format!("cp && fsync {synced:.1} ms"),
            format!("{:.2}x the time of cp && fsync", up / synced),
        ),
    ])
}
