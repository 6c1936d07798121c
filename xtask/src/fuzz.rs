//! `cargo xtask fuzz [--seconds N] [TARGET...]`: runs the cargo-fuzz targets in `fuzz/`, each
//! for N seconds (default 20), all three unless targets are named.
//!
//! Provisions what it needs, once: the nightly toolchain (shared with `build-probe`) and
//! cargo-fuzz (`cargo +nightly install cargo-fuzz --locked`, into `~/.cargo/bin`). Builds the
//! targets with `cargo fuzz build` (release with debug assertions and the address sanitizer, into
//! `fuzz/target/`), then runs each on its checked-in seeds, `fuzz/corpus/<target>/`, which it
//! never writes to: new inputs go to `target/fuzz/<target>/corpus/` (kept, so later runs start
//! from them), libFuzzer's output to `target/fuzz/<target>/fuzz.log`, and a crashing input to
//! `target/fuzz/<target>/artifacts/`. A crash fails the task with the input's path, the
//! command that replays it and the end of the log. Each target that passes prints one line:
//! executions, seconds and corpus size.
//!
//! `cargo xtask test` runs all three for [`SMOKE_SECONDS`] each after `cargo test`.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::probe::{self, output, rustup_cargo};
use crate::{run_checked, workspace_root};

/// Every target in `fuzz/Cargo.toml`.
pub(crate) const TARGETS: [&str; 3] = ["archive_extract", "mount_spec", "record_decode"];

/// Seconds per target in `cargo xtask test`: enough to replay the seeds and mutate them for a
/// while, short enough that the three together take about half a minute once built.
pub(crate) const SMOKE_SECONDS: u64 = 10;

/// The cargo-fuzz that `--locked` installs when none is in `~/.cargo/bin`.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// One input running longer than this is reported as a crash (a hang is a bug too).
const INPUT_TIMEOUT_SECS: u64 = 30;

#[derive(Debug)]
pub(crate) struct Options {
    seconds: u64,
    targets: Vec<&'static str>,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let mut seconds = 20;
        let mut targets = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--seconds" => {
                    let value = args.next().context("--seconds needs a value")?;
                    seconds = value.parse().context("--seconds")?;
                }
                name => {
                    let Some(&target) = TARGETS.iter().find(|t| **t == name) else {
                        bail!(
                            "unknown fuzz target {name:?}; targets: {}",
                            TARGETS.join(" ")
                        );
                    };
                    targets.push(target);
                }
            }
        }
        if seconds == 0 {
            bail!("--seconds must be positive");
        }
        if targets.is_empty() {
            targets = TARGETS.to_vec();
        }
        Ok(Self { seconds, targets })
    }

    /// The run `cargo xtask test` makes: every target, [`SMOKE_SECONDS`] each.
    pub(crate) fn smoke() -> Self {
        Self {
            seconds: SMOKE_SECONDS,
            targets: TARGETS.to_vec(),
        }
    }
}

pub(crate) fn fuzz(options: &Options) -> Result<()> {
    probe::ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let triple = host_triple()?;

    let started = Instant::now();
    eprintln!("xtask: building the fuzz targets (cargo +nightly fuzz build)");
    run_checked(
        fuzz_cargo()
            .args(["fuzz", "build", "--fuzz-dir", "fuzz", "--target"])
            .arg(&triple),
    )?;
    eprintln!("xtask: fuzz targets built in {:.0?}", started.elapsed());

    let binaries = workspace_root()
        .join("fuzz/target")
        .join(&triple)
        .join("release");
    for target in &options.targets {
        let run = run_target(&binaries.join(target), target, options.seconds)?;
        println!(
            "fuzz {target}: {} executions in {:.1} s, corpus {} inputs",
            run.executions, run.seconds, run.corpus
        );
    }
    Ok(())
}

/// `cargo +nightly` for cargo-fuzz, from the workspace root, without the caller's target dir or
/// flags: cargo-fuzz sets its own, and its binaries must land in `fuzz/target/`.
fn fuzz_cargo() -> Command {
    let mut command = rustup_cargo();
    command
        .current_dir(workspace_root())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    command
}

fn cargo_fuzz_runs() -> bool {
    fuzz_cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ensure_cargo_fuzz() -> Result<()> {
    if cargo_fuzz_runs() {
        return Ok(());
    }
    let started = Instant::now();
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (once, into ~/.cargo/bin)");
    run_checked(fuzz_cargo().args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))?;
    if !cargo_fuzz_runs() {
        bail!(
            "cargo fuzz still does not run after installing it into {}",
            probe::cargo_home().join("bin").display()
        );
    }
    eprintln!("xtask: cargo-fuzz installed in {:.0?}", started.elapsed());
    Ok(())
}

/// The nightly's host triple: cargo-fuzz builds for it, and its binaries are under it.
fn host_triple() -> Result<String> {
    let version = output(Command::new("rustup").args(["run", probe::TOOLCHAIN, "rustc", "-vV"]))?;
    version
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV printed no host triple")
}

/// What one target's run did, from libFuzzer's final report.
#[derive(Debug, PartialEq)]
struct Run {
    executions: u64,
    seconds: f64,
    corpus: u64,
}

fn run_target(binary: &Path, target: &str, seconds: u64) -> Result<Run> {
    let scratch = workspace_root().join("target/fuzz").join(target);
    let corpus = scratch.join("corpus");
    let artifacts = scratch.join("artifacts");
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let log_path = scratch.join("fuzz.log");
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let seeds = workspace_root().join("fuzz/corpus").join(target);

    let mut command = Command::new(binary);
    command
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        // LeakSanitizer reports, now and then, the hashing thread that a failed extraction
        // leaves to finish on its own (detached, it exits once its queue drains): a race with
        // the leak check, not a leak. Leaks are not what these targets look for.
        .arg("-detect_leaks=0")
        // The trailing slash makes it a directory prefix: `artifacts/crash-<sha1>`.
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        // New inputs go to the first directory only: the checked-in seeds stay as they are.
        .arg(&corpus)
        .arg(&seeds)
        .current_dir(&scratch)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    eprintln!(
        "xtask: fuzzing {target} for {seconds} s (log: {})",
        log_path.display()
    );
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("starting {}", binary.display()))?;
    let elapsed = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log_path)
        .with_context(|| format!("reading {}", log_path.display()))?;
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let reproducer = reproducer(&text).map_or_else(
            || "libFuzzer wrote no reproducer (see the log)".to_owned(),
            |path| format!("reproducer: {path}\nreplay it: {} {path}", binary.display()),
        );
        // The stack trace can push a Rust panic's message out of the tail: show it first.
        let panic: Vec<&str> = text
            .lines()
            .skip_while(|line| !line.contains(" panicked at "))
            .take(2)
            .collect();
        bail!(
            "fuzz target {target} failed ({status}) after {elapsed:.1} s\n{}\n{reproducer}\n\
             last lines of {}:\n{}",
            panic.join("\n"),
            log_path.display(),
            tail.join("\n")
        );
    }
    parse_run(&text, elapsed)
        .with_context(|| format!("no final stats from libFuzzer in {}", log_path.display()))
}

/// The input libFuzzer saved when the target crashed.
fn reproducer(log: &str) -> Option<&str> {
    log.lines().find_map(|line| {
        line.split_once("Test unit written to ")
            .map(|(_, path)| path.trim())
    })
}

/// Executions from `stat::number_of_executed_units`, the corpus from the `DONE` line's
/// `corp: N/SIZE`.
fn parse_run(log: &str, seconds: f64) -> Option<Run> {
    let executions = log
        .lines()
        .find_map(|line| line.strip_prefix("stat::number_of_executed_units:"))?
        .trim()
        .parse()
        .ok()?;
    let done = log
        .lines()
        .rev()
        .find(|line| line.split_whitespace().nth(1) == Some("DONE"))?;
    let corpus = done
        .split_once(" corp: ")?
        .1
        .split(['/', ' '])
        .next()?
        .parse()
        .ok()?;
    Some(Run {
        executions,
        seconds,
        corpus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
INFO: Seed: 1234
#32\tINITED cov: 1633 ft: 3261 corp: 29/93Kb exec/s: 0 rss: 70Mb
#21152\tDONE   cov: 1862 ft: 4177 corp: 155/436Kb lim: 10240 exec/s: 682 rss: 117Mb
Done 21152 runs in 31 second(s)
stat::number_of_executed_units: 21152
stat::average_exec_per_sec:     682
stat::new_units_added:          126
";

    #[test]
    fn final_stats_give_executions_and_the_corpus_at_the_end() {
        assert_eq!(
            parse_run(LOG, 30.5),
            Some(Run {
                executions: 21152,
                seconds: 30.5,
                corpus: 155
            })
        );
        assert_eq!(parse_run("INFO: Seed: 1\n", 1.0), None);
    }

    #[test]
    fn the_reproducer_is_the_path_libfuzzer_wrote() {
        let log = "==1== ERROR: libFuzzer: deadly signal\n\
                   artifact_prefix='/t/artifacts/'; Test unit written to /t/artifacts/crash-ab12\n\
                   Base64: AQID\n";
        assert_eq!(reproducer(log), Some("/t/artifacts/crash-ab12"));
        assert_eq!(reproducer(LOG), None);
    }

    /// A target added to `fuzz/Cargo.toml` but not here would never run in `cargo xtask test`.
    #[test]
    fn targets_are_the_fuzz_crates_binaries() {
        let manifest = std::fs::read_to_string(workspace_root().join("fuzz/Cargo.toml"))
            .expect("fuzz/Cargo.toml");
        let mut names: Vec<&str> = manifest
            .split("[[bin]]")
            .skip(1)
            .filter_map(|table| {
                let line = table.lines().find(|l| l.starts_with("name = "))?;
                Some(line.trim_start_matches("name = ").trim_matches('"'))
            })
            .collect();
        names.sort_unstable();
        assert_eq!(names, TARGETS);
    }

    #[test]
    fn options_default_to_every_target_and_refuse_unknown_ones() {
        let all = Options::parse(&[]).expect("no arguments");
        assert_eq!((all.seconds, all.targets), (20, TARGETS.to_vec()));
        let args = ["--seconds", "3600", "archive_extract"].map(String::from);
        let one = Options::parse(&args).expect("one target");
        assert_eq!((one.seconds, one.targets), (3600, vec!["archive_extract"]));
        let err = Options::parse(&["archive".to_owned()]).expect_err("unknown target");
        assert!(err.to_string().contains("archive_extract"), "{err}");
        assert!(Options::parse(&["--seconds".to_owned()]).is_err());
    }
}
