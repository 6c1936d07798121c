//! `cargo xtask bench df`: disk usage with 1,000 containers that wrote 10 MiB each, `strata
//! system df -v` beside `docker system df -v`, and (`scrape`) Strata's `/metrics` latency and
//! size with those containers.
//!
//! The 10 MiB go straight into each container's upper directory from the host (Docker cannot
//! run a container on this machine, and how the bytes got there does not matter to either
//! daemon's accounting). Strata's `df` reads sizes its background scanner measured, so the
//! timing starts only once `df` reports all of them; Docker walks every upper dir per call.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hyper::Method;
use serde_json::Value;
use strata_testkit::{Dockerd, Stratad, busybox_image};

use crate::bench;
use crate::bench_containers::{ApiConnection, IMAGE, Side, fill, ms, time_command};
use crate::bench_report::{Figure, quantile};
use crate::workspace_root;

/// Issue 7's targets.
const TARGET_DF_SPEED_UP: f64 = 10.0;
const TARGET_SCRAPE_MS: f64 = 50.0;

#[derive(Debug)]
pub(crate) struct Options {
    containers: usize,
    mib: usize,
    runs: usize,
    dir: PathBuf,
    docker: bool,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            containers: 1000,
            mib: 10,
            runs: 5,
            dir: workspace_root().join("target/bench-df"),
            docker: true,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--df-containers" => options.containers = value()?.parse().context(arg.clone())?,
                "--df-mib" => options.mib = value()?.parse().context(arg.clone())?,
                "--runs" => options.runs = value()?.parse().context("--runs")?,
                "--dir" => options.dir = PathBuf::from(value()?),
                "--skip-docker" => options.docker = false,
                other => bail!("unknown option {other}"),
            }
        }
        ensure!(
            options.containers > 0 && options.runs > 0,
            "--df-containers and --runs must be positive"
        );
        Ok(options)
    }
}

/// Writes `data` as `mib`-MiB-file `bench-data` into each upper dir.
fn write_into(uppers: &[PathBuf], data: &[u8]) -> Result<()> {
    for upper in uppers {
        let path = upper.join("bench-data");
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        file.write_all(data)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn json(bytes: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(bytes).with_context(|| format!("{what} is not JSON"))
}

/// The upper dirs of every container of `side`.
async fn uppers(side: Side, api: &mut ApiConnection, strata_root: &Path) -> Result<Vec<PathBuf>> {
    match side {
        Side::Strata => {
            let listed = json(
                &api.call(Method::GET, "/v1/containers", None).await?,
                "the list",
            )?;
            Ok(listed
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["id"].as_str())
                .map(|id| strata_root.join("overlay2").join(id).join("diff"))
                .collect())
        }
        Side::Docker => {
            let listed = json(
                &api.call(Method::GET, "/containers/json?all=1", None)
                    .await?,
                "docker's list",
            )?;
            let mut out = Vec::new();
            for id in listed
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["Id"].as_str())
            {
                let c = json(
                    &api.call(Method::GET, &format!("/containers/{id}/json"), None)
                        .await?,
                    "docker's inspect",
                )?;
                let upper = c["GraphDriver"]["Data"]["UpperDir"]
                    .as_str()
                    .with_context(|| format!("container {id} has no upper dir: {c}"))?;
                out.push(PathBuf::from(upper));
            }
            Ok(out)
        }
    }
}

/// `options.containers` containers on `side`, each with `data` written into its upper dir.
fn populate(
    runtime: &tokio::runtime::Runtime,
    side: Side,
    socket: &Path,
    strata_root: &Path,
    options: &Options,
    data: &[u8],
) -> Result<()> {
    eprintln!(
        "{}: {} containers, {} MiB written into each",
        side.name(),
        options.containers,
        options.mib
    );
    let (made, _) = runtime.block_on(fill(side, socket, options.containers, None))?;
    ensure!(
        made == options.containers,
        "{} made {made} containers",
        side.name()
    );
    let uppers = runtime.block_on(uppers(side, &mut ApiConnection::new(socket), strata_root))?;
    write_into(&uppers, data)
}

/// Waits until Strata's `df` counts every container's bytes (its scanner measures in the
/// background).
async fn wait_for_sizes(api: &mut ApiConnection, expected: u64) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let df = json(&api.call(Method::GET, "/v1/system/df", None).await?, "df")?;
        let counted = df["containers_rw_bytes"].as_u64().unwrap_or(0);
        if counted >= expected {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_mins(5) {
            bail!("strata's df counts {counted} of {expected} bytes after 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET /metrics` `runs` times: the latencies and the size of the last answer.
fn scrape(daemon: &Stratad, runs: usize) -> (Vec<Duration>, usize) {
    let mut times = Vec::with_capacity(runs);
    let mut size = 0;
    for _ in 0..runs {
        let start = Instant::now();
        size = daemon.metrics().len();
        times.push(start.elapsed());
    }
    (times, size)
}

pub(crate) fn df(options: &Options) -> Result<Vec<Figure>> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the df benchmark needs root (overlay mounts, dockerd)"
    );
    let (stratad, strata_cli) = bench::build_release_binaries()?;
    let work = bench::work_dir(&options.dir)?;
    let archive = work.path().join("busybox.tar");
    std::fs::write(&archive, busybox_image(IMAGE).docker_save_legacy())?;
    let strata = Stratad::start_in(&stratad, work.path());
    bench::strata_import(&strata, &strata_cli, &archive);
    let docker = if options.docker {
        let docker = Dockerd::try_start()?;
        docker.load(&archive);
        Some(docker)
    } else {
        None
    };
    let data: Vec<u8> = (0..options.mib << 20)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();
    let expected = (options.containers * data.len()) as u64;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut sides = vec![(Side::Strata, strata.socket().to_path_buf())];
    if let Some(d) = &docker {
        sides.push((Side::Docker, d.socket().to_path_buf()));
    }
    for (side, socket) in &sides {
        populate(&runtime, *side, socket, strata.root(), options, &data)?;
    }
    let settled = runtime.block_on(wait_for_sizes(
        &mut ApiConnection::new(strata.socket()),
        expected,
    ))?;
    eprintln!(
        "strata's scanner counted every byte {:.1} s after the writes",
        settled.as_secs_f64()
    );

    // Interleaved: each run times both CLIs, one after the other, alternating who goes first.
    let mut strata_times = Vec::new();
    let mut docker_times = Vec::new();
    let time_strata = |times: &mut Vec<Duration>| -> Result<()> {
        let command = || {
            let mut c = strata.command(&strata_cli);
            c.args(["system", "df", "-v"]);
            c
        };
        times.extend(time_command(command, 1)?.0);
        Ok(())
    };
    let time_docker = |times: &mut Vec<Duration>| -> Result<()> {
        if let Some(d) = &docker {
            let command = || -> Command {
                let mut c = d.command();
                c.args(["system", "df", "-v"]);
                c
            };
            times.extend(time_command(command, 1)?.0);
        }
        Ok(())
    };
    for run in 0..options.runs {
        if run % 2 == 0 {
            time_strata(&mut strata_times)?;
            time_docker(&mut docker_times)?;
        } else {
            time_docker(&mut docker_times)?;
            time_strata(&mut strata_times)?;
        }
    }
    let (scrapes, size) = scrape(&strata, options.runs * 4);
    drop(docker);
    drop(strata);
    work.close().context("removing the work directory")?;

    Ok(figures(
        options,
        &strata_times,
        &docker_times,
        &scrapes,
        size,
    ))
}

/// Issue 7's targets: df >= 10x Docker; a scrape under 50 ms at 1,000 containers.
fn figures(
    options: &Options,
    strata_times: &[Duration],
    docker_times: &[Duration],
    scrapes: &[Duration],
    size: usize,
) -> Vec<Figure> {
    let strata_ms = ms(quantile(strata_times, 50));
    let what = format!(
        "`system df -v`, {} containers of {} MiB",
        options.containers, options.mib
    );
    let mut df = Figure::new("df", what, format!("{strata_ms:.1} ms"));
    if !docker_times.is_empty() {
        let docker_ms = ms(quantile(docker_times, 50));
        df = df
            .peer(
                format!("`docker system df -v` {docker_ms:.0} ms"),
                format!("{:.1}x faster", docker_ms / strata_ms),
            )
            .target(
                format!(">= {TARGET_DF_SPEED_UP:.0}x faster"),
                docker_ms / strata_ms >= TARGET_DF_SPEED_UP,
            );
    }
    let scrape_ms = ms(quantile(scrapes, 50));
    let scrape = Figure::new(
        "scrape",
        format!(
            "`GET /metrics`, {} containers ({} KiB)",
            options.containers,
            size >> 10
        ),
        format!("{scrape_ms:.1} ms"),
    )
    .target(
        format!("< {TARGET_SCRAPE_MS:.0} ms"),
        scrape_ms < TARGET_SCRAPE_MS,
    );
    println!("df: strata {strata_ms:.1} ms; scrape {scrape_ms:.1} ms for {size} bytes");
    vec![df, scrape]
}
