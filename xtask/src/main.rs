//! Strata's developer tasks, run as `cargo xtask <task>`.
//!
//! - `test [-- ARGS]`: the project's test command. Checks for root, installs what the tests
//!   need (docker.io for the parity tests, ...) with apt-get when missing, runs
//!   `cargo test --workspace ARGS`, then a short run of every fuzz target (`fuzz`), then the
//!   VM test (`vm-test`); stops at the first that fails.
//! - `fuzz [--seconds N] [TARGET...]`: provisions nightly and cargo-fuzz (cached), builds the
//!   fuzz targets in `fuzz/` and runs each for N seconds on its seeds (see `fuzz`).
//! - `build-probe`: provisions nightly, `rust-src` and bpf-linker (cached), then builds the
//!   eBPF copy-up probe into `target/bpf/strata-probe.o` for the daemon to embed.
//! - `run [-- ARGS]`: builds `stratad` in release and runs it with ARGS.
//! - `bench [CASE...] [OPTIONS]`: the benchmarks, Strata beside Docker and the machine's limits
//!   (see `bench_report`); a full run writes `BENCHMARKS.md`.
//! - `vm-test [OPTIONS]`: boots the daemon in a QEMU VM and checks copy-up metrics (see `vm`).
//! - `lint-dashboards`: checks the Grafana dashboards' conventions (see `lint_dashboards`).

mod bench;
mod bench_containers;
mod bench_copyup;
mod bench_df;
mod bench_probe;
mod bench_report;
mod fuzz;
mod lint_dashboards;
mod probe;
mod vm;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test [-- ARGS]        install test prerequisites (as root), cargo test --workspace ARGS, a
                        10 s run of each fuzz target, then vm-test
  fuzz [OPTS] [TARGET...]  run cargo-fuzz targets (default: archive_extract mount_spec
                        record_decode) on fuzz/corpus/TARGET; new inputs and crashes go to
                        target/fuzz/TARGET/; OPTS:
      --seconds N       seconds per target (default 20)
  build-probe           build the eBPF copy-up probe (target/bpf/strata-probe.o)
  run [-- ARGS]         build stratad (release) and run it with ARGS
  vm-test [OPTS]        boot stratad in a QEMU VM, run the copy-up workload, check /metrics
      --timeout SECS    kill QEMU after SECS without a result (default 180)
      --storage-only    stop before the metrics phase (until the probe and /metrics land)
      --binaries DIR    use static stratad and strata from DIR instead of building them
  bench [CASE...] [OPTS]  benchmarks beside docker and the machine's limits; no CASE: all of
                        them, and BENCHMARKS.md is written. CASEs and their OPTS:
    import              ~1 GiB image: strata import vs docker load vs tar -x
      --size-mib N      approximate image size (default 1024)
      --skip-strata     measure only tar and docker
      --same-fs         every step in --dir itself, not each on a just-made ext4 (a loop
                        device under --dir)
    containers          (cycle, list, memory) create cycles, listing, stratad's RSS
      --cycles N        create cycles per daemon, p50/p99 reported (default 500)
      --containers N    containers to create, then list (default 10000)
      --docker-budget-secs N  stop creating docker containers after N s (default 180)
    df                  (scrape) system df -v with many written containers; /metrics
      --df-containers N containers (default 1000)
      --df-mib N        MiB written into each (default 10)
    copyup              copy-up of a large file vs cp
      --copyup-mib N    file size (default 100)
    probe               the eBPF probe's overhead, in the VM
      --copyups N       measured copy-ups per mode (default 2000)
      --block N         copy-ups per block; blocks alternate ABBA (default 100)
      --warmup N        unreported copy-ups per mode first (default 100)
      --file-size BYTES size of each copied-up file (default 4096)
      --timeout SECS    kill QEMU after SECS without a result (default 600)
      --binary PATH     use this static strata-probe-bench instead of building it
    shared: --runs N (repetitions, medians reported), --dir DIR (work directory on the disk to
      measure), --skip-docker
  lint-dashboards       check dashboards/grafana/*.json against the dashboard conventions
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(rest_after_dashes(&args[1..])),
        Some("run") => run(rest_after_dashes(&args[1..])),
        Some("build-probe") => probe::build_probe().map(|()| ExitCode::SUCCESS),
        Some("fuzz") => fuzz::Options::parse(&args[1..])
            .and_then(|o| fuzz::fuzz(&o))
            .map(|()| ExitCode::SUCCESS),
        Some("bench") if args[1..].iter().any(|a| a == "-h" || a == "--help") => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some("bench") if cfg!(debug_assertions) => optimized(&args),
        Some("bench") => bench_report::run(&args[1..]),
        Some("lint-dashboards") => {
            lint_dashboards::check_dir(&workspace_root().join("dashboards/grafana"))
                .map(|summary| {
                    println!("{summary}");
                    ExitCode::SUCCESS
                })
                .map_err(anyhow::Error::msg)
        }
        Some("vm-test") => vm::Options::parse(&args[1..]).and_then(|o| vm::vm_test(&o)),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(anyhow::anyhow!("no such task\n\n{USAGE}")),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs this task again from a release build of xtask: a benchmark's own client (HTTP, JSON,
/// timing loops) must not be the slow part of what it measures.
fn optimized(args: &[String]) -> Result<ExitCode> {
    let status = cargo()
        .args(["run", "--release", "--quiet", "--package", "xtask", "--"])
        .args(args)
        .status()
        .context("running the release build of xtask")?;
    Ok(exit_code(status))
}

/// Arguments after an optional leading `--`.
fn rest_after_dashes(args: &[String]) -> &[String] {
    match args.first().map(String::as_str) {
        Some("--") => &args[1..],
        _ => args,
    }
}

/// The workspace root (xtask's parent directory).
pub(crate) fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

pub(crate) fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Runs a command to completion, failing unless it exits 0.
pub(crate) fn run_checked(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// Programs the tests run, and the Debian package providing each.
const TEST_PREREQUISITES: &[(&str, &str)] = &[
    // The parity tests and testkit's docker tests start a private dockerd.
    ("dockerd", "docker.io"),
    ("docker", "docker.io"),
    ("containerd", "containerd"),
    ("runc", "runc"),
    // testkit checks its archives with GNU tar; the benchmark extracts with it.
    ("tar", "tar"),
    ("mount", "mount"),
    ("modprobe", "kmod"),
    // Container tests run commands from a busybox image.
    ("busybox", "busybox-static"),
    // The metrics test validates the exposition with promtool.
    ("promtool", "prometheus"),
];

fn test(args: &[String]) -> Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the tests need root (overlay mounts, device nodes, file owners, a private dockerd): \
             run `sudo -E cargo xtask test`"
        );
    }
    ensure_packages(TEST_PREREQUISITES)?;
    // overlayfs may be a module; loading it is harmless when built in.
    let _ = Command::new("modprobe").arg("overlay").status();
    // The daemon embeds the eBPF probe when its object exists: build it first, so the tests
    // run the daemon users get.
    probe::build_probe().context("building the eBPF probe")?;
    let status = cargo()
        .args(["test", "--workspace"])
        .args(args)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        return Ok(exit_code(status));
    }
    // Replays the seed corpora (hostile tars, mount specs, records, past reproducers) and
    // mutates them briefly: a regression in what the targets assert fails here, not weeks later.
    eprintln!(
        "xtask: cargo test passed; now every fuzz target for {} s (cargo xtask fuzz)",
        fuzz::SMOKE_SECONDS
    );
    fuzz::fuzz(&fuzz::Options::smoke()).context("fuzz smoke run")?;
    // The probe only attaches on a kernel with kprobes and overlay: prove it in a VM.
    eprintln!("xtask: fuzz targets passed; now the copy-up probe in a VM (cargo xtask vm-test)");
    vm::vm_test(&vm::Options::parse(&[])?)
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }
}

/// Installs, with one `apt-get update && apt-get install`, the packages of missing programs.
fn ensure_packages(prerequisites: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = prerequisites
        .iter()
        .filter(|(program, _)| strata_testkit::find_program(program).is_none())
        .map(|&(_, package)| package)
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run_checked(Command::new("apt-get").arg("update"))?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    for (program, package) in prerequisites {
        if strata_testkit::find_program(program).is_none() {
            bail!("{program} still missing after installing {package}");
        }
    }
    Ok(())
}

fn run(args: &[String]) -> Result<ExitCode> {
    // Embed the eBPF probe; on a host that cannot run it, stratad says why and carries on.
    probe::build_probe().context("building the eBPF probe")?;
    let stratad = bench::build_release_binaries()?.0;
    let status = Command::new(&stratad)
        .args(args)
        .status()
        .with_context(|| format!("running {}", stratad.display()))?;
    Ok(exit_code(status))
}
