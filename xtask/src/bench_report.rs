//! `cargo xtask bench [CASE...] [OPTIONS]`: runs the benchmark cases, prints one table of
//! figures with their targets, and (for a full run) writes `BENCHMARKS.md`.
//!
//! Each case measures Strata beside its peer in the same run (Docker from Debian's `docker.io`
//! on a private socket and data root, `tar -x` or `cp` for the machine's own limit), with the
//! two interleaved so that drift on a noisy machine falls on both, and reports medians and
//! ratios. Cases:
//!
//! | case | what | module |
//! |---|---|---|
//! | `import` | ~1 GiB, 5 layers: `strata image import` vs `docker load` vs `tar -x` | `bench` |
//! | `containers` (`cycle`, `list`, `memory`) | create+mount+unmount+remove p50/p99 vs Docker create+remove; listing 10,000 containers; stratad's RSS idle and with 10,000 containers | `bench_containers` |
//! | `df` (`scrape`) | `system df -v` vs `docker system df -v` with 1,000 containers of 10 MiB each; `/metrics` latency and size with them | `bench_df` |
//! | `copyup` | copying up a 100 MiB file through a container vs `cp` of it on the same filesystem | `bench_copyup` |
//! | `probe` | the copy-up probe's overhead, in the VM | `bench_probe` |

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::{bench, bench_containers, bench_copyup, bench_df, bench_probe, workspace_root};

/// One measured figure, for the summary table and `BENCHMARKS.md`.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub(crate) case: &'static str,
    pub(crate) what: String,
    pub(crate) strata: String,
    /// The peer and its value (`docker 7.6 ms`, `tar -x 4.9 s`).
    pub(crate) peer: Option<String>,
    /// How Strata compares (`4.4x faster`, `0.88x tar -x`).
    pub(crate) ratio: Option<String>,
    /// The target, and whether it was met.
    pub(crate) target: Option<(String, bool)>,
}

impl Figure {
    pub(crate) fn new(
        case: &'static str,
        what: impl Into<String>,
        strata: impl Into<String>,
    ) -> Self {
        Self {
            case,
            what: what.into(),
            strata: strata.into(),
            peer: None,
            ratio: None,
            target: None,
        }
    }

    pub(crate) fn peer(mut self, peer: impl Into<String>, ratio: impl Into<String>) -> Self {
        self.peer = Some(peer.into());
        self.ratio = Some(ratio.into());
        self
    }

    pub(crate) fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = Some((target.into(), met));
        self
    }
}

/// What each case group takes, in the order they run.
const GROUPS: [(&str, &[&str]); 5] = [
    ("import", &["import"]),
    ("containers", &["containers", "cycle", "list", "memory"]),
    ("df", &["df", "scrape"]),
    ("copyup", &["copyup"]),
    ("probe", &["probe"]),
];

/// Flags taking a value, and the groups they are for.
const VALUE_FLAGS: [(&str, &[&str]); 15] = [
    ("--runs", &["import", "containers", "df", "copyup"]),
    ("--dir", &["import", "containers", "df", "copyup"]),
    ("--size-mib", &["import"]),
    ("--cycles", &["containers"]),
    ("--containers", &["containers"]),
    ("--docker-budget-secs", &["containers"]),
    ("--df-containers", &["df"]),
    ("--df-mib", &["df"]),
    ("--copyup-mib", &["copyup"]),
    ("--copyups", &["probe"]),
    ("--block", &["probe"]),
    ("--warmup", &["probe"]),
    ("--file-size", &["probe"]),
    ("--timeout", &["probe"]),
    ("--binary", &["probe"]),
];
const SWITCHES: [(&str, &[&str]); 3] = [
    ("--skip-docker", &["import", "containers", "df"]),
    ("--skip-strata", &["import"]),
    ("--fresh-fs", &["import"]),
];

pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let mut wanted: Vec<&'static str> = Vec::new();
    let mut per_group: std::collections::HashMap<&str, Vec<String>> =
        std::collections::HashMap::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if let Some((group, _)) = GROUPS
            .iter()
            .find(|(_, names)| names.contains(&arg.as_str()))
        {
            if !wanted.contains(group) {
                wanted.push(group);
            }
        } else if let Some((flag, groups)) = VALUE_FLAGS.iter().find(|(f, _)| f == arg) {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            for g in *groups {
                per_group
                    .entry(g)
                    .or_default()
                    .extend([arg.clone(), value.clone()]);
            }
        } else if let Some((_, groups)) = SWITCHES.iter().find(|(f, _)| f == arg) {
            for g in *groups {
                per_group.entry(g).or_default().push(arg.clone());
            }
        } else {
            bail!("unknown case or option {arg} (cases: import, containers, df, copyup, probe)");
        }
    }
    let full = wanted.is_empty();
    if full {
        wanted = GROUPS.iter().map(|(g, _)| *g).collect();
    }
    let mut figures = Vec::new();
    for group in GROUPS
        .iter()
        .map(|(g, _)| *g)
        .filter(|g| wanted.contains(g))
    {
        let args = per_group.remove(group).unwrap_or_default();
        eprintln!("\n=== bench {group} ===");
        figures.extend(match group {
            "import" => bench::import(&bench::Options::parse(&args)?)?,
            "containers" => {
                bench_containers::containers(&bench_containers::Options::parse(&args)?)?
            }
            "df" => bench_df::df(&bench_df::Options::parse(&args)?)?,
            "copyup" => bench_copyup::copyup(&bench_copyup::Options::parse(&args)?)?,
            _ => bench_probe::bench_probe(&bench_probe::Options::parse(&args)?)?,
        });
    }
    println!("\n{}", table(&figures));
    if full {
        let path = workspace_root().join("BENCHMARKS.md");
        std::fs::write(&path, markdown(&figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    } else {
        eprintln!("(BENCHMARKS.md is written by a full run: `cargo xtask bench` with no case)");
    }
    Ok(ExitCode::SUCCESS)
}

fn target_cell(f: &Figure) -> String {
    f.target.as_ref().map_or_else(String::new, |(t, met)| {
        format!("{t}: {}", if *met { "met" } else { "MISSED" })
    })
}

fn table(figures: &[Figure]) -> String {
    let rows: Vec<[String; 6]> = figures
        .iter()
        .map(|f| {
            [
                f.case.to_owned(),
                f.what.clone(),
                f.strata.clone(),
                f.peer.clone().unwrap_or_default(),
                f.ratio.clone().unwrap_or_default(),
                target_cell(f),
            ]
        })
        .collect();
    let head = ["CASE", "FIGURE", "STRATA", "PEER", "RATIO", "TARGET"];
    let mut widths = head.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(head.map(str::to_owned)).chain(rows) {
        for (cell, w) in row.iter().zip(widths) {
            let _ = write!(out, "{cell:<w$}  ");
        }
        out = out.trim_end().to_owned();
        out.push('\n');
    }
    out
}

/// One line of the machine the figures were measured on.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease");
    let fs = std::process::Command::new("df")
        .args(["--output=fstype,source", "-h"])
        .arg(workspace_root().join("target"))
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" on "))
        })
        .unwrap_or_default();
    format!(
        "{cpus} CPUs ({model}), {} GiB RAM, Linux {}, target/ on {fs}",
        mem_kib >> 20,
        kernel.trim()
    )
}

fn markdown(figures: &[Figure]) -> Result<String> {
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .context("running date")?;
    let mut out = String::from("# Benchmarks\n\n");
    let _ = writeln!(
        out,
        "Measured by `cargo xtask bench` on {}: {}.\n",
        String::from_utf8_lossy(&date.stdout).trim(),
        machine()
    );
    out.push_str(
        "Every case runs Strata beside its peer in the same run, interleaved, so that drift on \
         a shared machine falls on both; figures are medians unless they say otherwise. The \
         machine is noisy: compare the ratios, not the seconds. Re-run one case with \
         `cargo xtask bench CASE` (cases: import, containers, df, copyup, probe; `--help` \
         lists the options). [docs/performance.md](docs/performance.md) explains the figures: \
         where each case's time goes, and what was tried.\n\n",
    );
    out.push_str("| case | figure | strata | peer | ratio | target |\n|---|---|---|---|---|---|\n");
    for f in figures {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            f.case,
            f.what,
            f.strata,
            f.peer.as_deref().unwrap_or(""),
            f.ratio.as_deref().unwrap_or(""),
            target_cell(f)
        );
    }
    out.push_str(
        "\nThe probe case runs in a QEMU VM under TCG emulation (the build host has no kprobes), \
         twice: under `-icount` (guest time is 1 ns per guest instruction, reproducible from \
         run to run) and on the wall clock (where TCG's own costs and the host's noise come \
         in). No figure from real hardware yet.\n",
    );
    Ok(out)
}

/// Nearest-rank percentile (`percent` in 0..=100) of sorted values.
pub(crate) fn percentile<T: Copy>(sorted: &[T], percent: usize) -> T {
    assert!(!sorted.is_empty(), "percentile of nothing");
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// [`percentile`] of unsorted samples.
pub(crate) fn quantile<T: Copy + Ord>(samples: &[T], percent: usize) -> T {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    percentile(&sorted, percent)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50), 50);
        assert_eq!(percentile(&values, 90), 90);
        assert_eq!(percentile(&values, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
    }
}
