//! The copy-up probe's user side: reads field offsets from the kernel's BTF, loads the probe
//! object (built by `cargo xtask build-probe`, embedded by `daemon/build.rs`), attaches its
//! kprobe and kretprobe to overlayfs's `ovl_copy_up_one`, and reads the per-CPU aggregates back.
//!
//! ```no_run
//! use strata_daemon::probe::{CopyUpProbe, kind};
//!
//! let probe = CopyUpProbe::embedded()?; // one clear ProbeError if it cannot run here
//! for (s_dev, totals) in probe.read()? {
//!     let files = totals.count[kind::FILE];
//!     let bytes = totals.bytes[kind::FILE];
//!     println!("{s_dev:#x}: {} copy-ups, {files} files, {bytes} bytes", totals.copy_ups());
//! }
//! # Ok::<(), strata_daemon::probe::ProbeError>(())
//! ```
//!
//! Dropping the [`CopyUpProbe`] detaches the programs and frees the maps.

pub mod btf;

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{MapData, PerCpuHashMap};
use aya::programs::KProbe;
use aya::programs::kprobe::KProbeLinkId;
use aya::{Ebpf, EbpfLoader};
use strata_ebpf_common::{
    CopyUpKey, CopyUpStats, ENTRY_PROGRAM, FieldOffsets, OFFSETS_GLOBAL, PROBED_FUNCTION,
    RETURN_PROGRAM, STATS_MAP,
};
pub use strata_ebpf_common::{LATENCY_BUCKETS, kind};

use self::btf::Btf;

/// The perf event source aya attaches kprobes through (kernels >= 4.17).
const KPROBE_PMU_TYPE: &str = "/sys/bus/event_source/devices/kprobe/type";

/// Where the kernel says whether it is locked down (`man 7 kernel_lockdown`).
const LOCKDOWN: &str = "/sys/kernel/security/lockdown";

/// Why the copy-up probe is not running. Each `Display` is one line meant for the daemon's log,
/// saying what to do about it; the daemon then exports `strata_probe_up 0` and falls back to
/// the upper-dir scanner. No kernel state is left behind by any of these errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// This binary was built before `cargo xtask build-probe` produced the probe object.
    #[error(
        "this stratad was built without the eBPF probe; run `cargo xtask build-probe` and rebuild"
    )]
    NotBuilt,
    /// The kernel has no BTF, so the probe cannot learn its struct layouts.
    #[error(
        "kernel has no BTF ({} missing; needs CONFIG_DEBUG_INFO_BTF=y): cannot locate struct fields",
        path.display()
    )]
    NoBtf {
        /// The file that is missing.
        path: PathBuf,
    },
    /// The kernel's BTF could not be parsed.
    #[error("cannot parse the kernel's BTF: {reason}")]
    BadBtf {
        /// What was wrong with it.
        reason: String,
    },
    /// A struct field the probe reads is not in this kernel's BTF.
    #[error("field `{structure}.{member}` not found in the kernel's BTF")]
    FieldNotFound {
        /// `dentry`, `inode` or `super_block`.
        structure: &'static str,
        /// The member.
        member: &'static str,
    },
    /// A struct field has a size the probe does not expect.
    #[error(
        "field `{structure}.{member}` is {size} bytes in the kernel's BTF, the probe reads {expected}"
    )]
    FieldLayout {
        /// The struct.
        structure: &'static str,
        /// The member.
        member: &'static str,
        /// Its size in this kernel.
        size: u32,
        /// The size the probe reads.
        expected: u32,
    },
    /// The kernel cannot place kprobes at all (built without `CONFIG_KPROBES`, so the kprobe
    /// perf event source is missing).
    #[error(
        "kernel has no kprobe support (CONFIG_KPROBES off: {KPROBE_PMU_TYPE} missing): the probe cannot attach"
    )]
    NoKprobes,
    /// overlayfs is not in the kernel yet (a module not loaded), so there is nothing to probe.
    #[error("overlay module not loaded: `{PROBED_FUNCTION}` is not in /proc/kallsyms")]
    OverlayNotLoaded,
    /// The kernel refused with EPERM: lockdown, or missing capabilities.
    #[error("{}", refused_message(.lockdown.as_deref()))]
    KernelRefused {
        /// The active lockdown mode from `/sys/kernel/security/lockdown`, when readable and
        /// not `none`.
        lockdown: Option<String>,
    },
    /// The probe object is not a valid eBPF object for this loader, or the kernel rejected it
    /// for a reason other than permissions (the source holds the verifier log).
    #[error("loading the probe object failed: {summary}")]
    Load {
        /// One line: the failing step and errno.
        summary: String,
        /// The aya error, with the verifier log where there is one.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Reading (or pruning) the probe's map failed.
    #[error("reading the probe's `{STATS_MAP}` map failed: {0}")]
    Read(#[source] aya::maps::MapError),
}

fn refused_message(lockdown: Option<&str>) -> String {
    match lockdown {
        Some(mode) => format!(
            "kernel refused the kprobe (EPERM): kernel lockdown={mode} forbids kprobes and \
             kernel memory reads by eBPF"
        ),
        None => "kernel refused the kprobe (EPERM): lockdown=confidentiality or missing \
                 CAP_BPF/CAP_PERFMON"
            .to_owned(),
    }
}

/// The active lockdown mode (`none [integrity] confidentiality` -> `integrity`), if the
/// kernel is locked down and securityfs is mounted; `None` otherwise.
pub fn lockdown_mode() -> Option<String> {
    let text = std::fs::read_to_string(LOCKDOWN).ok()?;
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    let mode = &text[start + 1..end];
    (mode != "none").then(|| mode.to_owned())
}

/// Copy-ups on one overlay superblock, summed over CPUs, per [`kind`] index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyUpTotals {
    /// Completed copy-ups (failed ones included).
    pub count: [u64; kind::COUNT],
    /// Bytes (`i_size` of regular files); only `kind::FILE` is non-zero.
    pub bytes: [u64; kind::COUNT],
    /// Copy-ups that returned an error.
    pub errors: [u64; kind::COUNT],
    /// `latency_log2[kind][b]`: copy-ups that took `2^b ..= 2^(b+1)-1` ns; the last bucket
    /// is open-ended.
    pub latency_log2: [[u64; LATENCY_BUCKETS]; kind::COUNT],
    /// Sum of latencies in nanoseconds.
    pub latency_sum_ns: [u64; kind::COUNT],
}

impl Default for CopyUpTotals {
    fn default() -> Self {
        Self {
            count: [0; kind::COUNT],
            bytes: [0; kind::COUNT],
            errors: [0; kind::COUNT],
            latency_log2: [[0; LATENCY_BUCKETS]; kind::COUNT],
            latency_sum_ns: [0; kind::COUNT],
        }
    }
}

impl CopyUpTotals {
    /// All copy-ups, every kind.
    pub fn copy_ups(&self) -> u64 {
        self.count.iter().sum()
    }

    /// Adds `other`'s totals to these (banking an unmounted overlay's counts).
    pub fn merge(&mut self, other: &CopyUpTotals) {
        for k in 0..kind::COUNT {
            self.count[k] = self.count[k].wrapping_add(other.count[k]);
            self.bytes[k] = self.bytes[k].wrapping_add(other.bytes[k]);
            self.errors[k] = self.errors[k].wrapping_add(other.errors[k]);
            self.latency_sum_ns[k] = self.latency_sum_ns[k].wrapping_add(other.latency_sum_ns[k]);
            for (total, value) in self.latency_log2[k].iter_mut().zip(&other.latency_log2[k]) {
                *total = total.wrapping_add(*value);
            }
        }
    }

    /// Adds one CPU's value for `kind` (out-of-range kinds, which the probe never writes,
    /// count as `other`).
    fn add(&mut self, kind: usize, stats: &CopyUpStats) {
        let k = kind.min(kind::OTHER);
        self.count[k] = self.count[k].wrapping_add(stats.count);
        self.bytes[k] = self.bytes[k].wrapping_add(stats.bytes);
        self.errors[k] = self.errors[k].wrapping_add(stats.errors);
        self.latency_sum_ns[k] = self.latency_sum_ns[k].wrapping_add(stats.latency_sum_ns);
        for (total, value) in self.latency_log2[k].iter_mut().zip(&stats.latency_log2) {
            *total = total.wrapping_add(*value);
        }
    }
}

/// The kernel's internal encoding of a `dev_t` (`MKDEV`: 12-bit major << 20 | 20-bit minor),
/// which is what `super_block.s_dev` holds and what [`CopyUpProbe::read`] keys by. `st_dev`
/// from `stat(2)` of a mount point uses the user-space encoding; this converts it.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev) & 0xfff;
    let minor = libc::minor(st_dev) & 0xf_ffff;
    (major << 20) | minor
}

/// The loaded, attached copy-up probe. Dropping it detaches both programs.
#[derive(Debug)]
pub struct CopyUpProbe {
    ebpf: Ebpf,
    offsets: FieldOffsets,
    /// The entry and return programs' kprobes while attached; `None` after [`Self::detach`].
    links: Option<[KProbeLinkId; 2]>,
}

impl CopyUpProbe {
    /// Loads the probe object compiled into this binary (see `daemon/build.rs`); without one,
    /// [`ProbeError::NotBuilt`].
    pub fn embedded() -> Result<Self, ProbeError> {
        Self::load(embedded_object().ok_or(ProbeError::NotBuilt)?)
    }

    /// Whether this binary carries the probe object.
    pub fn is_embedded() -> bool {
        embedded_object().is_some()
    }

    /// Reads the field offsets from the running kernel's BTF, loads `object` with them and
    /// attaches the kprobe and kretprobe to `ovl_copy_up_one`. The checks that need no kernel
    /// state (BTF, kprobe support, the overlay symbol) come first; on any error nothing stays
    /// loaded.
    pub fn load(object: &[u8]) -> Result<Self, ProbeError> {
        let offsets = Btf::from_sys_fs()?.copy_up_offsets()?;
        if !Path::new(KPROBE_PMU_TYPE).exists() {
            return Err(ProbeError::NoKprobes);
        }
        if !overlay_symbol_present() {
            return Err(ProbeError::OverlayNotLoaded);
        }
        let ebpf = load_programs(object, offsets)?;
        let mut probe = Self {
            ebpf,
            offsets,
            links: None,
        };
        probe.attach()?;
        Ok(probe)
    }

    /// Takes both programs off `ovl_copy_up_one` and keeps them loaded, with their maps: copy-ups
    /// then run unprobed until [`Self::attach`]. Much cheaper than dropping and loading again
    /// (no BTF, no verifier), so benchmarks can alternate the two often. A no-op when detached.
    /// Both are tried; the first error is returned.
    pub fn detach(&mut self) -> Result<(), ProbeError> {
        let mut result = Ok(());
        if let Some(links) = self.links.take() {
            for (name, link) in [ENTRY_PROGRAM, RETURN_PROGRAM].into_iter().zip(links) {
                let detached = kprobe(&mut self.ebpf, name).and_then(|p| {
                    p.detach(link)
                        .map_err(|e| classify(&format!("detaching `{name}`"), e))
                });
                result = result.and(detached);
            }
        }
        result
    }

    /// Attaches both programs to `ovl_copy_up_one` again after [`Self::detach`]; a no-op while
    /// attached. On error neither stays attached.
    pub fn attach(&mut self) -> Result<(), ProbeError> {
        if self.links.is_some() {
            return Ok(());
        }
        let entry = kprobe(&mut self.ebpf, ENTRY_PROGRAM)?
            .attach(PROBED_FUNCTION, 0)
            .map_err(|e| classify(&format!("attaching `{ENTRY_PROGRAM}`"), e))?;
        let attached = kprobe(&mut self.ebpf, RETURN_PROGRAM).and_then(|p| {
            p.attach(PROBED_FUNCTION, 0)
                .map_err(|e| classify(&format!("attaching `{RETURN_PROGRAM}`"), e))
        });
        match attached {
            Ok(ret) => {
                self.links = Some([entry, ret]);
                Ok(())
            }
            Err(e) => {
                if let Ok(p) = kprobe(&mut self.ebpf, ENTRY_PROGRAM) {
                    let _ = p.detach(entry);
                }
                Err(e)
            }
        }
    }

    /// Takes `object` through everything but the attach: BTF offsets, object parsing, map
    /// creation and the verifier for both programs; then unloads it. For kernels that can run
    /// eBPF but cannot place kprobes (like the team's build host), this still proves the object
    /// is one this kernel's verifier accepts. Returns the offsets used.
    pub fn verify(object: &[u8]) -> Result<FieldOffsets, ProbeError> {
        let offsets = Btf::from_sys_fs()?.copy_up_offsets()?;
        load_programs(object, offsets)?;
        Ok(offsets)
    }

    /// The field offsets the probe was loaded with.
    pub fn offsets(&self) -> FieldOffsets {
        self.offsets
    }

    /// Turns on the kernel's run-time statistics of every eBPF program (`BPF_ENABLE_STATS`)
    /// for as long as the returned descriptor is open. They cost two clock reads per program
    /// run, so only benchmarks use them, and never while they time copy-ups against a detached
    /// probe.
    pub fn enable_run_time_stats() -> Result<OwnedFd, ProbeError> {
        aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map_err(|e| classify("enabling eBPF run-time statistics", e))
    }

    /// Runs and total run time of the entry and return programs (in that order) counted while
    /// [`Self::enable_run_time_stats`] was on: the probe's own cost in the kernel, without the
    /// kprobe machinery around it.
    pub fn program_run_times(&self) -> Result<[(u64, Duration); 2], ProbeError> {
        let of = |name: &str| -> Result<(u64, Duration), ProbeError> {
            let info = self
                .ebpf
                .program(name)
                .ok_or_else(|| load_error(format!("program `{name}` missing from the object")))?
                .info()
                .map_err(|e| classify(&format!("reading the info of `{name}`"), e))?;
            Ok((info.run_count(), info.run_time()))
        };
        Ok([of(ENTRY_PROGRAM)?, of(RETURN_PROGRAM)?])
    }

    /// Copy-ups so far by overlay superblock ([`kernel_dev`] of the mount's `st_dev`), summed
    /// over CPUs. Counters only grow while the probe stays loaded, until [`Self::forget`].
    pub fn read(&self) -> Result<HashMap<u32, CopyUpTotals>, ProbeError> {
        let map = self
            .ebpf
            .map(STATS_MAP)
            .ok_or_else(|| load_error(format!("map `{STATS_MAP}` missing from the object")))?;
        let stats: PerCpuHashMap<&MapData, CopyUpKey, CopyUpStats> =
            PerCpuHashMap::try_from(map).map_err(ProbeError::Read)?;
        let mut totals = HashMap::new();
        for entry in &stats {
            let (key, per_cpu) = entry.map_err(ProbeError::Read)?;
            let total: &mut CopyUpTotals = totals.entry(key.s_dev).or_default();
            for stats in per_cpu.iter() {
                total.add(key.kind as usize, stats);
            }
        }
        Ok(totals)
    }

    /// Drops the counters of one overlay superblock (its mount is gone, and the kernel may
    /// hand its device number to the next overlay).
    pub fn forget(&mut self, s_dev: u32) -> Result<(), ProbeError> {
        let map = self
            .ebpf
            .map_mut(STATS_MAP)
            .ok_or_else(|| load_error(format!("map `{STATS_MAP}` missing from the object")))?;
        let mut stats: PerCpuHashMap<&mut MapData, CopyUpKey, CopyUpStats> =
            PerCpuHashMap::try_from(map).map_err(ProbeError::Read)?;
        for kind in 0..kind::COUNT {
            let key = CopyUpKey {
                s_dev,
                kind: u32::try_from(kind).expect("four kinds"),
            };
            match stats.remove(&key) {
                // A kind this overlay never copied up has no entry (ENOENT from the delete).
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(ProbeError::Read(e)),
            }
        }
        Ok(())
    }
}

/// Loads the object with `offsets` and both programs into the kernel, unattached.
fn load_programs(object: &[u8], offsets: FieldOffsets) -> Result<Ebpf, ProbeError> {
    let mut ebpf = EbpfLoader::new()
        .override_global(OFFSETS_GLOBAL, &offsets, true)
        .load(object)
        .map_err(|e| classify("loading the object", e))?;
    for name in [ENTRY_PROGRAM, RETURN_PROGRAM] {
        kprobe(&mut ebpf, name)?
            .load()
            .map_err(|e| classify(&format!("loading program `{name}`"), e))?;
    }
    Ok(ebpf)
}

fn kprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut KProbe, ProbeError> {
    ebpf.program_mut(name)
        .ok_or_else(|| load_error(format!("program `{name}` missing from the object")))?
        .try_into()
        .map_err(|e| classify(&format!("program `{name}`"), e))
}

#[cfg_attr(
    strata_probe,
    expect(clippy::unnecessary_wraps, reason = "None without cfg(strata_probe)")
)]
fn embedded_object() -> Option<&'static [u8]> {
    #[cfg(strata_probe)]
    {
        Some(aya::include_bytes_aligned!(env!("STRATA_PROBE_OBJECT")))
    }
    #[cfg(not(strata_probe))]
    {
        None
    }
}

/// Whether `ovl_copy_up_one` is a kernel symbol (overlayfs built in, or its module loaded).
/// An unreadable kallsyms is not evidence of absence: then let the attach decide.
fn overlay_symbol_present() -> bool {
    let Ok(kallsyms) = std::fs::read_to_string("/proc/kallsyms") else {
        return true;
    };
    kallsyms.lines().any(|line| {
        let mut fields = line.split_whitespace();
        fields.nth(2) == Some(PROBED_FUNCTION)
    })
}

fn load_error(summary: String) -> ProbeError {
    ProbeError::Load {
        summary: summary.clone(),
        source: summary.into(),
    }
}

/// Turns an aya error into the cause a person can act on: EPERM anywhere in the chain is the
/// kernel refusing (lockdown or capabilities); under `confidentiality` lockdown the verifier
/// also refuses `bpf_probe_read_kernel` (EINVAL, "unknown func"), which is the same cause.
fn classify<E>(step: &str, error: E) -> ProbeError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let errno = os_error(&error);
    let lockdown = lockdown_mode();
    if errno == Some(libc::EPERM)
        || (lockdown.as_deref() == Some("confidentiality")
            && error.to_string().contains("unknown func"))
    {
        return ProbeError::KernelRefused { lockdown };
    }
    if errno == Some(libc::ENOENT) && step.starts_with("attaching") && !overlay_symbol_present() {
        return ProbeError::OverlayNotLoaded;
    }
    let summary = match errno {
        Some(errno) => format!("{step}: {}", io::Error::from_raw_os_error(errno)),
        None => format!(
            "{step}: {}",
            error.to_string().lines().next().unwrap_or_default()
        ),
    };
    ProbeError::Load {
        summary,
        source: Box::new(error),
    }
}

/// The first OS error in an error's source chain.
fn os_error(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(code);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests;
