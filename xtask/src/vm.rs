//! `cargo xtask vm-test`: the kernel-level test (issue 4 part 8), shaped like aya's `xtask run`.
//!
//! The host's kernel is locked down (kprobes get `EPERM`), so the copy-up probe is tested in a
//! QEMU VM (TCG; no KVM needed) booting Debian's cloud kernel:
//!
//! 1. **Provision**: `qemu-system-x86`, `busybox-static`, `xz-utils` with apt-get when missing.
//! 2. **Build**: static release builds of `stratad` and `strata` (`+crt-static`, so the VM needs
//!    no libraries); the kernel package named by `linux-image-cloud-amd64`, downloaded with
//!    `apt-get download` and unpacked once under `<target>/vm/kernel/<package>/`; the test
//!    image archive (busybox plus the workload files, see [`copyup_image`]); an initramfs (newc
//!    cpio, gzip) with busybox, the binaries, `overlay.ko`, the image, `xtask/vm/init.sh` as
//!    `/init` and `xtask/vm/workload.sh`.
//! 3. **Boot**: init mounts the pseudo filesystems, loads overlay, starts `stratad`, runs the
//!    workload, prints data between `=== begin NAME ===` / `=== end NAME ===` markers and ends
//!    with exactly one `init: success` or `init: failure: <why>` line, then powers off. A kernel
//!    panic or the timeout kills QEMU.
//! 4. **Check**, here in Rust: the storage phase (containers created, writes visible, `strata
//!    container diff` exact, reads in c3 leave no trace) and then the metrics phase: exact
//!    per-container copy-up counts and bytes by kind from the scraped `/metrics`.
//!
//! 5. **Dashboards**, unless `--storage-only`: Debian's Prometheus (`/usr/bin/prometheus` with
//!    the libraries and loader `ldd` names) runs in the VM from before the workload, scraping
//!    `/metrics` every second (init waits for its first scrape before the workload, so copy-ups
//!    land between scrapes); after the workload init waits for a few scrapes, then runs every
//!    probe-backed Grafana panel query (see [`probe_queries`]) and prints each JSON answer
//!    between `=== begin query N ===` markers. Each must succeed with data: on the host the
//!    probe cannot load, so `daemon/tests/dashboards.rs` can only check that they parse.
//!
//! `--storage-only` boots without `--metrics-addr` and stops before the scrape, for use until
//! the probe and `/metrics` exist; without it an unreachable `/metrics` fails the run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use strata_testkit::{BUSYBOX, LayerBuilder, busybox_image};

use crate::{cargo, ensure_packages, lint_dashboards, run_checked, workspace_root};

#[path = "dashboard_queries.rs"]
mod dashboard_queries;

/// The VM's architecture: the static binaries are built for it.
pub(crate) const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Debian's meta package; `apt-cache depends` names the versioned kernel package behind it.
const KERNEL_META_PACKAGE: &str = "linux-image-cloud-amd64";
const INIT_SH: &str = include_str!("../vm/init.sh");
const WORKLOAD_SH: &str = include_str!("../vm/workload.sh");
/// Must match `IMAGE` in `xtask/vm/workload.sh`.
const IMAGE_TAG: &str = "strata-vm/copyup:latest";
/// What the appends in `workload.sh` write.
const APPENDED: &[u8] = b"appended\n";

/// Programs the VM test needs on the host, and the Debian package providing each.
const VM_PREREQUISITES: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    // Debian may ship modules as .ko.xz; busybox insmod cannot read those, so xtask unpacks.
    ("xz", "xz-utils"),
    ("gzip", "gzip"),
    ("apt-cache", "apt"),
    ("dpkg-deb", "dpkg"),
    ("prometheus", "prometheus"),
    ("ldd", "libc-bin"),
];

/// Debian's Prometheus, run in the VM with the libraries `ldd` lists.
const PROMETHEUS: &str = "/usr/bin/prometheus";
/// `stratad --metrics-addr` in the VM (init.sh), and the `instance` label Prometheus gives it.
const METRICS_INSTANCE: &str = "127.0.0.1:9750";
/// Prometheus' configuration in the VM: scrape `stratad` every second.
const PROMETHEUS_YML: &str = "\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: strata
    static_configs:
      - targets: [\"127.0.0.1:9750\"]
";
/// What init waits for (each with a non-empty result, 120 s at most) before running the panel
/// queries: a few scrapes with the probe's copy-up series and the scanner's per-container
/// gauges in them, so `rate()` has points to work with. Not being met fails the run.
const PROMETHEUS_READY: &[&str] = &[
    "min(count_over_time(strata_probe_up[1m])) >= 5",
    "min(count_over_time(strata_copyup_total[1m])) >= 3",
    "min(count_over_time(strata_container_info[1m])) >= 3",
    "strata_container_copied_up_bytes > 0",
    "min(count_over_time(strata_container_rw_bytes[1m])) >= 3",
];

const USAGE_OPTIONS: &str = "--timeout SECS, --storage-only, --binaries DIR";

#[derive(Debug)]
pub(crate) struct Options {
    /// From QEMU's start to init's result line; QEMU is killed after it.
    timeout: Duration,
    /// Boot without `--metrics-addr` and stop before scraping `/metrics`.
    storage_only: bool,
    /// Static `stratad` and `strata` built elsewhere (e.g. from another checkout) instead of
    /// building them here.
    binaries: Option<PathBuf>,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            // Prometheus under TCG: 10-20 s to start, plus the scrapes init waits for.
            timeout: Duration::from_mins(6),
            storage_only: false,
            binaries: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--timeout" => {
                    let secs: u64 = args
                        .next()
                        .context("--timeout needs a value")?
                        .parse()
                        .context("--timeout")?;
                    options.timeout = Duration::from_secs(secs);
                }
                "--storage-only" => options.storage_only = true,
                "--binaries" => {
                    let dir = args.next().context("--binaries needs a directory")?;
                    options.binaries = Some(PathBuf::from(dir));
                }
                other => bail!("unknown option {other} (vm-test takes {USAGE_OPTIONS})"),
            }
        }
        Ok(options)
    }
}

/// A file of the test image's workload layer, and which container writes it.
#[derive(Debug, Clone, Copy)]
struct LowerFile {
    path: &'static str,
    size: u64,
    mode: u32,
}

/// The workload's lower files. Sizes are the `i_size` each copy-up reports (copy-up happens
/// before the append lands).
const C1_FILES: [LowerFile; 4] = [
    LowerFile {
        path: "srv/c1/one-mib",
        size: 1 << 20,
        mode: 0o644,
    },
    LowerFile {
        path: "srv/c1/ten-kib",
        size: 10 << 10,
        mode: 0o644,
    },
    LowerFile {
        path: "srv/c1/empty",
        size: 0,
        mode: 0o644,
    },
    // Only chmod'ed to 600 by the workload.
    LowerFile {
        path: "srv/c1/mode-only",
        size: 4 << 10,
        mode: 0o644,
    },
];
const C2_FILE: LowerFile = LowerFile {
    path: "srv/c2/eight-mib",
    size: 8 << 20,
    mode: 0o644,
};
const C3_FILE: LowerFile = LowerFile {
    path: "srv/c3/read-me",
    size: 64 << 10,
    mode: 0o644,
};
/// `workload.sh`'s foreign overlay: `lower/dir/file`, 4 KiB, appended to.
const FOREIGN_FILE_SIZE: u64 = 4096;

/// Where xtask caches downloads and writes the initramfs and console log.
pub(crate) fn cache_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("vm")
}

pub(crate) fn vm_test(options: &Options) -> Result<ExitCode> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;

    let started = Instant::now();
    provision()?;
    let provision_time = started.elapsed();

    let started = Instant::now();
    let (stratad, strata) = match &options.binaries {
        Some(dir) => static_binaries_in(dir)?,
        None => build_static_binaries()?,
    };
    let cargo_time = started.elapsed();

    let started = Instant::now();
    let kernel = Kernel::fetch(&cache)?;
    let kernel_time = started.elapsed();

    let started = Instant::now();
    let queries = probe_queries()?;
    let initramfs = cache.join("initramfs.cpio.gz");
    write_initramfs(&initramfs, &stratad, &strata, &kernel.overlay_ko, &queries)?;
    let initramfs_time = started.elapsed();

    eprintln!(
        "xtask: vm-test: booting {} (TCG, timeout {} s)",
        kernel.package,
        options.timeout.as_secs()
    );
    let boot = boot(&kernel.vmlinuz, &initramfs, options)?;
    let console_log = cache.join("console.log");
    fs::write(&console_log, &boot.console)
        .with_context(|| format!("writing {}", console_log.display()))?;

    let timings = format!(
        "provision {:.1} s, build {:.1} s (cargo {:.1} s, kernel {:.1} s, initramfs {:.1} s), \
         boot-to-result {:.1} s",
        provision_time.as_secs_f64(),
        (cargo_time + kernel_time + initramfs_time).as_secs_f64(),
        cargo_time.as_secs_f64(),
        kernel_time.as_secs_f64(),
        initramfs_time.as_secs_f64(),
        boot.elapsed.as_secs_f64(),
    );

    let verdict = boot.verdict(options.timeout, || check(&boot.console, options, &queries));
    Ok(boot.report("vm-test", verdict, &timings, &console_log))
}

impl Boot {
    /// `on_success` (the caller's checks of the console, giving the figures to print) when init
    /// reported success; every other outcome is a failure that names it.
    pub(crate) fn verdict(
        &self,
        timeout: Duration,
        on_success: impl FnOnce() -> Result<String, Vec<String>>,
    ) -> Result<String, Vec<String>> {
        match &self.outcome {
            Outcome::Success => on_success(),
            Outcome::Failure(why) => Err(vec![format!("init reported failure: {why}")]),
            Outcome::Panic(line) => Err(vec![format!("kernel panic: {line}")]),
            Outcome::Timeout => Err(vec![format!(
                "no init result within {} s; QEMU killed",
                timeout.as_secs()
            )]),
            Outcome::Exited(status) => Err(vec![format!(
                "QEMU exited ({status}) before init printed a result"
            )]),
        }
    }

    /// Prints the figures, or every failure with the whole console; the exit code.
    pub(crate) fn report(
        &self,
        label: &str,
        verdict: Result<String, Vec<String>>,
        timings: &str,
        console_log: &Path,
    ) -> ExitCode {
        match verdict {
            Ok(figures) => {
                print!("{figures}");
                println!("xtask: {label}: {timings}");
                println!(
                    "xtask: {label}: passed (console: {})",
                    console_log.display()
                );
                ExitCode::SUCCESS
            }
            Err(failures) => {
                println!("---- VM console ----");
                print!("{}", self.console);
                println!("---- end of VM console ----");
                println!("xtask: {label}: {timings}");
                for failure in &failures {
                    println!("xtask: {label}: FAILED: {failure}");
                }
                println!("xtask: {label}: console saved to {}", console_log.display());
                ExitCode::FAILURE
            }
        }
    }
}

pub(crate) fn provision() -> Result<()> {
    ensure_packages(VM_PREREQUISITES)?;
    // Debian's dynamic `busybox` package also installs /bin/busybox; the VM has no libc.
    if !is_static_elf(Path::new(BUSYBOX))? {
        eprintln!("xtask: {BUSYBOX} is dynamically linked; installing busybox-static");
        run_checked(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "busybox-static"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        ensure!(
            is_static_elf(Path::new(BUSYBOX))?,
            "{BUSYBOX} is still not static after installing busybox-static"
        );
    }
    Ok(())
}

/// Whether an ELF file has no `PT_INTERP` program header (static, or static-pie).
pub(crate) fn is_static_elf(path: &Path) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    let elf = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // ELF64 little-endian only: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    ensure!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    let headers = (|| {
        let phoff = usize::try_from(u64_at(0x20)?).ok()?;
        let entry_size = usize::from(u16_at(0x36)?);
        let count = usize::from(u16_at(0x38)?);
        (0..count)
            .map(|i| u32_at(phoff + i * entry_size))
            .collect::<Option<Vec<u32>>>()
    })()
    .with_context(|| format!("{}: truncated ELF program headers", path.display()))?;
    Ok(!headers.contains(&PT_INTERP))
}

/// Builds static `stratad` and `strata` (release) for the VM; returns their paths.
fn build_static_binaries() -> Result<(PathBuf, PathBuf)> {
    static_binaries_in(&build_static(&[
        "-p",
        "strata-daemon",
        "--bin",
        "stratad",
        "--bin",
        "strata",
    ])?)
}

/// `cargo build --release` of `selection` (`-p`, `--bin` arguments), statically linked for
/// [`TARGET`]; returns the directory holding the binaries.
pub(crate) fn build_static(selection: &[&str]) -> Result<PathBuf> {
    // An explicit --target keeps RUSTFLAGS off build scripts and proc macros, and puts these
    // artifacts beside, not over, the ordinary dynamic release build.
    run_checked(
        cargo()
            .args(["build", "--release", "--target", TARGET])
            .args(selection)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            // Line tables would more than double the initramfs that TCG decompresses at every
            // boot; panic messages keep their locations without them.
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
    )?;
    Ok(std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join(TARGET)
        .join("release"))
}

/// `stratad` and `strata` in `dir`, checked to be static.
fn static_binaries_in(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let binaries = (dir.join("stratad"), dir.join("strata"));
    for binary in [&binaries.0, &binaries.1] {
        ensure!(
            is_static_elf(binary)?,
            "{} is dynamically linked despite +crt-static",
            binary.display()
        );
    }
    Ok(binaries)
}

/// An unpacked Debian kernel package.
#[derive(Debug)]
pub(crate) struct Kernel {
    pub(crate) package: String,
    pub(crate) vmlinuz: PathBuf,
    /// Uncompressed, whatever the package ships.
    pub(crate) overlay_ko: PathBuf,
}

impl Kernel {
    /// Downloads and unpacks the kernel `linux-image-cloud-amd64` depends on, unless the
    /// cache already holds it.
    pub(crate) fn fetch(cache: &Path) -> Result<Self> {
        let package = kernel_package()?;
        let dir = cache.join("kernel").join(&package);
        let unpacked = dir.join(".unpacked");
        if !unpacked.exists() {
            eprintln!("xtask: downloading {package}");
            let staging = cache.join("kernel").join(format!(".{package}.partial"));
            if staging.exists() {
                fs::remove_dir_all(&staging)
                    .with_context(|| format!("removing {}", staging.display()))?;
            }
            fs::create_dir_all(&staging)?;
            run_checked(
                Command::new("apt-get")
                    .args(["download", &package])
                    .current_dir(&staging),
            )?;
            let deb = only_entry(&staging, |name| {
                Path::new(name)
                    .extension()
                    .is_some_and(|extension| extension == "deb")
            })?;
            run_checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
            fs::remove_file(&deb)?;
            if dir.exists() {
                fs::remove_dir_all(&dir)?;
            }
            fs::rename(&staging, &dir)?;
            fs::write(&unpacked, b"")?;
        }
        let vmlinuz = only_entry(&dir.join("boot"), |name| name.starts_with("vmlinuz-"))?;
        let modules = only_entry(&dir.join("lib/modules"), |_| true)?;
        let overlay_dir = modules.join("kernel/fs/overlayfs");
        let overlay_ko = dir.join("overlay.ko");
        if !overlay_ko.exists() {
            let shipped = only_entry(&overlay_dir, |name| name.starts_with("overlay.ko"))
                .context("overlayfs module (is CONFIG_OVERLAY_FS=y? then drop the insmod)")?;
            let name = shipped.file_name().unwrap_or_default().to_string_lossy();
            let decompress = match name.as_ref() {
                "overlay.ko" => None,
                "overlay.ko.xz" => Some("xz"),
                "overlay.ko.zst" => Some("zstd"),
                "overlay.ko.gz" => Some("gzip"),
                other => bail!("unknown module compression: {other}"),
            };
            let partial = dir.join("overlay.ko.partial");
            match decompress {
                None => {
                    fs::copy(&shipped, &partial)?;
                }
                Some(tool) => {
                    let out = fs::File::create(&partial)?;
                    run_checked(
                        Command::new(tool)
                            .arg("-dc")
                            .arg(&shipped)
                            .stdout(Stdio::from(out)),
                    )?;
                }
            }
            fs::rename(&partial, &overlay_ko)?;
        }
        Ok(Self {
            package,
            vmlinuz,
            overlay_ko,
        })
    }
}

/// The versioned package behind [`KERNEL_META_PACKAGE`], e.g. `linux-image-6.1.0-56-cloud-amd64`.
fn kernel_package() -> Result<String> {
    let query = || {
        Command::new("apt-cache")
            .args(["depends", KERNEL_META_PACKAGE])
            .output()
            .context("running apt-cache depends")
    };
    let parse = |stdout: &[u8]| {
        String::from_utf8_lossy(stdout).lines().find_map(|line| {
            line.trim()
                .strip_prefix("Depends: ")
                .filter(|dep| dep.starts_with("linux-image-"))
                .map(str::to_owned)
        })
    };
    let output = query()?;
    if let Some(package) = output
        .status
        .success()
        .then(|| parse(&output.stdout))
        .flatten()
    {
        return Ok(package);
    }
    // A fresh machine may have empty package lists.
    run_checked(Command::new("apt-get").arg("update"))?;
    let output = query()?;
    parse(&output.stdout).with_context(|| {
        format!(
            "apt-cache depends {KERNEL_META_PACKAGE} names no linux-image package: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}

/// The one entry of `dir` whose name satisfies `wanted`.
fn only_entry(dir: &Path, wanted: impl Fn(&str) -> bool) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if wanted(&entry.file_name().to_string_lossy()) {
            found.push(entry.path());
        }
    }
    match <[PathBuf; 1]>::try_from(found) {
        Ok([path]) => Ok(path),
        Err(found) => bail!(
            "expected one matching entry in {}, found {found:?}",
            dir.display()
        ),
    }
}

/// The workload's image: testkit's busybox image plus a layer holding the lower files of
/// [`C1_FILES`], [`C2_FILE`] and [`C3_FILE`], and the applets the workload needs beyond
/// testkit's list. File contents are a repeating text line: they compress well in the
/// initramfs, and copy-up cost does not depend on them.
fn copyup_image() -> Vec<u8> {
    let mut image = busybox_image(IMAGE_TAG);
    let mut layer = LayerBuilder::new();
    layer
        .symlink("bin/chmod", "busybox")
        .dir("srv", 0o755)
        .dir("srv/c1", 0o755)
        .dir("srv/c2", 0o755)
        .dir("srv/c3", 0o755);
    for file in C1_FILES.iter().chain([&C2_FILE, &C3_FILE]) {
        layer.file(file.path, &filler(file.size), file.mode);
    }
    image.layers.push(layer.build());
    image.docker_save_legacy()
}

fn filler(size: u64) -> Vec<u8> {
    let line = b"strata vm-test lower file contents\n";
    line.iter()
        .copied()
        .cycle()
        .take(usize::try_from(size).expect("test file sizes fit in memory"))
        .collect()
}

/// A probe-backed Grafana panel query, ready to send to Prometheus.
#[derive(Debug, Clone)]
struct ProbeQuery {
    /// Dashboard file, panel title and target.
    location: String,
    /// With the variables substituted.
    expr: String,
}

/// The queries of every panel whose description has [`lint_dashboards::PROBE_MARKER`], with
/// the substitutions of `daemon/tests/dashboards.rs`: `$instance` is the VM's `stratad`,
/// `$container` matches all.
fn probe_queries() -> Result<Vec<ProbeQuery>> {
    let dashboards = lint_dashboards::load_dir(&workspace_root().join("dashboards/grafana"))
        .map_err(anyhow::Error::msg)
        .context("loading dashboards/grafana")?;
    let mut out = Vec::new();
    for dashboard in &dashboards {
        for query in lint_dashboards::queries(dashboard) {
            if !query.needs_probe {
                continue;
            }
            let expr = dashboard_queries::substitute(&query.expr, METRICS_INSTANCE, ".*")
                .map_err(anyhow::Error::msg)
                .with_context(|| query.location.clone())?;
            out.push(ProbeQuery {
                location: query.location,
                expr,
            });
        }
    }
    ensure!(
        !out.is_empty(),
        "no panel in dashboards/grafana says \"{}\"",
        lint_dashboards::PROBE_MARKER
    );
    Ok(out)
}

/// Writes the gzip'd newc initramfs: busybox and its applets in `/bin`, `/init`, the test
/// payload in `/strata`, and Prometheus with its libraries where `ldd` found them.
fn write_initramfs(
    out: &Path,
    stratad: &Path,
    strata: &Path,
    overlay_ko: &Path,
    queries: &[ProbeQuery],
) -> Result<()> {
    let mut cpio = busybox_initramfs(INIT_SH, overlay_ko)?;
    cpio.file("strata/workload.sh", 0o755, WORKLOAD_SH.as_bytes());
    cpio.file("strata/stratad", 0o755, &read(stratad)?);
    cpio.file("strata/strata", 0o755, &read(strata)?);
    cpio.file("strata/copyup-image.tar", 0o644, &copyup_image());
    add_prometheus(&mut cpio, queries)?;
    write_gzipped(out, &cpio.finish())
}

/// `/strata/prometheus` and its configuration, the libraries and dynamic loader `ldd` lists
/// at their paths (under `/lib` and `/lib64`, which init copies), and the URL-encoded queries:
/// `/strata/prometheus-ready.txt` ([`PROMETHEUS_READY`]) and `/strata/queries.txt`, one a line.
fn add_prometheus(cpio: &mut Newc, queries: &[ProbeQuery]) -> Result<()> {
    cpio.file("strata/prometheus", 0o755, &read(Path::new(PROMETHEUS))?);
    let ldd = Command::new("ldd")
        .arg(PROMETHEUS)
        .output()
        .context("running ldd")?;
    ensure!(
        ldd.status.success(),
        "ldd {PROMETHEUS}: {}{}",
        ldd.status,
        String::from_utf8_lossy(&ldd.stderr)
    );
    let mut dirs = BTreeSet::new();
    let mut libraries = BTreeSet::new();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, `/lib64/ld-linux-x86-64.so.2
        // (0x...)`, or the vDSO (no file).
        let path = match line.split_once("=>") {
            Some((_, after)) => after.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.insert(path.to_owned());
        }
    }
    ensure!(
        libraries.iter().any(|l| l.contains("ld-linux")),
        "ldd {PROMETHEUS} lists no dynamic loader: {}",
        String::from_utf8_lossy(&ldd.stdout)
    );
    for library in &libraries {
        ensure!(
            library.starts_with("/lib/") || library.starts_with("/lib64/"),
            "{library} (from ldd {PROMETHEUS}) is outside /lib and /lib64, which init copies"
        );
        let relative = library.trim_start_matches('/');
        let mut parent = Path::new(relative).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
    }
    // Parents first: BTreeSet order puts `lib` before `lib/x86_64-linux-gnu`.
    for dir in &dirs {
        cpio.dir(dir, 0o755);
    }
    for library in &libraries {
        // fs::read follows symlinks (the loader usually is one): a regular file in the VM.
        cpio.file(
            library.trim_start_matches('/'),
            0o755,
            &read(Path::new(library))?,
        );
    }
    cpio.file("strata/prometheus.yml", 0o644, PROMETHEUS_YML.as_bytes());
    let encoded = |exprs: &mut dyn Iterator<Item = &str>| {
        exprs
            .map(|e| dashboard_queries::url_encode(e) + "\n")
            .collect::<String>()
    };
    cpio.file(
        "strata/prometheus-ready.txt",
        0o644,
        encoded(&mut PROMETHEUS_READY.iter().copied()).as_bytes(),
    );
    cpio.file(
        "strata/queries.txt",
        0o644,
        encoded(&mut queries.iter().map(|q| q.expr.as_str())).as_bytes(),
    );
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The initramfs every VM boots: busybox and its applets in `/bin`, `init` as `/init`, and
/// `overlay_ko` as `/strata/overlay.ko`; callers add their payload under `/strata`.
pub(crate) fn busybox_initramfs(init: &str, overlay_ko: &Path) -> Result<Newc> {
    let mut cpio = Newc::default();
    for dir in ["bin", "dev", "proc", "newroot", "strata"] {
        cpio.dir(dir, 0o755);
    }
    // The kernel opens /dev/console for init's stdio before /init runs; devtmpfs comes later.
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.file("bin/busybox", 0o755, &read(Path::new(BUSYBOX))?);
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .context("busybox --list")?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            cpio.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    cpio.file("init", 0o755, init.as_bytes());
    cpio.file("strata/overlay.ko", 0o644, &read(overlay_ko)?);
    Ok(cpio)
}

/// Writes `archive` to `out`, compressed with `gzip -1`.
pub(crate) fn write_gzipped(out: &Path, archive: &[u8]) -> Result<()> {
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut gzip = Command::new("gzip")
        .args(["-1", "-n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::from(file))
        .spawn()
        .context("starting gzip")?;
    gzip.stdin
        .take()
        .expect("piped stdin")
        .write_all(archive)
        .context("writing to gzip")?;
    let status = gzip.wait()?;
    ensure!(status.success(), "gzip failed: {status}");
    Ok(())
}

/// A newc ("070701") cpio archive, the format the kernel unpacks into rootfs
/// (Documentation/driver-api/early-userspace/buffer-format.rst). Written here rather than by
/// `cpio` so that owners are root and `/dev/console` exists without root on the host.
#[derive(Debug, Default)]
pub(crate) struct Newc {
    bytes: Vec<u8>,
    next_inode: u32,
}

impl Newc {
    const S_IFDIR: u32 = 0o040_000;
    const S_IFREG: u32 = 0o100_000;
    const S_IFLNK: u32 = 0o120_000;
    const S_IFCHR: u32 = 0o020_000;

    fn dir(&mut self, path: &str, mode: u32) {
        self.entry(path, Self::S_IFDIR | mode, (0, 0), &[]);
    }

    pub(crate) fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.entry(path, Self::S_IFREG | mode, (0, 0), data);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, Self::S_IFLNK | 0o777, (0, 0), target.as_bytes());
    }

    fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        self.entry(path, Self::S_IFCHR | mode, (major, minor), &[]);
    }

    fn entry(&mut self, path: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_inode += 1;
        let nlink = if mode & Self::S_IFDIR == Self::S_IFDIR {
            2
        } else {
            1
        };
        let name_size = u32::try_from(path.len() + 1).expect("short path");
        let file_size = u32::try_from(data.len()).expect("initramfs members fit newc's 4 GiB");
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize
        // check
        let fields = [
            self.next_inode,
            mode,
            0,
            0,
            nlink,
            0,
            file_size,
            0,
            0,
            rdev.0,
            rdev.1,
            name_size,
            0,
        ];
        let mut header = String::from("070701");
        for field in fields {
            write!(header, "{field:08x}").expect("writing to a String");
        }
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.bytes
    }
}

#[derive(Debug)]
pub(crate) enum Outcome {
    Success,
    Failure(String),
    Panic(String),
    Timeout,
    Exited(std::process::ExitStatus),
}

#[derive(Debug)]
pub(crate) struct Boot {
    /// Serial console, `\r` removed, followed by QEMU's own stderr if any.
    pub(crate) console: String,
    pub(crate) outcome: Outcome,
    /// From QEMU's start to init's result line (or the end).
    pub(crate) elapsed: Duration,
}

/// Boots the VM and follows its console until init's result line, a panic, QEMU's exit or the
/// timeout. Progress lines (`init:`, `workload:`) are echoed as they come.
fn boot(vmlinuz: &Path, initramfs: &Path, options: &Options) -> Result<Boot> {
    let extra = if options.storage_only {
        "strata.phases=storage"
    } else {
        ""
    };
    boot_vm(vmlinuz, initramfs, extra, Clock::Wall, options.timeout)
}

/// How the VM's clocks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clock {
    /// Plain TCG, two vCPUs: guest time follows the host's, with all its noise.
    Wall,
    /// `-icount shift=0,sleep=off`, one vCPU: guest time advances 1 ns per guest instruction
    /// executed, whatever the host does, so timings are reproducible (and measure the guest's
    /// instructions, not the emulator's cost of each).
    Icount,
}

/// [`boot`] with `extra` appended to the kernel command line, killed after `timeout`.
pub(crate) fn boot_vm(
    vmlinuz: &Path,
    initramfs: &Path,
    extra: &str,
    clock: Clock,
    timeout: Duration,
) -> Result<Boot> {
    let mut append = String::from("console=ttyS0 panic=-1 quiet rdinit=/init");
    if !extra.is_empty() {
        append.push(' ');
        append.push_str(extra);
    }
    let started = Instant::now();
    let clock_args: &[&str] = match clock {
        Clock::Wall => &["-smp", "2"],
        // icount needs single-threaded TCG; without a NIC, no iPXE option ROM to wait on.
        Clock::Icount => &["-smp", "1", "-icount", "shift=0,sleep=off", "-net", "none"],
    };
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-machine", "q35", "-cpu", "max", "-m", "1024"])
        .args(clock_args)
        .args(["-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let lines = console_lines(&mut qemu);
    let mut stderr = qemu.stderr.take().expect("piped stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let deadline = started + timeout;
    let mut console = String::new();
    let mut outcome = None;
    let mut elapsed = None;
    loop {
        // After the result, give `poweroff -f` a moment to end QEMU by itself.
        let limit = match outcome {
            Some(_) => elapsed.map_or(deadline, |e| started + e + Duration::from_secs(15)),
            None => deadline,
        };
        let line = match lines.recv_timeout(limit.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = qemu.kill();
                outcome.get_or_insert(Outcome::Timeout);
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        console.push_str(&line);
        console.push('\n');
        if outcome.is_some() {
            continue;
        }
        let trimmed = line.trim();
        if trimmed.starts_with("init:") || trimmed.starts_with("workload:") {
            eprintln!("vm: {trimmed}");
        }
        let result = if trimmed == "init: success" {
            Some(Outcome::Success)
        } else if let Some(why) = trimmed.strip_prefix("init: failure: ") {
            Some(Outcome::Failure(why.to_owned()))
        } else if trimmed.contains("Kernel panic - not syncing") {
            // No point waiting: with panic=-1 and -no-reboot QEMU would exit, but be sure.
            let _ = qemu.kill();
            Some(Outcome::Panic(trimmed.to_owned()))
        } else {
            None
        };
        if result.is_some() {
            outcome = result;
            elapsed = Some(started.elapsed());
        }
    }
    let status = qemu.wait().context("waiting for QEMU")?;
    let stderr = stderr_reader.join().unwrap_or_default();
    if !stderr.trim().is_empty() {
        console.push_str("---- qemu stderr ----\n");
        console.push_str(&stderr);
    }
    Ok(Boot {
        console,
        outcome: outcome.unwrap_or(Outcome::Exited(status)),
        elapsed: elapsed.unwrap_or_else(|| started.elapsed()),
    })
}

/// QEMU's stdout (the serial console) as lines, read on a thread.
fn console_lines(qemu: &mut Child) -> mpsc::Receiver<String> {
    let stdout = qemu.stdout.take().expect("piped stdout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if sender.send(text).is_err() {
                        break;
                    }
                }
            }
        }
    });
    receiver
}

/// The console's `=== begin NAME ===` ... `=== end NAME ===` sections.
pub(crate) fn sections(console: &str) -> BTreeMap<String, Vec<String>> {
    let mut sections = BTreeMap::new();
    let mut open: Option<(String, Vec<String>)> = None;
    for line in console.lines() {
        let line = line.trim_end();
        if let Some(name) = line
            .strip_prefix("=== begin ")
            .and_then(|l| l.strip_suffix(" ==="))
        {
            open = Some((name.to_owned(), Vec::new()));
        } else if let Some(name) = line
            .strip_prefix("=== end ")
            .and_then(|l| l.strip_suffix(" ==="))
        {
            if let Some((open_name, lines)) = open.take()
                && open_name == name
            {
                sections.insert(open_name, lines);
            }
        } else if let Some((_, lines)) = open.as_mut() {
            lines.push(line.to_owned());
        }
    }
    sections
}

/// Checks a successful boot's console; returns the figures to print, or every failed check.
fn check(
    console: &str,
    options: &Options,
    queries: &[ProbeQuery],
) -> std::result::Result<String, Vec<String>> {
    let sections = sections(console);
    let mut failures = Vec::new();
    let mut figures = String::new();
    let ids = check_storage(&sections, &mut failures, &mut figures);
    if options.storage_only {
        figures.push_str("metrics phase: skipped (--storage-only)\n");
    } else {
        match sections.get("metrics") {
            None => failures.push("no metrics section: /metrics was not scraped".into()),
            Some(text) => match parse_exposition(text) {
                Ok(samples) => check_metrics(&samples, &ids, &mut failures, &mut figures),
                Err(e) => failures.push(format!("parsing /metrics: {e:#}")),
            },
        }
        check_queries(&sections, queries, &mut failures, &mut figures);
    }
    if failures.is_empty() {
        Ok(figures)
    } else {
        Err(failures)
    }
}

/// The dashboards phase: every probe-backed panel query answered with success and data.
fn check_queries(
    sections: &BTreeMap<String, Vec<String>>,
    queries: &[ProbeQuery],
    failures: &mut Vec<String>,
    figures: &mut String,
) {
    let mut answered = 0;
    for (n, query) in (1..).zip(queries) {
        let what = format!("query {n} ({}): {}", query.location, query.expr);
        let Some(lines) = sections.get(&format!("query {n}")) else {
            failures.push(format!("{what}: no `query {n}` section on the console"));
            continue;
        };
        let text = lines.join("\n");
        let verdict = match serde_json::from_str::<serde_json::Value>(text.trim()) {
            Err(e) => Err(format!("not JSON ({e}): {text:?}")),
            Ok(response) if response["status"] != "success" => Err(format!(
                "status {}, error {}",
                response["status"], response["error"]
            )),
            Ok(response) => {
                let data = &response["data"];
                match (data["resultType"].as_str(), &data["result"]) {
                    (Some("vector" | "matrix"), serde_json::Value::Array(series))
                        if !series.is_empty() =>
                    {
                        Ok(format!("{} series", series.len()))
                    }
                    (Some("scalar"), serde_json::Value::Array(value)) if value.len() == 2 => {
                        Ok("scalar".to_owned())
                    }
                    (kind, result) => Err(format!("no data: resultType {kind:?}, result {result}")),
                }
            }
        };
        match verdict {
            Ok(found) => {
                answered += 1;
                writeln!(figures, "dashboards: {what}: {found}").expect("writing to a String");
            }
            Err(why) => failures.push(format!("{what}: {why}")),
        }
    }
    let extra = sections
        .keys()
        .filter(|k| {
            k.strip_prefix("query ")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n == 0 || n > queries.len())
        })
        .count();
    if extra > 0 {
        failures.push(format!(
            "{extra} query sections beyond the {} queries xtask wrote",
            queries.len()
        ));
    }
    writeln!(
        figures,
        "dashboards phase: {answered} of {} probe-backed panel queries returned data",
        queries.len()
    )
    .expect("writing to a String");
}

/// Container name -> id, from the `containers` section.
type ContainerIds = BTreeMap<String, String>;

/// The storage phase: what `strata` shows of the workload, without the probe.
fn check_storage(
    sections: &BTreeMap<String, Vec<String>>,
    failures: &mut Vec<String>,
    figures: &mut String,
) -> ContainerIds {
    let mut ids = ContainerIds::new();
    for line in sections.get("containers").into_iter().flatten() {
        if let Some((name, id)) = line.split_once(' ') {
            ids.insert(name.to_owned(), id.trim().to_owned());
        }
    }
    for name in ["c1", "c2", "c3"] {
        match ids.get(name) {
            Some(id) if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {}
            other => failures.push(format!(
                "container {name}: expected a 64-hex id, got {other:?}"
            )),
        }
    }

    let mut expect_lines = |section: &str, expected: Vec<String>| match sections.get(section) {
        Some(lines) => {
            let got: Vec<&str> = lines
                .iter()
                .map(|l| l.trim())
                .filter(|l| !l.is_empty())
                .collect();
            if got != expected {
                failures.push(format!(
                    "section {section}: expected {expected:#?}\ngot {got:#?}"
                ));
            }
        }
        None => failures.push(format!("section {section} missing from the console")),
    };

    // c3 reads every lower file and sees its lower size.
    expect_lines(
        "reads-c3",
        C1_FILES
            .iter()
            .chain([&C2_FILE, &C3_FILE])
            .map(|f| format!("/{} {}", f.path, f.size))
            .collect(),
    );
    // c1 sees its appends and its chmod.
    let appended = APPENDED.len() as u64;
    expect_lines(
        "sizes-c1",
        C1_FILES
            .iter()
            .map(|f| {
                if f.path.ends_with("mode-only") {
                    format!("/{} {} 600", f.path, f.size)
                } else {
                    format!("/{} {} {:o}", f.path, f.size + appended, f.mode)
                }
            })
            .collect(),
    );
    // The writable layers hold exactly the copied-up files and their parent directories.
    let diff = |files: &[LowerFile]| {
        let mut lines: BTreeSet<String> = BTreeSet::new();
        for file in files {
            let mut path = String::new();
            for component in file.path.split('/') {
                path.push('/');
                path.push_str(component);
                lines.insert(format!("C {path}"));
            }
        }
        lines.into_iter().collect::<Vec<_>>()
    };
    expect_lines("diff-c1", diff(&C1_FILES));
    expect_lines("diff-c2", diff(&[C2_FILE]));
    expect_lines("diff-c3", Vec::new());

    writeln!(
        figures,
        "storage phase: c1 copied up {} files ({} bytes at copy-up), c2 1 file ({} bytes), c3 none",
        C1_FILES.len(),
        C1_FILES.iter().map(|f| f.size).sum::<u64>(),
        C2_FILE.size
    )
    .expect("writing to a String");
    ids
}

/// One sample of the OpenMetrics/Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format: `name{label="value",...} value [timestamp]` lines;
/// comments (`# HELP`, `# TYPE`, `# EOF`) and blank lines are skipped.
fn parse_exposition(lines: &[String]) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = (|| {
            let name_end = line.find(['{', ' ']).context("no value")?;
            let name = line[..name_end].to_owned();
            let mut labels = BTreeMap::new();
            let mut rest = &line[name_end..];
            if let Some(after_brace) = rest.strip_prefix('{') {
                let (parsed, after) = parse_labels(after_brace)?;
                labels = parsed;
                rest = after;
            }
            let value = rest
                .split_whitespace()
                .next()
                .context("no value")?
                .parse::<f64>()
                .context("value")?;
            anyhow::Ok(Sample {
                name,
                labels,
                value,
            })
        })()
        .with_context(|| format!("line {line:?}"))?;
        samples.push(parsed);
    }
    Ok(samples)
}

/// Parses `k="v",k2="v2"}` (after the opening brace); returns the labels and the text after `}`.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (key, after_key) = rest.split_once("=\"").context("label without =\"")?;
        let mut value = String::new();
        let mut chars = after_key.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => bail!("unterminated escape"),
                },
                Some((_, c)) => value.push(c),
                None => bail!("unterminated label value"),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        rest = &after_key[end + 1..];
    }
}

/// The kinds the probe distinguishes (ARCHITECTURE.md, "Metrics").
const KINDS: [&str; 4] = ["file", "dir", "symlink", "other"];
const UNMANAGED: &str = "unmanaged";

/// Expected copy-ups of one `container_id`: count and bytes per kind.
#[derive(Debug, Default, Clone, PartialEq)]
struct CopyUps(BTreeMap<&'static str, (u64, u64)>);

impl CopyUps {
    fn of(files: &[LowerFile], dirs: u64) -> Self {
        let mut by_kind = BTreeMap::new();
        by_kind.insert(
            "file",
            (files.len() as u64, files.iter().map(|f| f.size).sum()),
        );
        by_kind.insert("dir", (dirs, 0));
        Self(by_kind)
    }

    fn count(&self, kind: &str) -> u64 {
        self.0.get(kind).map_or(0, |&(count, _)| count)
    }

    fn bytes(&self, kind: &str) -> u64 {
        self.0.get(kind).map_or(0, |&(_, bytes)| bytes)
    }
}

/// A scraped `/metrics`, queried by name and labels.
#[derive(Debug, Clone, Copy)]
struct Scrape<'a>(&'a [Sample]);

impl Scrape<'_> {
    /// Sum of `name`'s series for `container` (and `kind`, if given); 0 when there are none.
    fn sum(self, name: &str, container: &str, kind: Option<&str>) -> f64 {
        fn label<'s>(sample: &'s Sample, key: &str) -> Option<&'s str> {
            sample.labels.get(key).map(String::as_str)
        }
        self.0
            .iter()
            .filter(|s| s.name == name && label(s, "container_id") == Some(container))
            .filter(|s| kind.is_none_or(|k| label(s, "kind") == Some(k)))
            // Not `sum()`: an empty f64 sum is -0, which reads oddly in a failure message.
            .fold(0.0, |total, s| total + s.value)
    }

    /// Sum of all of `name`'s series.
    fn total(self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .fold(0.0, |total, s| total + s.value)
    }
}

/// Expected copy-ups per `container_id`: (display name, label value, figures).
///
/// Bytes are the copied-up inode's `i_size` when the copy-up starts (regular files; 0 for
/// directories). Parent directories come up once per container: `/srv` and `/srv/cN`; the
/// foreign mount's `dir`.
fn expected_copyups(ids: &ContainerIds) -> Vec<(String, String, CopyUps)> {
    let id = |name: &str| ids.get(name).cloned().unwrap_or_default();
    let foreign = LowerFile {
        path: "dir/file",
        size: FOREIGN_FILE_SIZE,
        mode: 0o644,
    };
    vec![
        ("c1".into(), id("c1"), CopyUps::of(&C1_FILES, 2)),
        ("c2".into(), id("c2"), CopyUps::of(&[C2_FILE], 2)),
        ("c3".into(), id("c3"), CopyUps::default()),
        (
            UNMANAGED.into(),
            UNMANAGED.into(),
            CopyUps::of(&[foreign], 1),
        ),
    ]
}

/// The metrics phase: exact copy-up figures per container and kind, nothing elsewhere.
#[expect(
    clippy::float_cmp,
    clippy::cast_precision_loss,
    reason = "counter values are small integers, exact in f64"
)]
fn check_metrics(
    samples: &[Sample],
    ids: &ContainerIds,
    failures: &mut Vec<String>,
    figures: &mut String,
) {
    let scrape = Scrape(samples);
    match samples.iter().find(|s| s.name == "strata_probe_up") {
        Some(s) if s.value == 1.0 => {}
        other => failures.push(format!(
            "strata_probe_up: expected 1 (probe attached in the VM), got {:?}; the \
             stratad-log section says why",
            other.map(|s| s.value)
        )),
    }

    let expectations = expected_copyups(ids);
    writeln!(
        figures,
        "{:<10} {:<13} {:>5} {:>12} {:>5} {:>10} {:>7}",
        "CONTAINER", "ID", "FILES", "FILE BYTES", "DIRS", "HIST COUNT", "ERRORS"
    )
    .expect("writing to a String");
    for (name, container, expected) in &expectations {
        check_container(scrape, name, container, expected, failures);
        writeln!(
            figures,
            "{:<10} {:<13} {:>5} {:>12} {:>5} {:>10} {:>7}",
            name,
            container.chars().take(12).collect::<String>(),
            scrape.sum("strata_copyup_total", container, Some("file")),
            scrape.sum("strata_copyup_bytes_total", container, Some("file")),
            scrape.sum("strata_copyup_total", container, Some("dir")),
            scrape.sum("strata_copyup_duration_seconds_count", container, None),
            scrape.sum("strata_copyup_errors_total", container, None),
        )
        .expect("writing to a String");
    }

    // Nothing attributed elsewhere (a wrong or short id, a missing label).
    let expected_total = expectations
        .iter()
        .map(|(_, _, e)| KINDS.iter().map(|k| e.count(k)).sum::<u64>())
        .sum::<u64>() as f64;
    let seen_total = scrape.total("strata_copyup_total");
    if seen_total != expected_total {
        let seen_ids: BTreeSet<&str> = samples
            .iter()
            .filter(|s| s.name == "strata_copyup_total")
            .filter_map(|s| s.labels.get("container_id").map(String::as_str))
            .collect();
        failures.push(format!(
            "strata_copyup_total over all series = {seen_total}, expected {expected_total}; \
             container_id labels seen: {seen_ids:?}, containers: {ids:?}"
        ));
    }
    let errors = scrape.total("strata_copyup_errors_total");
    if errors != 0.0 {
        failures.push(format!(
            "strata_copyup_errors_total over all series = {errors}"
        ));
    }
}

/// One container's copy-up counts, bytes and histogram counts by kind, and its errors.
#[expect(
    clippy::float_cmp,
    clippy::cast_precision_loss,
    reason = "counter values are small integers, exact in f64"
)]
fn check_container(
    scrape: Scrape<'_>,
    name: &str,
    container: &str,
    expected: &CopyUps,
    failures: &mut Vec<String>,
) {
    for kind in KINDS {
        let count = scrape.sum("strata_copyup_total", container, Some(kind));
        let bytes = scrape.sum("strata_copyup_bytes_total", container, Some(kind));
        let histogram = scrape.sum(
            "strata_copyup_duration_seconds_count",
            container,
            Some(kind),
        );
        let (want_count, want_bytes) = (expected.count(kind), expected.bytes(kind));
        if count != want_count as f64 {
            failures.push(format!(
                "{name}: strata_copyup_total{{kind=\"{kind}\"}} = {count}, expected {want_count}"
            ));
        }
        if bytes != want_bytes as f64 {
            failures.push(format!(
                "{name}: strata_copyup_bytes_total{{kind=\"{kind}\"}} = {bytes}, expected \
                 {want_bytes}"
            ));
        }
        if histogram != count {
            failures.push(format!(
                "{name}: strata_copyup_duration_seconds_count{{kind=\"{kind}\"}} = {histogram}, \
                 but strata_copyup_total = {count}"
            ));
        }
    }
    let errors = scrape.sum("strata_copyup_errors_total", container, None);
    if errors != 0.0 {
        failures.push(format!("{name}: strata_copyup_errors_total = {errors}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_collected_between_markers() {
        let console = "noise\n=== begin a ===\nx\ny\n=== end a ===\n[ 1.0] kernel\n";
        let sections = sections(console);
        assert_eq!(sections["a"], vec!["x".to_owned(), "y".to_owned()]);
        assert_eq!(sections.len(), 1);
    }

    #[test]
    fn exposition_lines_parse_with_labels_and_escapes() {
        let lines: Vec<String> = [
            "# TYPE strata_copyup counter",
            r#"strata_copyup_total{container_id="ab",kind="file"} 4"#,
            r#"strata_container_info{name="a\"b",image="x"} 1"#,
            "strata_probe_up 1",
            "# EOF",
        ]
        .map(str::to_owned)
        .to_vec();
        let samples = parse_exposition(&lines).expect("parses");
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].labels["kind"], "file");
        assert!((samples[0].value - 4.0).abs() < f64::EPSILON);
        assert_eq!(samples[1].labels["name"], "a\"b");
        assert!(samples[2].labels.is_empty());
    }

    #[test]
    fn newc_entries_are_aligned_and_end_with_a_trailer() {
        let mut cpio = Newc::default();
        cpio.file("init", 0o755, b"abc");
        let bytes = cpio.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn panel_queries_are_substituted_and_url_encoded() {
        let expr = dashboard_queries::substitute(
            r#"sum(rate(x{instance=~"$instance", name=~"${container}"}[$__rate_interval]))"#,
            METRICS_INSTANCE,
            ".*",
        )
        .expect("known variables");
        assert_eq!(
            expr,
            r#"sum(rate(x{instance=~"127.0.0.1:9750", name=~".*"}[1m]))"#
        );
        assert_eq!(
            dashboard_queries::url_encode("a{b=~\".*\"} >= 3"),
            "a%7Bb%3D~%22.%2A%22%7D%20%3E%3D%203"
        );
        assert!(dashboard_queries::substitute("$nope", "i", "c").is_err());
    }

    #[test]
    fn probe_queries_come_from_the_dashboards() {
        let queries = probe_queries().expect("dashboards load");
        assert!(queries.iter().any(|q| lint_dashboards::uses_probe(&q.expr)));
        assert!(queries.iter().all(|q| !q.expr.contains('$')));
    }

    #[test]
    fn busybox_from_debian_is_static() {
        if Path::new(BUSYBOX).exists() {
            assert!(is_static_elf(Path::new(BUSYBOX)).expect("reads busybox"));
        }
    }
}
