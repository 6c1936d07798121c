//! `cargo xtask bench probe`: the copy-up probe's overhead (issue 4 part 9).
//!
//! The host cannot place kprobes, so this boots the VM of [`crate::vm`] (same kernel, QEMU TCG)
//! with `xtask/vm/probe-bench-init.sh` as `/init` and the static `strata-probe-bench`
//! (`bench/probe-bench`) in place of stratad. The benchmark copies small lower files up through
//! an overlay on a tmpfs, one open-for-append + 1-byte write + close per sample, in blocks that
//! alternate (ABBA) between the probe attached and detached; it prints every sample. Here the
//! samples are checked (block counts; after each attached block the probe counted exactly that
//! block's copy-ups, all `file`, with the right bytes and no errors) and summarised: median,
//! p90 and p99 per mode (nearest rank), their ratios, and the spread of per-pair ratios.
//!
//! Two runs, one per [`Clock`]. Under `-icount` guest time is instruction-counted (1 ns per
//! guest instruction): reproducible from run to run, and a measure of the work the guest does
//! rather than of what each instruction costs the emulator. On the wall clock, TCG's own costs
//! and the host's noise come in: the same code has measured anywhere from -16% to +21% there.
//! Both are reported.
//!
//! The target is an attached median within 5% of the detached one. The verdict is reported, not
//! enforced: the exit status fails only on a broken run or a failed check.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::bench_report::{Figure, percentile};
use crate::vm::Clock;
use crate::{probe, vm};

const INIT_SH: &str = include_str!("../vm/probe-bench-init.sh");
const BINARY: &str = "strata-probe-bench";
/// Attached median over detached median must not exceed this.
const TARGET_RATIO: f64 = 1.05;

const USAGE_OPTIONS: &str = "--copyups N, --block N, --warmup N, --file-size BYTES, --timeout SECS, \
                             --binary PATH, --clock wall|icount|both";

#[derive(Debug)]
pub(crate) struct Options {
    /// Measured copy-ups per mode.
    copyups: usize,
    block: usize,
    warmup: usize,
    file_size: usize,
    timeout: Duration,
    /// A static `strata-probe-bench` built elsewhere, instead of building it here.
    binary: Option<PathBuf>,
    /// One VM run per clock, in this order.
    clocks: Vec<Clock>,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            copyups: 2000,
            block: 100,
            warmup: 100,
            file_size: 4096,
            timeout: Duration::from_mins(10),
            binary: None,
            clocks: vec![Clock::Icount, Clock::Wall],
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .with_context(|| format!("{arg} needs a value"))
                    .map(String::as_str)
            };
            match arg.as_str() {
                "--copyups" => options.copyups = value()?.parse().context("--copyups")?,
                "--block" => options.block = value()?.parse().context("--block")?,
                "--warmup" => options.warmup = value()?.parse().context("--warmup")?,
                "--file-size" => options.file_size = value()?.parse().context("--file-size")?,
                "--timeout" => {
                    options.timeout = Duration::from_secs(value()?.parse().context("--timeout")?);
                }
                "--binary" => options.binary = Some(PathBuf::from(value()?)),
                "--clock" => {
                    options.clocks = match value()? {
                        "wall" => vec![Clock::Wall],
                        "icount" => vec![Clock::Icount],
                        "both" => vec![Clock::Icount, Clock::Wall],
                        other => bail!("--clock {other}: expected wall, icount or both"),
                    };
                }
                other => bail!("unknown option {other} (bench probe takes {USAGE_OPTIONS})"),
            }
        }
        ensure!(
            options.block > 0
                && options.copyups > 0
                && options.copyups.is_multiple_of(options.block),
            "--copyups must be a positive multiple of --block"
        );
        ensure!(
            options.warmup > 0,
            "--warmup must be positive (the statistics block is as long)"
        );
        Ok(options)
    }
}

pub(crate) fn bench_probe(options: &Options) -> Result<Vec<Figure>> {
    let cache = vm::cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    vm::provision()?;

    let started = Instant::now();
    let binary = if let Some(path) = &options.binary {
        path.clone()
    } else {
        // The benchmark embeds the probe object: build (or confirm) it first.
        probe::build_probe().context("building the eBPF probe")?;
        vm::build_static(&["-p", BINARY, "--bin", BINARY])?.join(BINARY)
    };
    ensure!(
        vm::is_static_elf(&binary)?,
        "{} is dynamically linked",
        binary.display()
    );
    let kernel = vm::Kernel::fetch(&cache)?;
    let initramfs = cache.join("probe-bench-initramfs.cpio.gz");
    let mut cpio = vm::busybox_initramfs(INIT_SH, &kernel.overlay_ko)?;
    cpio.file(
        &format!("strata/{BINARY}"),
        0o755,
        &fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?,
    );
    vm::write_gzipped(&initramfs, &cpio.finish())?;
    let build_time = started.elapsed();

    // Under TCG the kernel distrusts the TSC and falls back to hpet, whose every read is
    // emulated MMIO: that would inflate the probe's two `bpf_ktime_get_ns` per copy-up (and
    // the benchmark's own clock reads) far beyond their cost on hardware, where the TSC is the
    // clocksource. QEMU's TSC is monotonic, so tell the kernel to use it.
    let bench_args = format!(
        "clocksource=tsc tsc=reliable strata.bench=--copyups,{},--block,{},--warmup,{},--file-size,{}",
        options.copyups, options.block, options.warmup, options.file_size
    );
    let mut figures = Vec::new();
    for &clock in &options.clocks {
        eprintln!(
            "xtask: bench probe: booting {} ({}, timeout {} s): {} copy-ups per mode in blocks of {}",
            kernel.package,
            clock_name(clock),
            options.timeout.as_secs(),
            options.copyups,
            options.block
        );
        let boot = vm::boot_vm(
            &kernel.vmlinuz,
            &initramfs,
            &bench_args,
            clock,
            options.timeout,
        )?;
        let console_log = cache.join(match clock {
            Clock::Wall => "probe-bench-console.log",
            Clock::Icount => "probe-bench-icount-console.log",
        });
        fs::write(&console_log, &boot.console)
            .with_context(|| format!("writing {}", console_log.display()))?;
        let timings = format!(
            "build {:.1} s, boot-to-result {:.1} s",
            build_time.as_secs_f64(),
            boot.elapsed.as_secs_f64()
        );
        let verdict = boot.verdict(options.timeout, || {
            match vm::sections(&boot.console).get("probe-bench") {
                Some(lines) => parse(lines)
                    .map_err(|e| vec![format!("parsing the probe-bench section: {e:#}")])
                    .and_then(|run| {
                        check(&run, options)?;
                        figures.push(overhead_figure(&run, options.file_size, clock));
                        figures.extend(programs_figure(&run, clock));
                        Ok(format!("{}:\n{}", clock_name(clock), report(&run)))
                    }),
                None => Err(vec!["no probe-bench section on the console".to_owned()]),
            }
        });
        let what = format!("bench probe ({})", clock_name(clock));
        if boot.report(&what, verdict, &timings, &console_log) != ExitCode::SUCCESS {
            bail!("bench probe failed (see above)");
        }
    }
    Ok(figures)
}

/// How a clock is named in the figures.
fn clock_name(clock: Clock) -> &'static str {
    match clock {
        Clock::Wall => "TCG, wall clock",
        Clock::Icount => "TCG -icount, 1 ns per guest instruction",
    }
}

/// Issue 4's target: the attached median within 5% of the detached one.
fn overhead_figure(run: &Run, file_size: usize, clock: Clock) -> Figure {
    let detached = Summary::of(run, false);
    let attached = Summary::of(run, true);
    let r = ratio(attached.p50, detached.p50);
    Figure::new(
        "probe",
        format!(
            "{} copy-ups of {file_size} B in the VM ({}), median",
            attached.count,
            clock_name(clock)
        ),
        format!("attached {:.1} us", micros(attached.p50)),
    )
    .peer(
        format!("detached {:.1} us", micros(detached.p50)),
        format!("{:+.1}%", (r - 1.0) * 100.0),
    )
    .target("within 5%", r <= TARGET_RATIO)
}

/// The programs' own time per copy-up, from the statistics block: (entry ns, return ns).
fn program_ns(run: &Run) -> Option<(u64, u64)> {
    let p = run.programs?;
    let per_run = |(runs, ns): (u64, u64)| ns.checked_div(runs).unwrap_or(0);
    Some((per_run(p.entry), per_run(p.ret)))
}

/// What the two programs themselves cost, beside the detached median (no target: the
/// overhead figure is the one judged).
fn programs_figure(run: &Run, clock: Clock) -> Option<Figure> {
    let (entry, ret) = program_ns(run)?;
    let detached = Summary::of(run, false);
    Some(
        Figure::new(
            "probe",
            format!(
                "the probe programs' own time per copy-up (kernel bpf_stats; {})",
                clock_name(clock)
            ),
            format!(
                "{:.1} us (entry {:.1} + return {:.1})",
                micros(entry + ret),
                micros(entry),
                micros(ret)
            ),
        )
        .peer(
            format!("detached copy-up {:.1} us", micros(detached.p50)),
            format!("{:.1}%", 100.0 * ratio(entry + ret, detached.p50)),
        ),
    )
}

/// The probe's figures after one attached block.
#[derive(Debug, Default, Clone, PartialEq)]
struct ProbeFigures {
    /// Kind name -> (count, bytes), on the benchmark's overlay.
    kinds: BTreeMap<String, (u64, u64)>,
    errors: u64,
    latency_sum_ns: u64,
    /// Copy-ups on any other overlay.
    elsewhere: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Block {
    index: usize,
    attached: bool,
    samples_ns: Vec<u64>,
    /// Attached blocks only.
    probe: Option<ProbeFigures>,
}

/// The benchmark's output.
#[derive(Debug, Default, Clone, PartialEq)]
struct Run {
    config: BTreeMap<String, String>,
    /// Loading the probe, once.
    load_ns: Option<u64>,
    attach_ns: Vec<u64>,
    detach_ns: Vec<u64>,
    blocks: Vec<Block>,
    upper_files: Option<usize>,
    programs: Option<ProgramStats>,
}

/// The kernel's run-time statistics of the two programs over one last, untimed attached block.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProgramStats {
    copyups: u64,
    /// (runs, total ns) of the entry program.
    entry: (u64, u64),
    /// (runs, total ns) of the return program.
    ret: (u64, u64),
}

impl ProgramStats {
    fn parse<'a>(words: impl Iterator<Item = &'a str>) -> Result<Self> {
        let mut copyups = None;
        let mut entry = None;
        let mut ret = None;
        for word in words {
            let (key, value) = word
                .split_once('=')
                .context("program-stats word without =")?;
            let runs_ns = || -> Result<(u64, u64)> {
                let (runs, ns) = value.split_once('/').context("without runs/ns")?;
                Ok((runs.parse()?, ns.parse()?))
            };
            match key {
                "copyups" => copyups = Some(value.parse()?),
                "entry" => entry = Some(runs_ns()?),
                "return" => ret = Some(runs_ns()?),
                other => bail!("unknown program-stats field {other}"),
            }
        }
        Ok(Self {
            copyups: copyups.context("no copyups")?,
            entry: entry.context("no entry")?,
            ret: ret.context("no return")?,
        })
    }
}

fn parse(lines: &[String]) -> Result<Run> {
    let mut run = Run::default();
    for line in lines {
        let mut words = line.split_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        let parsed = (|| {
            match keyword {
                "config" => {
                    for word in words {
                        let (key, value) = word.split_once('=').context("config word without =")?;
                        run.config.insert(key.to_owned(), value.to_owned());
                    }
                }
                "load" => run.load_ns = Some(words.next().context("no value")?.parse()?),
                "attach" => run
                    .attach_ns
                    .push(words.next().context("no value")?.parse()?),
                "detach" => run
                    .detach_ns
                    .push(words.next().context("no value")?.parse()?),
                "block" => {
                    let index = words.next().context("no index")?.parse()?;
                    let attached = match words.next() {
                        Some("attached") => true,
                        Some("detached") => false,
                        other => bail!("mode {other:?}"),
                    };
                    let samples_ns = words.map(str::parse).collect::<Result<Vec<u64>, _>>()?;
                    run.blocks.push(Block {
                        index,
                        attached,
                        samples_ns,
                        probe: None,
                    });
                }
                "probe" => {
                    let index: usize = words.next().context("no index")?.parse()?;
                    let mut figures = ProbeFigures::default();
                    for word in words {
                        let (key, value) = word.split_once('=').context("probe word without =")?;
                        match key {
                            "errors" => figures.errors = value.parse()?,
                            "latency-sum-ns" => figures.latency_sum_ns = value.parse()?,
                            "elsewhere" => figures.elsewhere = value.parse()?,
                            kind => {
                                let (count, bytes) =
                                    value.split_once('/').context("kind without count/bytes")?;
                                figures
                                    .kinds
                                    .insert(kind.to_owned(), (count.parse()?, bytes.parse()?));
                            }
                        }
                    }
                    let block = run
                        .blocks
                        .iter_mut()
                        .find(|b| b.index == index)
                        .context("probe line before its block")?;
                    block.probe = Some(figures);
                }
                "program-stats" => run.programs = Some(ProgramStats::parse(words)?),
                "upper-files" => {
                    run.upper_files = Some(words.next().context("no value")?.parse()?);
                }
                other => bail!("unknown line kind {other}"),
            }
            anyhow::Ok(())
        })();
        parsed.with_context(|| format!("line {:?}", abbreviate(line)))?;
    }
    Ok(run)
}

fn abbreviate(line: &str) -> String {
    if line.len() > 80 {
        format!("{}...", &line[..line.floor_char_boundary(80)])
    } else {
        line.to_owned()
    }
}

/// Every sanity check; all failures at once.
fn check(run: &Run, options: &Options) -> std::result::Result<(), Vec<String>> {
    let mut failures = Vec::new();
    let expect_config = [
        ("copyups", options.copyups),
        ("block", options.block),
        ("warmup", options.warmup),
        ("file-size", options.file_size),
    ];
    for (key, want) in expect_config {
        if run.config.get(key) != Some(&want.to_string()) {
            failures.push(format!(
                "config {key}: expected {want}, got {:?}",
                run.config.get(key)
            ));
        }
    }
    let per_mode = options.copyups / options.block;
    for attached in [true, false] {
        let blocks = run.blocks.iter().filter(|b| b.attached == attached).count();
        if blocks != per_mode {
            failures.push(format!(
                "{} blocks: {blocks}, expected {per_mode}",
                mode_name(attached)
            ));
        }
    }
    if run.load_ns.is_none() {
        failures.push("no load line".to_owned());
    }
    if run.attach_ns.len() != per_mode || run.detach_ns.len() != per_mode {
        failures.push(format!(
            "{} attaches and {} detaches, expected {per_mode} each",
            run.attach_ns.len(),
            run.detach_ns.len()
        ));
    }
    let stats_block = options.warmup as u64;
    for b in &run.blocks {
        check_block(b, options, &mut failures);
    }
    match run.programs {
        None => failures.push("no program-stats line".to_owned()),
        Some(p)
            if p.copyups != stats_block || p.entry.0 != stats_block || p.ret.0 != stats_block =>
        {
            failures.push(format!(
                "program statistics: entry ran {} and return {} times for {} copy-ups, \
                 expected {stats_block} each",
                p.entry.0, p.ret.0, p.copyups
            ));
        }
        Some(_) => {}
    }
    let want_upper = 2 * (options.copyups + options.warmup) + options.warmup;
    if run.upper_files != Some(want_upper) {
        failures.push(format!(
            "upper dir holds {:?} files, expected {want_upper} (one per copy-up)",
            run.upper_files
        ));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// One block's sample count and, for an attached block, the probe's exact figures.
fn check_block(b: &Block, options: &Options, failures: &mut Vec<String>) {
    let block = options.block as u64;
    if b.samples_ns.len() != options.block {
        failures.push(format!(
            "block {}: {} samples, expected {}",
            b.index,
            b.samples_ns.len(),
            options.block
        ));
    }
    match (&b.probe, b.attached) {
        (None, false) => {}
        (Some(_), false) => {
            failures.push(format!("detached block {} has probe figures", b.index));
        }
        (None, true) => failures.push(format!("attached block {}: no probe figures", b.index)),
        (Some(p), true) => {
            let want_file = (block, block * options.file_size as u64);
            for (kind, want) in [
                ("file", want_file),
                ("dir", (0, 0)),
                ("symlink", (0, 0)),
                ("other", (0, 0)),
            ] {
                let got = p.kinds.get(kind).copied();
                if got != Some(want) {
                    failures.push(format!(
                        "attached block {}: probe counted {kind} (copy-ups, bytes) {got:?}, \
                         expected {want:?}",
                        b.index
                    ));
                }
            }
            if p.errors != 0 || p.elsewhere != 0 {
                failures.push(format!(
                    "attached block {}: probe errors {}, copy-ups on other overlays {}",
                    b.index, p.errors, p.elsewhere
                ));
            }
        }
    }
}

fn mode_name(attached: bool) -> &'static str {
    if attached { "attached" } else { "detached" }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "nanosecond figures, far below 2^52"
)]
fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

#[expect(
    clippy::cast_precision_loss,
    reason = "nanosecond figures, far below 2^52"
)]
fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b as f64
}

fn sorted(values: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut values: Vec<u64> = values.into_iter().collect();
    values.sort_unstable();
    values
}

/// Figures of one mode.
#[derive(Debug)]
struct Summary {
    count: usize,
    p50: u64,
    p90: u64,
    p99: u64,
    mean: u64,
}

impl Summary {
    fn of(run: &Run, attached: bool) -> Self {
        let samples = sorted(
            run.blocks
                .iter()
                .filter(|b| b.attached == attached)
                .flat_map(|b| b.samples_ns.iter().copied()),
        );
        let total: u64 = samples.iter().sum();
        Self {
            count: samples.len(),
            p50: percentile(&samples, 50),
            p90: percentile(&samples, 90),
            p99: percentile(&samples, 99),
            mean: total / samples.len() as u64,
        }
    }
}

/// The table printed after a good run.
#[expect(
    clippy::cast_precision_loss,
    reason = "small counts and nanosecond figures"
)]
fn report(run: &Run) -> String {
    let detached = Summary::of(run, false);
    let attached = Summary::of(run, true);
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "{:<9} {:>8} {:>12} {:>12} {:>12} {:>12}",
        "PROBE", "COPY-UPS", "MEDIAN us", "P90 us", "P99 us", "MEAN us"
    ));
    for (name, s) in [("detached", &detached), ("attached", &attached)] {
        line(format!(
            "{name:<9} {:>8} {:>12.1} {:>12.1} {:>12.1} {:>12.1}",
            s.count,
            micros(s.p50),
            micros(s.p90),
            micros(s.p99),
            micros(s.mean)
        ));
    }
    line(format!(
        "{:<9} {:>8} {:>12.3} {:>12.3} {:>12.3} {:>12.3}",
        "ratio",
        "",
        ratio(attached.p50, detached.p50),
        ratio(attached.p90, detached.p90),
        ratio(attached.p99, detached.p99),
        ratio(attached.mean, detached.mean)
    ));

    // Neighbouring blocks (ABBA pairs) share the VM's conditions of the moment: the spread of
    // their median ratios shows how much of the difference is noise.
    let mut pair_ratios: Vec<f64> = run
        .blocks
        .chunks(2)
        .filter_map(|pair| {
            let a = pair.iter().find(|b| b.attached)?;
            let d = pair.iter().find(|b| !b.attached)?;
            Some(ratio(
                percentile(&sorted(a.samples_ns.iter().copied()), 50),
                percentile(&sorted(d.samples_ns.iter().copied()), 50),
            ))
        })
        .collect();
    pair_ratios.sort_by(f64::total_cmp);
    if let (Some(first), Some(last)) = (pair_ratios.first(), pair_ratios.last()) {
        line(format!(
            "per-block-pair median ratio: median {:.3}, min {first:.3}, max {last:.3} ({} pairs)",
            pair_ratios[(pair_ratios.len() - 1) / 2],
            pair_ratios.len()
        ));
    }

    let in_kernel_ns: u64 = run
        .blocks
        .iter()
        .filter_map(|b| b.probe.as_ref())
        .map(|p| p.latency_sum_ns)
        .sum();
    let attach = sorted(run.attach_ns.iter().copied());
    let detach = sorted(run.detach_ns.iter().copied());
    line(format!(
        "probe: counted every attached copy-up ({} in {} blocks); in-kernel ovl_copy_up_one mean \
         {:.1} us; load {:.1} ms once, then attach median {:.1} ms, detach median {:.1} ms",
        attached.count,
        run.attach_ns.len(),
        micros(in_kernel_ns) / attached.count as f64,
        micros(run.load_ns.unwrap_or(0)) / 1000.0,
        micros(percentile(&attach, 50)) / 1000.0,
        micros(percentile(&detach, 50)) / 1000.0,
    ));
    if let (Some(p), Some((entry, ret))) = (run.programs, program_ns(run)) {
        line(format!(
            "probe programs (kernel bpf_stats, one more attached block of {}): entry {:.1} us + \
             return {:.1} us = {:.1} us per copy-up, {:.1}% of the detached median",
            p.copyups,
            micros(entry),
            micros(ret),
            micros(entry + ret),
            100.0 * ratio(entry + ret, detached.p50)
        ));
    }
    let median_ratio = ratio(attached.p50, detached.p50);
    let verdict = if median_ratio <= TARGET_RATIO {
        "met"
    } else {
        "MISSED"
    };
    let mut text = String::new();
    write!(
        text,
        "target (attached median within {:.0}% of detached): {verdict} ({:+.1}%)",
        (TARGET_RATIO - 1.0) * 100.0,
        (median_ratio - 1.0) * 100.0
    )
    .expect("writing to a String");
    line(text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn a_consistent_run_parses_checks_and_reports() {
        let run = parse(&lines(
            "config copyups=2 block=2 file-size=4096 warmup=1\n\
             load 90000000\n\
             attach 5000000\n\
             detach 1000000\n\
             block 0 attached 1500 3000\n\
             probe 0 file=2/8192 dir=0/0 symlink=0/0 other=0/0 errors=0 latency-sum-ns=1500 elsewhere=0\n\
             block 1 detached 1000 2000\n\
             program-stats copyups=1 entry=1/200 return=1/300\n\
             upper-files 7",
        ))
        .expect("parses");
        let options =
            Options::parse(&["--copyups", "2", "--block", "2", "--warmup", "1"].map(String::from))
                .expect("options");
        check(&run, &options).expect("consistent");
        let table = report(&run);
        assert!(table.contains("ratio"), "{table}");
        assert!(table.contains("MISSED (+50.0%)"), "{table}");
        assert!(
            table.contains("entry 0.2 us + return 0.3 us = 0.5 us per copy-up, 50.0% of"),
            "{table}"
        );
        let programs = programs_figure(&run, Clock::Wall).expect("a programs figure");
        assert_eq!(programs.strata, "0.5 us (entry 0.2 + return 0.3)");
        assert_eq!(programs.ratio.as_deref(), Some("50.0%"));
    }

    #[test]
    fn a_miscount_fails_the_check() {
        let run = parse(&lines(
            "config copyups=2 block=2 file-size=4096 warmup=1\n\
             load 1\n\
             attach 1\n\
             detach 1\n\
             block 0 attached 1 1\n\
             probe 0 file=1/4096 dir=1/0 symlink=0/0 other=0/0 errors=0 latency-sum-ns=1 elsewhere=0\n\
             block 1 detached 1 1\n\
             program-stats copyups=1 entry=1/10 return=0/10\n\
             upper-files 7",
        ))
        .expect("parses");
        let options =
            Options::parse(&["--copyups", "2", "--block", "2", "--warmup", "1"].map(String::from))
                .expect("options");
        let failures = check(&run, &options).expect_err("miscount");
        assert_eq!(failures.len(), 3, "{failures:#?}");
        assert!(
            failures[2].contains("entry ran 1 and return 0 times"),
            "{failures:#?}"
        );
    }
}
