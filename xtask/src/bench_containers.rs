//! `cargo xtask bench containers`: the container lifecycle and container listing, Strata beside
//! Docker in one run (issue 3).
//!
//! - Create cycle: Strata's create, mount, unmount and remove of one container through its API
//!   against Docker's `POST /containers/create` and `DELETE /containers/{id}` (dockerd 20.10
//!   mounts and unmounts the new layer inside create, to prepare volumes). Blocks of cycles
//!   alternate between the daemons (ABBA), so noise from other work on the shared machine
//!   falls on both; p50 and p99 are reported, with each daemon's time per step.
//! - Listing: many containers created concurrently through each API, then `strata container ls
//!   -a --json` and `docker ps -a --format '{{json .}}'` timed end to end (medians), and each
//!   daemon's list endpoint alone, which tells the CLI's share from the daemon's.
//!
//! Both daemons are driven by the same small HTTP client (in a release build of xtask) over a
//! kept-alive unix socket connection, so the comparison measures the daemons, not clients or
//! process start-up.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use strata_testkit::{Dockerd, Stratad, busybox_image};
use tokio::net::UnixStream;

use crate::bench_report::{Figure, quantile};
use crate::{bench, workspace_root};

pub(crate) const IMAGE: &str = "strata-bench/busybox:latest";
/// Unrecorded cycles per daemon before measuring: caches, allocator, first-use paths.
const WARM_UP_CYCLES: usize = 10;
/// Cycles in a row on one daemon. Blocks alternate ABBA between the daemons, so drift over the
/// run falls on both, while the background work a daemon leaves after its cycles (deletions,
/// syncs) mostly lands on its own next cycle rather than on the other daemon's.
const CYCLE_BLOCK: usize = 25;
/// Requests in flight while filling a daemon with containers.
const CREATE_WORKERS: usize = 8;
/// Issue 3's targets.
const TARGET_CYCLE_SPEED_UP: f64 = 5.0;
const TARGET_LIST_MS: f64 = 200.0;
const TARGET_LIST_COUNT: usize = 10_000;

#[derive(Debug)]
pub(crate) struct Options {
    cycles: usize,
    containers: usize,
    runs: usize,
    docker_budget: Duration,
    dir: PathBuf,
    docker: bool,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            cycles: 500,
            containers: TARGET_LIST_COUNT,
            runs: 5,
            docker_budget: Duration::from_mins(3),
            dir: workspace_root().join("target/bench-containers"),
            docker: true,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--cycles" => options.cycles = value()?.parse().context("--cycles")?,
                "--containers" => options.containers = value()?.parse().context("--containers")?,
                "--runs" => options.runs = value()?.parse().context("--runs")?,
                "--docker-budget-secs" => {
                    options.docker_budget =
                        Duration::from_secs(value()?.parse().context("--docker-budget-secs")?);
                }
                "--dir" => options.dir = PathBuf::from(value()?),
                "--skip-docker" => options.docker = false,
                other => bail!("unknown option {other}"),
            }
        }
        if options.cycles == 0 || options.containers == 0 || options.runs == 0 {
            bail!("--cycles, --containers and --runs must be positive");
        }
        Ok(options)
    }
}

/// One HTTP/1.1 connection to a daemon's unix socket, kept alive across requests and reopened
/// when the daemon closes it.
pub(crate) struct ApiConnection {
    socket: PathBuf,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl ApiConnection {
    pub(crate) fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
            sender: None,
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .with_context(|| format!("connecting to {}", self.socket.display()))?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the daemon closes; nothing to report.
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends one request; returns the body of a 2xx answer, fails on any other.
    pub(crate) async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Bytes> {
        let mut sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        sender.ready().await?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, "localhost");
        let payload = match body {
            Some(value) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(value)?)
            }
            None => Bytes::new(),
        };
        let response = sender
            .send_request(request.body(Full::new(payload))?)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let answer = response.into_body().collect().await?.to_bytes();
        self.sender = Some(sender);
        if !status.is_success() {
            bail!(
                "{method} {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&answer).trim()
            );
        }
        Ok(answer)
    }
}

/// The daemon under test; each speaks its own API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Strata,
    Docker,
}

impl Side {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Side::Strata => "strata",
            Side::Docker => "docker",
        }
    }

    /// The steps of one cycle, as reported.
    fn steps(self) -> &'static [&'static str] {
        match self {
            Side::Strata => &["create", "mount", "unmount", "remove"],
            Side::Docker => &["create", "remove"],
        }
    }

    async fn create(self, api: &mut ApiConnection) -> Result<String> {
        let (path, body, id_key) = match self {
            Side::Strata => ("/v1/containers", json!({ "image": IMAGE }), "id"),
            // No network: storage is what is compared, and the private dockerd has no bridge.
            Side::Docker => (
                "/containers/create",
                json!({ "Image": IMAGE, "HostConfig": { "NetworkMode": "none" } }),
                "Id",
            ),
        };
        let answer = api.call(Method::POST, path, Some(&body)).await?;
        let created: Value = serde_json::from_slice(&answer)
            .with_context(|| format!("{} create answered non-JSON", self.name()))?;
        created[id_key]
            .as_str()
            .map(str::to_owned)
            .with_context(|| {
                format!(
                    "{} create answered without {id_key}: {created}",
                    self.name()
                )
            })
    }

    /// One cycle; returns the time of each of [`steps`](Self::steps).
    async fn cycle(self, api: &mut ApiConnection) -> Result<Vec<Duration>> {
        let mut times = Vec::with_capacity(4);
        let mut start = Instant::now();
        let mut lap = |times: &mut Vec<Duration>| {
            let now = Instant::now();
            times.push(now - start);
            start = now;
        };
        let id = self.create(api).await?;
        lap(&mut times);
        match self {
            Side::Strata => {
                let mount = format!("/v1/containers/mount?ref={id}");
                api.call(Method::POST, &mount, None).await?;
                lap(&mut times);
                let unmount = format!("/v1/containers/unmount?ref={id}");
                api.call(Method::POST, &unmount, None).await?;
                lap(&mut times);
                let remove = format!("/v1/containers?ref={id}");
                api.call(Method::DELETE, &remove, None).await?;
            }
            Side::Docker => {
                api.call(Method::DELETE, &format!("/containers/{id}"), None)
                    .await?;
            }
        }
        lap(&mut times);
        Ok(times)
    }

    /// The list endpoint's raw answer. Decoding is left to the caller, outside the timing:
    /// xtask is a debug build, where parsing 10,000 entries costs more than the request.
    async fn list(self, api: &mut ApiConnection) -> Result<Bytes> {
        let path = match self {
            Side::Strata => "/v1/containers",
            Side::Docker => "/containers/json?all=1",
        };
        api.call(Method::GET, path, None).await
    }
}

/// The number of entries in a JSON array.
fn json_array_len(bytes: &[u8], what: &str) -> Result<usize> {
    serde_json::from_slice::<Value>(bytes)
        .with_context(|| format!("{what} is not JSON"))?
        .as_array()
        .map(Vec::len)
        .with_context(|| format!("{what} is not a JSON array"))
}

/// Creates up to `count` containers with [`CREATE_WORKERS`] requests in flight, stopping
/// early at `deadline`; returns how many were made and how long it took.
pub(crate) async fn fill(
    side: Side,
    socket: &Path,
    count: usize,
    deadline: Option<Instant>,
) -> Result<(usize, Duration)> {
    let start = Instant::now();
    let claimed = Arc::new(AtomicUsize::new(0));
    let made = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CREATE_WORKERS {
        let (claimed, made) = (claimed.clone(), made.clone());
        let mut api = ApiConnection::new(socket);
        workers.spawn(async move {
            while deadline.is_none_or(|d| Instant::now() < d)
                && claimed.fetch_add(1, Ordering::Relaxed) < count
            {
                side.create(&mut api).await?;
                let done = made.fetch_add(1, Ordering::Relaxed) + 1;
                if done % 1000 == 0 {
                    eprintln!(
                        "  {}: {done} containers, {:.1} s",
                        side.name(),
                        start.elapsed().as_secs_f64()
                    );
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("a create worker panicked")??;
    }
    Ok((made.load(Ordering::Relaxed), start.elapsed()))
}

/// Runs `command` `runs` times; returns the wall time of each run and the stdout of the last.
pub(crate) fn time_command(
    mut command: impl FnMut() -> Command,
    runs: usize,
) -> Result<(Vec<Duration>, Vec<u8>)> {
    let mut times = Vec::with_capacity(runs);
    let mut stdout = Vec::new();
    for _ in 0..runs {
        let mut command = command();
        command.stdin(Stdio::null());
        let start = Instant::now();
        let output = command
            .output()
            .with_context(|| format!("running {command:?}"))?;
        times.push(start.elapsed());
        if !output.status.success() {
            bail!(
                "{command:?} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        stdout = output.stdout;
    }
    Ok((times, stdout))
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Counts fit in u32 for any practical run, and f64 holds u32 exactly.
fn count_f64(n: usize) -> f64 {
    f64::from(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The recorded cycles of one daemon: total per cycle, and per step.
#[derive(Debug)]
struct Cycles {
    side: Side,
    total: Vec<Duration>,
    steps: Vec<Vec<Duration>>,
}

impl Cycles {
    fn new(side: Side, cycles: usize) -> Self {
        Self {
            side,
            total: Vec::with_capacity(cycles),
            steps: vec![Vec::with_capacity(cycles); side.steps().len()],
        }
    }

    fn record(&mut self, times: &[Duration]) {
        self.total.push(times.iter().sum());
        for (step, &time) in self.steps.iter_mut().zip(times) {
            step.push(time);
        }
    }

    fn step_summary(&self) -> String {
        self.side
            .steps()
            .iter()
            .zip(&self.steps)
            .map(|(name, times)| {
                format!(
                    "{name} {:.2}/{:.2}",
                    ms(quantile(times, 50)),
                    ms(quantile(times, 99))
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One daemon's listing figures.
#[derive(Debug)]
struct Listing {
    /// Containers created, and the time it took.
    filled: usize,
    fill_time: Duration,
    /// Entries the CLI printed, and its wall time per run.
    cli_count: usize,
    cli: Vec<Duration>,
    /// Wall time of the list endpoint alone per run.
    api: Vec<Duration>,
}

struct Daemons {
    strata: Stratad,
    strata_cli: PathBuf,
    docker: Option<Dockerd>,
}

pub(crate) fn containers(options: &Options) -> Result<Vec<Figure>> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the containers benchmark needs root (overlay mounts, dockerd)");
    }
    let (stratad, strata_cli) = bench::build_release_binaries()?;
    let work = bench::work_dir(&options.dir)?;
    let archive = work.path().join("busybox.tar");
    std::fs::write(&archive, busybox_image(IMAGE).docker_save_legacy())
        .with_context(|| format!("writing {}", archive.display()))?;

    eprintln!("starting stratad; its idle memory, then importing {IMAGE}");
    let strata = Stratad::start_in(&stratad, work.path());
    // A few scan intervals, so the idle figure includes the background work.
    std::thread::sleep(Duration::from_secs(3));
    let idle = memory(&strata)?;
    bench::strata_import(&strata, &strata_cli, &archive);
    let docker = if options.docker {
        eprintln!("starting a private dockerd and loading {IMAGE}");
        let docker = Dockerd::try_start()?;
        docker.load(&archive);
        Some(docker)
    } else {
        None
    };
    let daemons = Daemons {
        strata,
        strata_cli,
        docker,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let cycles = runtime.block_on(create_cycles(&daemons, options.cycles))?;
    let strata_listing = listing(&runtime, &daemons, Side::Strata, options)?;
    let docker_listing = if daemons.docker.is_some() {
        Some(listing(&runtime, &daemons, Side::Docker, options)?)
    } else {
        None
    };
    // With every container listed and scanned at least once (the scanner's interval is 1 s).
    std::thread::sleep(Duration::from_secs(3));
    let loaded = memory(&daemons.strata)?;
    print_summary(options, &cycles, &strata_listing, docker_listing.as_ref());
    println!(
        "stratad memory: idle RSS {:.1} MiB; with {} containers RSS {:.1} MiB, peak {:.1} MiB",
        mib(idle.rss),
        strata_listing.filled,
        mib(loaded.rss),
        mib(loaded.peak)
    );
    let figures = figures(
        &cycles,
        &strata_listing,
        docker_listing.as_ref(),
        idle,
        loaded,
    );

    eprintln!("cleaning up: stopping the daemons, removing their data roots");
    drop(daemons);
    work.close().context("removing the work directory")?;
    Ok(figures)
}

/// stratad's resident memory now and at its peak, in bytes (`/proc/PID/status`).
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    peak: u64,
}

fn memory(daemon: &Stratad) -> Result<Memory> {
    let pid = daemon.pid().context("stratad is not running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading stratad's /proc status")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib << 10)
            .with_context(|| format!("{name} missing from /proc/{pid}/status"))
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

fn mib(bytes: u64) -> f64 {
    f64::from(u32::try_from(bytes >> 10).unwrap_or(u32::MAX)) / 1024.0
}

/// The targets of issues 3 and 7: create cycle >= 5x Docker; listing 10,000 under 200 ms and
/// >= 10x Docker; idle RSS < 30 MiB, < 150 MiB with 10,000 containers.
fn figures(
    cycles: &[Cycles],
    strata: &Listing,
    docker: Option<&Listing>,
    idle: Memory,
    loaded: Memory,
) -> Vec<Figure> {
    let of = |side: Side| cycles.iter().find(|c| c.side == side);
    let mut out = Vec::new();
    if let Some(s) = of(Side::Strata) {
        for q in [50, 99] {
            let strata_ms = ms(quantile(&s.total, q));
            let mut f = Figure::new(
                "containers",
                format!("create+mount+unmount+remove, p{q} of {}", s.total.len()),
                format!("{strata_ms:.2} ms"),
            );
            if let Some(d) = of(Side::Docker) {
                let docker_ms = ms(quantile(&d.total, q));
                f = f.peer(
                    format!("docker create+remove {docker_ms:.2} ms"),
                    format!("{:.1}x faster", docker_ms / strata_ms),
                );
                if q == 50 {
                    f = f.target(
                        format!(">= {TARGET_CYCLE_SPEED_UP:.0}x faster"),
                        docker_ms / strata_ms >= TARGET_CYCLE_SPEED_UP,
                    );
                }
            }
            out.push(f);
        }
    }
    let list_ms = ms(quantile(&strata.cli, 50));
    let mut f = Figure::new(
        "containers",
        format!("`container ls -a --json`, {} containers", strata.filled),
        format!("{list_ms:.1} ms"),
    );
    let docker_ms = docker.map(|d| ms(quantile(&d.cli, 50)));
    if let (Some(d), Some(docker_ms)) = (docker, docker_ms) {
        f = f.peer(
            format!("`docker ps -a` ({}) {docker_ms:.0} ms", d.filled),
            format!("{:.1}x faster", docker_ms / list_ms),
        );
    }
    if strata.filled >= TARGET_LIST_COUNT {
        let fast_enough = docker_ms.is_none_or(|d| d / list_ms >= 10.0);
        f = f.target(
            format!("< {TARGET_LIST_MS:.0} ms, >= 10x docker"),
            list_ms < TARGET_LIST_MS && fast_enough,
        );
    }
    out.push(f);
    out.push(
        Figure::new(
            "memory",
            "stratad RSS, idle (empty store)",
            format!("{:.1} MiB", mib(idle.rss)),
        )
        .target("< 30 MiB", idle.rss < 30 << 20),
    );
    let mut f = Figure::new(
        "memory",
        format!(
            "stratad peak RSS, {} containers created and listed",
            strata.filled
        ),
        format!("{:.1} MiB", mib(loaded.peak)),
    );
    if strata.filled >= TARGET_LIST_COUNT {
        f = f.target("< 150 MiB", loaded.peak < 150 << 20);
    }
    out.push(f);
    out
}

/// Warms up, then runs `count` cycles on each daemon, in alternating blocks.
async fn create_cycles(daemons: &Daemons, count: usize) -> Result<Vec<Cycles>> {
    let mut sides = vec![(
        Side::Strata,
        ApiConnection::new(daemons.strata.socket()),
        Cycles::new(Side::Strata, count),
    )];
    if let Some(docker) = &daemons.docker {
        sides.push((
            Side::Docker,
            ApiConnection::new(docker.socket()),
            Cycles::new(Side::Docker, count),
        ));
    }
    eprintln!(
        "create cycles: {WARM_UP_CYCLES} warm-up, then {count} measured, in alternating blocks of {CYCLE_BLOCK}"
    );
    for (side, api, _) in &mut sides {
        for _ in 0..WARM_UP_CYCLES {
            side.cycle(api).await?;
        }
    }
    let start = Instant::now();
    for (block, first) in (0..count).step_by(CYCLE_BLOCK).enumerate() {
        // ABBA: each daemon goes first in every other pair of blocks.
        if block % 2 == 1 {
            sides.reverse();
        }
        for (side, api, cycles) in &mut sides {
            for i in first..count.min(first + CYCLE_BLOCK) {
                let times = side
                    .cycle(api)
                    .await
                    .with_context(|| format!("{} cycle {i}", side.name()))?;
                cycles.record(&times);
            }
        }
    }
    sides.sort_by_key(|(side, _, _)| *side != Side::Strata);
    eprintln!("  done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(sides.into_iter().map(|(_, _, cycles)| cycles).collect())
}

/// Fills one daemon with containers, then times its CLI listing and its list endpoint.
fn listing(
    runtime: &tokio::runtime::Runtime,
    daemons: &Daemons,
    side: Side,
    options: &Options,
) -> Result<Listing> {
    let (socket, deadline) = match (side, &daemons.docker) {
        (Side::Strata, _) => (daemons.strata.socket(), None),
        (Side::Docker, Some(docker)) => (
            docker.socket(),
            Some(Instant::now() + options.docker_budget),
        ),
        (Side::Docker, None) => bail!("docker is skipped"),
    };
    eprintln!(
        "{}: creating {} containers ({CREATE_WORKERS} requests in flight{})",
        side.name(),
        options.containers,
        if deadline.is_some() {
            format!(", at most {} s", options.docker_budget.as_secs())
        } else {
            String::new()
        }
    );
    let (filled, fill_time) = runtime.block_on(fill(side, socket, options.containers, deadline))?;
    eprintln!(
        "  {filled} containers in {:.1} s ({:.0}/s)",
        fill_time.as_secs_f64(),
        count_f64(filled) / fill_time.as_secs_f64()
    );

    let (cli, stdout) = match (side, &daemons.docker) {
        (Side::Strata, _) => time_command(
            || {
                let mut command = daemons.strata.command(&daemons.strata_cli);
                command.args(["container", "ls", "-a", "--json"]);
                command
            },
            options.runs,
        )?,
        (Side::Docker, Some(docker)) => time_command(
            || {
                // dockerd 20.10's client prints a literal "json" for `--format json` (a 23.0
                // addition); the template works with every version.
                let mut command = docker.command();
                command.args(["ps", "-a", "--format", "{{json .}}"]);
                command
            },
            options.runs,
        )?,
        (Side::Docker, None) => unreachable!("checked above"),
    };
    let cli_count = match side {
        Side::Strata => json_array_len(&stdout, "strata container ls --json's output")?,
        Side::Docker => stdout
            .split(|&b| b == b'\n')
            .filter(|line| line.starts_with(b"{"))
            .count(),
    };
    if cli_count != filled {
        bail!(
            "{} listed {cli_count} containers, expected {filled}",
            side.name()
        );
    }
    eprintln!(
        "  CLI listing: median {:.0} ms over {} runs",
        ms(quantile(&cli, 50)),
        options.runs
    );

    let api = runtime.block_on(async {
        let mut api = ApiConnection::new(socket);
        let mut times = Vec::with_capacity(options.runs);
        for _ in 0..options.runs {
            let start = Instant::now();
            let answer = side.list(&mut api).await?;
            times.push(start.elapsed());
            let listed = json_array_len(&answer, "the list endpoint's answer")?;
            if listed != filled {
                bail!("{} API listed {listed}, expected {filled}", side.name());
            }
        }
        anyhow::Ok(times)
    })?;
    Ok(Listing {
        filled,
        fill_time,
        cli_count,
        cli,
        api,
    })
}

fn print_summary(options: &Options, cycles: &[Cycles], strata: &Listing, docker: Option<&Listing>) {
    let of = |side: Side| cycles.iter().find(|c| c.side == side);
    let strata_cycles = of(Side::Strata).expect("strata always runs");
    let docker_cycles = of(Side::Docker);
    let cell = |value: Option<f64>, decimals: usize| {
        value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
    };
    let ratio =
        |s: f64, d: Option<f64>| d.map_or_else(|| "-".to_owned(), |d| format!("{:.1}x", d / s));
    let row = |label: &str, s: f64, d: Option<f64>, decimals: usize| {
        println!(
            "{label:<44} {:>12} {:>12} {:>14}",
            cell(Some(s), decimals),
            cell(d, decimals),
            ratio(s, d)
        );
    };

    println!();
    println!(
        "containers benchmark: {} create cycles per daemon (after {WARM_UP_CYCLES} warm-up, blocks of {CYCLE_BLOCK} alternating), \
         listing medians of {} runs",
        options.cycles, options.runs
    );
    println!(
        "{:<44} {:>12} {:>12} {:>14}",
        "", "strata", "docker", "docker/strata"
    );
    for (label, q) in [("create cycle p50 (ms)", 50), ("create cycle p99 (ms)", 99)] {
        row(
            label,
            ms(quantile(&strata_cycles.total, q)),
            docker_cycles.map(|c| ms(quantile(&c.total, q))),
            2,
        );
    }
    println!(
        "{:<44} {:>12} {:>12}",
        "containers listed",
        strata.cli_count,
        docker.map_or_else(|| "-".to_owned(), |d| d.cli_count.to_string())
    );
    row(
        "list via CLI, end to end (ms)",
        ms(quantile(&strata.cli, 50)),
        docker.map(|d| ms(quantile(&d.cli, 50))),
        1,
    );
    row(
        "list via API, GET only (ms)",
        ms(quantile(&strata.api, 50)),
        docker.map(|d| ms(quantile(&d.api, 50))),
        1,
    );
    let rate = |l: &Listing| count_f64(l.filled) / l.fill_time.as_secs_f64();
    let strata_rate = rate(strata);
    let docker_rate = docker.map(rate);
    println!(
        "{:<44} {:>12.0} {:>12} {:>14}",
        format!("bulk create, {CREATE_WORKERS} in flight (containers/s)"),
        strata_rate,
        cell(docker_rate, 0),
        docker_rate.map_or_else(|| "-".to_owned(), |d| format!("{:.1}x", strata_rate / d)),
    );
    println!();
    println!(
        "per step p50/p99 (ms): strata {}",
        strata_cycles.step_summary()
    );
    if let Some(d) = docker_cycles {
        println!("                       docker {}", d.step_summary());
    }
    if let Some(d) = docker.filter(|d| d.filled < options.containers) {
        println!(
            "docker reached {} of {} containers within the {} s budget; its listing is of {}",
            d.filled,
            options.containers,
            options.docker_budget.as_secs(),
            d.filled
        );
    }

    println!();
    print_targets(strata_cycles, docker_cycles, strata);
}

/// Issue 3's targets, met or missed.
fn print_targets(strata_cycles: &Cycles, docker_cycles: Option<&Cycles>, strata: &Listing) {
    if let Some(d) = docker_cycles {
        let speed_up = ms(quantile(&d.total, 50)) / ms(quantile(&strata_cycles.total, 50));
        println!(
            "target: strata create cycle >= {TARGET_CYCLE_SPEED_UP:.0}x faster than docker (p50): \
             {speed_up:.1}x, {}",
            verdict(speed_up >= TARGET_CYCLE_SPEED_UP)
        );
    }
    let list_ms = ms(quantile(&strata.cli, 50));
    if strata.cli_count >= TARGET_LIST_COUNT {
        println!(
            "target: strata container ls -a --json of {TARGET_LIST_COUNT} under {TARGET_LIST_MS:.0} ms: \
             {list_ms:.1} ms, {}",
            verdict(list_ms < TARGET_LIST_MS)
        );
    } else {
        println!(
            "target: strata listing of {TARGET_LIST_COUNT} not measured (--containers {})",
            strata.cli_count
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}
