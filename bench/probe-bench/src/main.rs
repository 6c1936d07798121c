//! `strata-probe-bench`: the copy-up probe's overhead (issue 4 part 9), run as root inside the
//! VM of `cargo xtask bench probe` (the probe needs a kernel that allows kprobes).
//!
//! It mounts a tmpfs at `--dir` holding an overlay (`lower` with small files, `upper`, `work`,
//! `merged`) and copies files up one at a time: each sample is `open(O_WRONLY | O_APPEND)` of a
//! lower file through `merged` (the copy-up happens in the open), a 1-byte write and the close,
//! timed with [`Instant`]. The probe ([`CopyUpProbe::embedded`]) is loaded once; samples come
//! in blocks, alternately with its kprobes attached and detached ([`CopyUpProbe::detach`]), in
//! ABBA order so that neither mode always goes first; a warm-up block of each mode is not
//! reported. The process pins itself to CPU 0.
//!
//! Output, between `=== begin probe-bench ===` and `=== end probe-bench ===` (figures are
//! checked and summarised by xtask, not here):
//!
//! ```text
//! config copyups=N block=B file-size=S
//! load NS                   # loading the probe once: BTF offsets, verifier, first attach
//! attach NS                 # attaching its kprobes before each attached block
//! detach NS                 # detaching them after it (the programs stay loaded)
//! block I attached|detached NS NS ...
//! probe I KIND=COUNT/BYTES ... errors=E latency-sum-ns=L elsewhere=X   # after attached block I
//! program-stats copyups=W entry=RUNS/NS return=RUNS/NS   # a last, untimed attached block
//! upper-files N
//! ```

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use strata_daemon::probe::{CopyUpProbe, kernel_dev, kind};

const USAGE: &str = "usage: strata-probe-bench [--copyups N] [--block N] [--file-size BYTES] \
                     [--warmup N] [--dir DIR]";

/// The kinds in `probe::kind` order, as printed.
const KIND_NAMES: [&str; kind::COUNT] = ["file", "dir", "symlink", "other"];

#[derive(Debug)]
struct Options {
    /// Measured copy-ups per mode.
    copyups: usize,
    /// Copy-ups per block.
    block: usize,
    file_size: usize,
    /// Unreported copy-ups per mode before the measured blocks.
    warmup: usize,
    dir: PathBuf,
}

impl Options {
    fn parse() -> Result<Self> {
        let mut options = Self {
            copyups: 2000,
            block: 100,
            file_size: 4096,
            warmup: 100,
            dir: PathBuf::from("/tmp/probe-bench"),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--copyups" => options.copyups = value()?.parse().context("--copyups")?,
                "--block" => options.block = value()?.parse().context("--block")?,
                "--file-size" => options.file_size = value()?.parse().context("--file-size")?,
                "--warmup" => options.warmup = value()?.parse().context("--warmup")?,
                "--dir" => options.dir = PathBuf::from(value()?),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other}\n{USAGE}"),
            }
        }
        ensure!(options.block > 0, "--block must be positive");
        ensure!(
            options.warmup > 0,
            "--warmup must be positive (the statistics block is as long)"
        );
        ensure!(
            options.copyups > 0 && options.copyups.is_multiple_of(options.block),
            "--copyups must be a positive multiple of --block"
        );
        Ok(options)
    }
}

fn main() -> ExitCode {
    match Options::parse().and_then(|options| run(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-probe-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The overlay under test, unmounted on drop.
#[derive(Debug)]
struct Overlay {
    root: PathBuf,
    merged: PathBuf,
    upper: PathBuf,
}

impl Overlay {
    fn create(root: &Path, files: usize, file_size: usize) -> Result<Self> {
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        mount(
            Some("tmpfs"),
            root,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("mode=755"),
        )
        .with_context(|| format!("mounting a tmpfs at {}", root.display()))?;
        let overlay = Self {
            root: root.to_path_buf(),
            merged: root.join("merged"),
            upper: root.join("upper"),
        };
        let lower = root.join("lower");
        let work = root.join("work");
        for dir in [&lower, &overlay.upper, &work, &overlay.merged] {
            fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // In the lower root, so each copy-up is one file and no parent directory.
        let contents: Vec<u8> = b"strata probe-bench lower file\n"
            .iter()
            .copied()
            .cycle()
            .take(file_size)
            .collect();
        for i in 0..files {
            let path = lower.join(file_name(i));
            fs::write(&path, &contents).with_context(|| format!("writing {}", path.display()))?;
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            overlay.upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            &overlay.merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .with_context(|| format!("mounting the overlay at {}", overlay.merged.display()))?;
        Ok(overlay)
    }

    /// The overlay superblock's device as the probe keys it.
    fn kernel_dev(&self) -> Result<u32> {
        let metadata = fs::metadata(&self.merged)
            .with_context(|| format!("stat {}", self.merged.display()))?;
        Ok(kernel_dev(metadata.dev()))
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = umount2(&self.merged, MntFlags::MNT_DETACH);
        let _ = umount2(&self.root, MntFlags::MNT_DETACH);
    }
}

fn file_name(i: usize) -> String {
    format!("f{i:06}")
}

/// One timed copy-up: open for append through the overlay (copies the file up), write one
/// byte, close. Returns nanoseconds.
fn copy_up(path: &Path) -> Result<u64> {
    let started = Instant::now();
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {} for append", path.display()))?;
    file.write_all(b"x")
        .with_context(|| format!("writing {}", path.display()))?;
    drop(file);
    let elapsed = started.elapsed();
    Ok(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
}

/// Copies up the next `count` files; returns their latencies.
fn run_block(merged: &Path, next_file: &mut usize, count: usize) -> Result<Vec<u64>> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        samples.push(copy_up(&merged.join(file_name(*next_file)))?);
        *next_file += 1;
    }
    Ok(samples)
}

/// Loads and attaches the probe (BTF offsets, verifier, kprobes): once per run.
fn load(log: &mut String) -> Result<CopyUpProbe> {
    ensure!(
        CopyUpProbe::is_embedded(),
        "this binary was built without the probe object; run `cargo xtask build-probe` first"
    );
    let started = Instant::now();
    let probe = CopyUpProbe::embedded().context("loading the copy-up probe")?;
    writeln!(log, "load {}", started.elapsed().as_nanos()).expect("writing to a String");
    Ok(probe)
}

/// Attaches the loaded programs to `ovl_copy_up_one` again.
fn attach(probe: &mut CopyUpProbe, log: &mut String) -> Result<()> {
    let started = Instant::now();
    probe.attach().context("attaching the copy-up probe")?;
    writeln!(log, "attach {}", started.elapsed().as_nanos()).expect("writing to a String");
    Ok(())
}

/// Takes the programs off `ovl_copy_up_one`; they stay loaded.
fn detach(probe: &mut CopyUpProbe, log: &mut String) -> Result<()> {
    let started = Instant::now();
    probe.detach().context("detaching the copy-up probe")?;
    writeln!(log, "detach {}", started.elapsed().as_nanos()).expect("writing to a String");
    Ok(())
}

/// The probe's figures for `dev`, and the copy-ups it saw on any other device.
fn probe_line(probe: &CopyUpProbe, index: usize, dev: u32) -> Result<String> {
    let totals = probe.read().context("reading the probe's map")?;
    let mut line = format!("probe {index}");
    let ours = totals.get(&dev).copied().unwrap_or_default();
    for (k, name) in KIND_NAMES.iter().enumerate() {
        write!(line, " {name}={}/{}", ours.count[k], ours.bytes[k]).expect("writing to a String");
    }
    let elsewhere: u64 = totals
        .iter()
        .filter(|(d, _)| **d != dev)
        .map(|(_, t)| t.copy_ups())
        .sum();
    write!(
        line,
        " errors={} latency-sum-ns={} elsewhere={elsewhere}",
        ours.errors.iter().sum::<u64>(),
        ours.latency_sum_ns.iter().sum::<u64>(),
    )
    .expect("writing to a String");
    Ok(line)
}

/// One more attached block, untimed, with the kernel's eBPF run-time statistics on: what the
/// two programs themselves cost per copy-up. Apart from the measured blocks, as the statistics
/// add two clock reads to every program run. The kernel counts runs only while the statistics
/// are on, so the figures are this block's alone.
fn program_stats(
    probe: &mut CopyUpProbe,
    merged: &Path,
    next_file: &mut usize,
    count: usize,
) -> Result<String> {
    attach(probe, &mut String::new())?;
    settle();
    let stats = CopyUpProbe::enable_run_time_stats().context("enabling run-time statistics")?;
    run_block(merged, next_file, count)?;
    let runs = probe
        .program_run_times()
        .context("reading the programs' run times")?;
    drop(stats);
    detach(probe, &mut String::new())?;
    let [(entry_runs, entry_time), (return_runs, return_time)] = runs;
    Ok(format!(
        "program-stats copyups={count} entry={entry_runs}/{} return={return_runs}/{}\n",
        entry_time.as_nanos(),
        return_time.as_nanos()
    ))
}

/// Lets deferred work of an attach or detach (RCU callbacks, freeing programs) pass before the
/// next block is timed.
fn settle() {
    std::thread::sleep(Duration::from_millis(50));
}

fn run(options: &Options) -> Result<()> {
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(0).context("CPU set")?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)
        .context("pinning to CPU 0")?;

    // The measured blocks, both warm-ups and the statistics block (as long as a warm-up).
    let files = options.copyups * 2 + options.warmup * 3;
    let overlay = Overlay::create(&options.dir, files, options.file_size)?;
    let dev = overlay.kernel_dev()?;
    let mut next_file = 0;
    let mut out = String::new();
    writeln!(
        out,
        "config copyups={} block={} file-size={} warmup={}",
        options.copyups, options.block, options.file_size, options.warmup
    )
    .expect("writing to a String");

    // Loaded once (BTF, verifier: about 1 s under TCG); the blocks only attach and detach its
    // kprobes (about 30 ms to attach and 180 ms to detach, measured under TCG).
    let mut probe = load(&mut out)?;
    settle();
    run_block(&overlay.merged, &mut next_file, options.warmup)?;
    detach(&mut probe, &mut String::new())?;
    settle();
    run_block(&overlay.merged, &mut next_file, options.warmup)?;
    // Each attached block is then checked against counters that start from zero.
    probe.forget(dev).context("clearing the probe's counters")?;

    let blocks = options.copyups / options.block * 2;
    for index in 0..blocks {
        // ABBA: pair p runs attached first when p is even, detached first when odd.
        let attached = (index / 2 % 2 == 0) == (index % 2 == 0);
        if attached {
            attach(&mut probe, &mut out)?;
            settle();
            let samples = run_block(&overlay.merged, &mut next_file, options.block)?;
            detach(&mut probe, &mut out)?;
            let line = probe_line(&probe, index, dev)?;
            probe.forget(dev).context("clearing the probe's counters")?;
            push_block(&mut out, index, "attached", &samples);
            out.push_str(&line);
            out.push('\n');
        } else {
            settle();
            let samples = run_block(&overlay.merged, &mut next_file, options.block)?;
            push_block(&mut out, index, "detached", &samples);
        }
    }
    out.push_str(&program_stats(
        &mut probe,
        &overlay.merged,
        &mut next_file,
        options.warmup,
    )?);
    drop(probe);
    let upper_files = fs::read_dir(&overlay.upper)
        .with_context(|| format!("reading {}", overlay.upper.display()))?
        .count();
    writeln!(out, "upper-files {upper_files}").expect("writing to a String");
    drop(overlay);

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "=== begin probe-bench ===")?;
    stdout.write_all(out.as_bytes())?;
    writeln!(stdout, "=== end probe-bench ===")?;
    stdout.flush()?;
    Ok(())
}

fn push_block(out: &mut String, index: usize, mode: &str, samples: &[u64]) {
    write!(out, "block {index} {mode}").expect("writing to a String");
    for sample in samples {
        write!(out, " {sample}").expect("writing to a String");
    }
    out.push('\n');
}
