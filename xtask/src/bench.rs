//! `cargo xtask bench import`: how close `strata image import` comes to the disk's practical
//! limit (`tar -x` of the same layers) and how it compares with `docker load`.
//!
//! Page caches cannot be dropped reliably on a shared machine, so each measurement runs
//! `--runs` times, alternating between tools so none always runs on a warm cache, with a
//! `sync` before each timed step; medians are reported.
//!
//! Two `tar -x` rows: plain (the bytes may still be only in the page cache when it exits) and
//! `tar -x && sync`, the durable limit to compare with, since strata syncs the layer files
//! before it commits their records. The strata and docker rows end with a `sync` too. A
//! `dd oflag=direct conv=fsync` of as many bytes shows the disk's own floor for a durable
//! import: no import can be faster than writing its bytes once.
//!
//! Every timed step runs on an ext4 made for it ([`FreshFs`]): on a filesystem that has just
//! had mass deletions (an earlier step's, case's or bench's), every tool runs several times
//! slower (`tar -x` took 1.5 s in one run and 11.5 s in the next on the same disk), so only
//! this makes steps, runs and invocations comparable. `--same-fs` runs them all in `--dir`
//! itself instead, keeping everything until the end so that no step follows another's
//! deletions within the run.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use strata_testkit::{Dockerd, ImageBuilder, Stratad};

use crate::bench_report::{Figure, quantile};
use crate::{cargo, run_checked, workspace_root};

const TAG: &str = "strata-bench/import:latest";

#[derive(Debug)]
pub(crate) struct Options {
    size_mib: u64,
    runs: usize,
    dir: PathBuf,
    strata: bool,
    docker: bool,
    fresh_fs: bool,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            size_mib: 1024,
            runs: 3,
            dir: workspace_root().join("target/bench-import"),
            strata: true,
            docker: true,
            fresh_fs: true,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--size-mib" => options.size_mib = value()?.parse().context("--size-mib")?,
                "--runs" => options.runs = value()?.parse().context("--runs")?,
                "--dir" => options.dir = PathBuf::from(value()?),
                "--skip-strata" => options.strata = false,
                "--skip-docker" => options.docker = false,
                "--same-fs" => options.fresh_fs = false,
                other => bail!("unknown option {other}"),
            }
        }
        if options.runs == 0 || options.size_mib == 0 {
            bail!("--runs and --size-mib must be positive");
        }
        Ok(options)
    }
}

/// A fresh work directory under `dir` (created), removed when dropped.
pub(crate) fn work_dir(dir: &Path) -> Result<tempfile::TempDir> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    tempfile::Builder::new()
        .prefix("run")
        .tempdir_in(dir)
        .context("creating the work directory")
}

/// A just-made ext4 for one timed step, so that no step inherits another's (or an earlier
/// bench's) deletions or fullness: a sparse file under the work directory on a loop device
/// with direct I/O (no second page cache), made with a journal, as production hosts run it,
/// and with its inode tables and journal zeroed by mkfs. Left to the kernel's lazy init thread,
/// that zeroing runs during the step and made figures swing by 2x. Unmounted, detached and
/// removed when dropped.
struct FreshFs {
    image: PathBuf,
    device: Option<String>,
    mount: PathBuf,
}

impl FreshFs {
    fn new(dir: &Path, name: &str, size: u64) -> Result<Self> {
        let mut fs = Self {
            image: dir.join(format!("{name}.img")),
            device: None,
            mount: dir.join(name),
        };
        File::create(&fs.image)
            .and_then(|f| f.set_len(size))
            .with_context(|| format!("creating {}", fs.image.display()))?;
        let out = Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on"])
            .arg(&fs.image)
            .output()
            .context("running losetup")?;
        if !out.status.success() {
            bail!(
                "losetup {}: {}",
                fs.image.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let device = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        fs.device = Some(device.clone());
        run_checked(Command::new("mkfs.ext4").args([
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            &device,
        ]))?;
        std::fs::create_dir(&fs.mount)
            .with_context(|| format!("creating {}", fs.mount.display()))?;
        run_checked(Command::new("mount").arg(&device).arg(&fs.mount))?;
        Ok(fs)
    }
}

impl Drop for FreshFs {
    fn drop(&mut self) {
        let quiet = |c: &mut Command| c.stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if self.mount.exists()
            && !quiet(Command::new("umount").arg(&self.mount))
            && !quiet(Command::new("umount").arg("-l").arg(&self.mount))
        {
            eprintln!("bench: could not unmount {}", self.mount.display());
        }
        if let Some(device) = &self.device
            && !quiet(Command::new("losetup").arg("-d").arg(device))
        {
            eprintln!("bench: could not detach {device}");
        }
        let _ = std::fs::remove_dir(&self.mount);
        let _ = std::fs::remove_file(&self.image);
    }
}

/// `strata image import --quiet ARCHIVE`, panicking (with the daemon's log) on failure.
pub(crate) fn strata_import(daemon: &Stratad, cli: &Path, archive: &Path) {
    daemon.strata_ok(
        cli,
        &[
            std::ffi::OsStr::new("image"),
            "import".as_ref(),
            "--quiet".as_ref(),
            archive.as_os_str(),
        ],
    );
}

/// Builds `stratad` and `strata` in release; returns their paths.
pub(crate) fn build_release_binaries() -> Result<(PathBuf, PathBuf)> {
    run_checked(cargo().args([
        "build",
        "--release",
        "-p",
        "strata-daemon",
        "--bin",
        "stratad",
        "--bin",
        "strata",
    ]))?;
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("release");
    Ok((dir.join("stratad"), dir.join("strata")))
}

/// Deterministic generator (xorshift64*): the same seed gives the same image on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Content of one layer.
enum LayerPlan {
    /// `count` files of 1–64 KiB spread over `dirs` directories.
    SmallFiles { count: u64, dirs: u64 },
    /// Files of the given sizes.
    LargeFiles(Vec<u64>),
}

/// Five layers of about `size_mib` MiB in total: three of tens of thousands of small files
/// (at full size), two of a few large files.
fn plan(size_mib: u64) -> Vec<LayerPlan> {
    let mib = 1u64 << 20;
    let total = size_mib * mib;
    // Small files average 32.5 KiB; 40 % of the bytes go to them.
    let small_files = (total * 2 / 5) / (65 * 512);
    let per_layer = (small_files / 3).max(1);
    let large = total * 3 / 5;
    vec![
        LayerPlan::SmallFiles {
            count: per_layer,
            dirs: 64,
        },
        LayerPlan::LargeFiles(vec![large / 3]),
        LayerPlan::SmallFiles {
            count: per_layer,
            dirs: 256,
        },
        LayerPlan::LargeFiles(vec![large / 3, large / 6, large / 6]),
        LayerPlan::SmallFiles {
            count: per_layer,
            dirs: 16,
        },
    ]
}

fn write_layer(path: &Path, index: usize, plan: &LayerPlan, rng: &mut Rng) -> Result<u64> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    let header_for = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(size);
        h
    };
    let top = format!("layer{index}");
    let mut dir_header = header_for(tar::EntryType::Directory, 0o755, 0);
    builder.append_data(&mut dir_header, format!("{top}/"), std::io::empty())?;
    let mut buf = vec![0u8; 64 * 1024];
    match plan {
        LayerPlan::SmallFiles { count, dirs } => {
            for d in 0..*dirs {
                let mut h = header_for(tar::EntryType::Directory, 0o755, 0);
                builder.append_data(&mut h, format!("{top}/d{d:04}/"), std::io::empty())?;
            }
            for i in 0..*count {
                let size = 1024 + rng.below(63 * 1024 + 1);
                let size_usize = usize::try_from(size).expect("below 64 KiB");
                rng.fill(&mut buf[..size_usize]);
                let mut h = header_for(tar::EntryType::Regular, 0o644, size);
                let name = format!("{top}/d{:04}/f{i:06}", i % dirs);
                builder.append_data(&mut h, name, &buf[..size_usize])?;
            }
        }
        LayerPlan::LargeFiles(sizes) => {
            for (i, &size) in sizes.iter().enumerate() {
                let mut h = header_for(tar::EntryType::Regular, 0o644, size);
                let reader = RandomReader { rng, left: size };
                builder.append_data(&mut h, format!("{top}/large{i}.bin"), reader)?;
            }
        }
    }
    let mut out = builder.into_inner()?;
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

struct RandomReader<'a> {
    rng: &'a mut Rng,
    left: u64,
}

impl std::io::Read for RandomReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = usize::try_from(self.left.min(buf.len() as u64)).unwrap_or(buf.len());
        self.rng.fill(&mut buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

fn sync() {
    let _ = Command::new("sync").status();
}

/// `tar -x` of each layer into its own fresh directory under `dest`.
fn untar_layers(layers: &[PathBuf], dest: &Path) -> Result<()> {
    for (i, layer) in layers.iter().enumerate() {
        let into = dest.join(i.to_string());
        std::fs::create_dir_all(&into)?;
        run_checked(
            Command::new("tar")
                .arg("-xf")
                .arg(layer)
                .arg("-C")
                .arg(&into),
        )?;
    }
    Ok(())
}

/// Writes `mib` MiB (rounded up to 4 MiB) of zeros to `file` with `O_DIRECT`, then `fsync`s it.
fn direct_write(file: &Path, mib: f64) -> Result<()> {
    let blocks = (mib / 4.0).ceil();
    run_checked(
        Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", file.display()))
            .args(["bs=4M", "oflag=direct", "conv=fsync", "status=none"])
            .arg(format!("count={blocks:.0}")),
    )
}

fn timed(what: &str, f: impl FnOnce() -> Result<()>) -> Result<Run> {
    sync();
    let cpu_before = busy_cpu()?;
    let start = Instant::now();
    f().with_context(|| what.to_owned())?;
    let wall = start.elapsed();
    let cpu = busy_cpu()?.saturating_sub(cpu_before);
    eprintln!(
        "  {what}: {:.2} s, {:.2} s of CPU",
        wall.as_secs_f64(),
        cpu.as_secs_f64()
    );
    Ok(Run { wall, cpu })
}

/// One timed step: its wall clock, and the CPU time the whole machine was busy meanwhile (every
/// core, user and kernel: the kernel's writeback threads work for whoever dirtied the pages).
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    cpu: Duration,
}

/// Medians of a tool's runs, in seconds: (wall clock, busy CPU).
fn medians(runs: &[Run]) -> Option<(f64, f64)> {
    if runs.is_empty() {
        return None;
    }
    let wall: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
    let cpu: Vec<Duration> = runs.iter().map(|r| r.cpu).collect();
    Some((
        quantile(&wall, 50).as_secs_f64(),
        quantile(&cpu, 50).as_secs_f64(),
    ))
}

/// Time every CPU of the machine has spent busy since boot (`/proc/stat`: user, nice, system,
/// irq, softirq and steal; guest time is inside user).
fn busy_cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat has no cpu line")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("parsing /proc/stat's cpu line")?;
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| ticks.get(i).copied().unwrap_or(0))
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .context("sysconf(CLK_TCK)")?
        .and_then(|hz| u64::try_from(hz).ok())
        .filter(|&hz| hz > 0)
        .context("no clock tick rate")?;
    Ok(Duration::from_nanos(
        busy.saturating_mul(1_000_000_000) / hz,
    ))
}

#[derive(Default)]
struct Samples {
    /// `tar -x` alone: data may still be in the page cache, not on disk.
    tar: Vec<Run>,
    /// `tar -x && sync`: the durable practical limit, as strata syncs before it commits.
    tar_sync: Vec<Run>,
    /// `dd oflag=direct conv=fsync` of as many bytes as the layers: the disk's write floor for
    /// a durable import, whatever the CPU does.
    disk: Vec<Run>,
    strata: Vec<Run>,
    strata_again: Vec<Run>,
    docker: Vec<Run>,
}

/// Writes the layer tars and the docker-save archive into `work`; returns the layer paths, the
/// archive path and the MiB of layer tars.
fn generate(size_mib: u64, work: &Path) -> Result<(Vec<PathBuf>, PathBuf, f64)> {
    eprintln!("generating a ~{} MiB image in {}", size_mib, work.display());
    let mut rng = Rng(0x5354_5241_5441_0001); // "STRATA" + 1: fixed seed.
    let mut layer_paths = Vec::new();
    let mut layer_bytes = 0;
    for (i, layer) in plan(size_mib).iter().enumerate() {
        let path = work.join(format!("layer{i}.tar"));
        layer_bytes += write_layer(&path, i, layer, &mut rng)?;
        layer_paths.push(path);
    }
    let archive = work.join("image.tar");
    let image = ImageBuilder::new(Vec::new(), &[TAG]);
    let paths: Vec<&Path> = layer_paths.iter().map(PathBuf::as_path).collect();
    image
        .write_docker_save_legacy_from_files(&paths, BufWriter::new(File::create(&archive)?))
        .context("writing the docker-save archive")?;
    // KiB fit in u32 up to 4 TiB, and f64 holds u32 exactly.
    let mib = f64::from(u32::try_from(layer_bytes >> 10).unwrap_or(u32::MAX)) / 1024.0;
    eprintln!(
        "image: {} layers, {mib:.0} MiB of layer tars",
        layer_paths.len()
    );

    Ok((layer_paths, archive, mib))
}

pub(crate) fn import(options: &Options) -> Result<Vec<Figure>> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the import benchmark needs root (overlay, file owners, dockerd)");
    }
    let binaries = if options.strata {
        Some(build_release_binaries()?)
    } else {
        None
    };
    let work = work_dir(&options.dir)?;
    let (layer_paths, archive, mib) = generate(options.size_mib, work.path())?;

    let mut samples = Samples::default();
    // Nothing written is deleted until every run is done: on ext4 without a journal (this
    // machine's), creating inodes just after deleting many makes the allocator skip the
    // recently deleted ones (`recently_deleted`), which doubled the system time of whichever
    // tool ran next (measured: tar -x 1.2 s -> 2.8 s of system time).
    // By default every step gets a filesystem of its own instead, dropped after it.
    let mut keep_daemons = Vec::new();
    let mut keep_dockerds = Vec::new();
    let fs_size = (options.size_mib << 22).max(4 << 30);
    let place = |step: &str| -> Result<(Option<FreshFs>, PathBuf)> {
        if !options.fresh_fs {
            return Ok((None, work.path().to_owned()));
        }
        let fs = FreshFs::new(work.path(), step, fs_size)?;
        let base = fs.mount.clone();
        Ok((Some(fs), base))
    };
    for run in 0..options.runs {
        eprintln!("run {}/{}", run + 1, options.runs);
        let (fs, base) = place(&format!("tar-{run}"))?;
        let dest = base.join(format!("extract-{run}"));
        samples.tar.push(timed("tar -x of every layer", || {
            untar_layers(&layer_paths, &dest)
        })?);
        // Untimed: its writes must not land in the next tool's sync.
        sync();
        drop(fs);
        let (fs, base) = place(&format!("tar-sync-{run}"))?;
        let dest = base.join(format!("extract-{run}-sync"));
        samples
            .tar_sync
            .push(timed("tar -x of every layer && sync", || {
                untar_layers(&layer_paths, &dest)?;
                sync();
                Ok(())
            })?);
        drop(fs);
        let (fs, base) = place(&format!("disk-{run}"))?;
        let file = base.join(format!("direct-{run}"));
        samples
            .disk
            .push(timed("direct write of as many bytes", || {
                direct_write(&file, mib)
            })?);
        drop(fs);

        if let Some((stratad, strata)) = &binaries {
            let (fs, base) = place(&format!("strata-{run}"))?;
            let daemon = time_strata(stratad, strata, &base, &archive, &mut samples)?;
            if fs.is_none() {
                keep_daemons.push(daemon);
            }
        }

        if options.docker {
            let (fs, base) = place(&format!("docker-{run}"))?;
            let docker = Dockerd::start_in(&base);
            samples
                .docker
                .push(timed("docker load (fresh dockerd)", || {
                    let out = docker
                        .command()
                        .arg("load")
                        .arg("-q")
                        .arg("-i")
                        .arg(&archive)
                        .stdout(Stdio::null())
                        .output()?;
                    if !out.status.success() {
                        bail!(
                            "docker load failed: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    sync();
                    Ok(())
                })?);
            if fs.is_none() {
                keep_dockerds.push(docker);
            }
        }
    }
    drop((keep_daemons, keep_dockerds));
    print_table(&samples, mib);
    Ok(figures(&samples, mib))
}

/// Starts a stratad with its root under `base` and times two imports of `archive` into it: a
/// fresh store, then the same archive again. Returns the daemon, so that its files stay.
fn time_strata(
    stratad: &Path,
    strata: &Path,
    base: &Path,
    archive: &Path,
    samples: &mut Samples,
) -> Result<Stratad> {
    let daemon = Stratad::start_in(stratad, base);
    let import = |label: &str| {
        timed(label, || {
            strata_import(&daemon, strata, archive);
            sync();
            Ok(())
        })
    };
    samples
        .strata
        .push(import("strata image import (fresh store)")?);
    samples
        .strata_again
        .push(import("strata image import (again, same store)")?);
    Ok(daemon)
}

/// Issue 7's import targets: at least 0.8x `tar -x`, and faster than `docker load`. Beside
/// them, what the import costs in CPU, and so how fast it could be with every core busy.
fn figures(samples: &Samples, mib: f64) -> Vec<Figure> {
    let (Some((tar, _)), Some((tar_sync, tar_sync_cpu)), Some((disk, _))) = (
        medians(&samples.tar),
        medians(&samples.tar_sync),
        medians(&samples.disk),
    ) else {
        return Vec::new();
    };
    let what = format!("import {mib:.0} MiB, 5 layers, fresh store");
    let mut out = Vec::new();
    let Some((s, s_cpu)) = medians(&samples.strata) else {
        return out;
    };
    out.push(
        Figure::new("import", what.clone(), format!("{s:.2} s"))
            .peer(
                format!("tar -x {tar:.2} s (+sync {tar_sync:.2} s)"),
                format!("{:.2}x tar -x, {:.2}x tar+sync", tar / s, tar_sync / s),
            )
            .target(">= 0.8x tar -x", tar / s >= 0.8),
    );
    out.push(
        Figure::new("import", what.clone(), format!("{s:.2} s")).peer(
            format!("direct write of as many bytes {disk:.2} s"),
            format!("{:.2}x the disk's write floor", disk / s),
        ),
    );
    let cores = std::thread::available_parallelism()
        .ok()
        .and_then(|n| u32::try_from(n.get()).ok())
        .unwrap_or(1);
    let floor = s_cpu / f64::from(cores);
    out.push(
        Figure::new(
            "import",
            "CPU busy meanwhile (every core, with writeback)",
            format!("{s_cpu:.2} s"),
        )
        .peer(
            format!("tar -x && sync {tar_sync_cpu:.2} s"),
            format!(
                "{floor:.2} s on {cores} cores at best: {:.2}x tar -x",
                tar / floor
            ),
        ),
    );
    if let Some((d, _)) = medians(&samples.docker) {
        out.push(
            Figure::new("import", what, format!("{s:.2} s"))
                .peer(
                    format!("docker load {d:.2} s"),
                    format!("{:.2}x faster", d / s),
                )
                .target("faster than docker load", s < d),
        );
    }
    if let Some((again, _)) = medians(&samples.strata_again) {
        out.push(
            Figure::new(
                "import",
                "the same archive again (layers stored)",
                format!("{again:.2} s"),
            )
            .peer(
                format!("tar -x {tar:.2} s"),
                format!("{:.1}x tar -x", tar / again),
            ),
        );
    }
    out
}

fn print_table(samples: &Samples, mib: f64) {
    let (Some((tar, _)), Some((tar_sync, _))) = (medians(&samples.tar), medians(&samples.tar_sync))
    else {
        return;
    };
    println!();
    println!(
        "import of {mib:.0} MiB (5 layers), median of {} runs",
        samples.tar.len()
    );
    println!(
        "{:<40} {:>10} {:>10} {:>12} {:>14} {:>10}",
        "", "seconds", "MiB/s", "vs tar -x", "vs tar+sync", "CPU s"
    );
    let rows = [
        ("tar -x (per layer, fresh dirs)", &samples.tar),
        ("tar -x && sync (durable)", &samples.tar_sync),
        ("direct write, as many bytes (disk floor)", &samples.disk),
        ("strata image import (fresh store)", &samples.strata),
        (
            "strata image import (already stored)",
            &samples.strata_again,
        ),
        ("docker load (fresh data root)", &samples.docker),
    ];
    for (name, runs) in rows {
        if let Some((secs, cpu)) = medians(runs) {
            println!(
                "{name:<40} {secs:>10.2} {:>10.1} {:>11.2}x {:>13.2}x {cpu:>10.2}",
                mib / secs,
                tar / secs,
                tar_sync / secs
            );
        }
    }
    let strata = medians(&samples.strata).map(|(wall, _)| wall);
    if let Some(s) = strata {
        println!(
            "\nstrata reaches {:.0} % of tar -x and {:.0} % of tar -x && sync",
            100.0 * tar / s,
            100.0 * tar_sync / s
        );
    }
    if let (Some(s), Some((d, _))) = (strata, medians(&samples.docker)) {
        println!("strata is {:.2}x the speed of docker load", d / s);
    }
}
