use super::*;

#[test]
fn kernel_dev_is_mkdev_of_the_stat_encoding() {
    // 0:51 (an overlay's anonymous device) and 259:3 (nvme) as stat(2) reports them.
    assert_eq!(kernel_dev(libc::makedev(0, 51)), 51);
    assert_eq!(kernel_dev(libc::makedev(259, 3)), (259 << 20) | 3);
    assert_eq!(kernel_dev(libc::makedev(8, 0x1_2345)), (8 << 20) | 0x1_2345);
}

#[test]
fn totals_sum_every_cpu_per_kind() {
    let mut file = CopyUpStats::ZERO;
    file.count = 2;
    file.bytes = 100;
    file.latency_sum_ns = 3000;
    file.latency_log2[10] = 2;
    let mut dir = CopyUpStats::ZERO;
    dir.count = 1;
    dir.errors = 1;
    dir.latency_log2[LATENCY_BUCKETS - 1] = 1;
    let mut totals = CopyUpTotals::default();
    totals.add(kind::FILE, &file);
    totals.add(kind::FILE, &file);
    totals.add(kind::DIR, &dir);
    assert_eq!(totals.copy_ups(), 5);
    assert_eq!(totals.count, [4, 1, 0, 0]);
    assert_eq!(totals.bytes, [200, 0, 0, 0]);
    assert_eq!(totals.errors, [0, 1, 0, 0]);
    assert_eq!(totals.latency_sum_ns, [6000, 0, 0, 0]);
    assert_eq!(totals.latency_log2[kind::FILE][10], 4);
    assert_eq!(totals.latency_log2[kind::DIR][LATENCY_BUCKETS - 1], 1);
}

#[test]
fn every_error_is_one_line() {
    let errors = [
        ProbeError::NotBuilt,
        ProbeError::NoBtf {
            path: btf::VMLINUX_BTF.into(),
        },
        ProbeError::FieldNotFound {
            structure: "inode",
            member: "i_size",
        },
        ProbeError::OverlayNotLoaded,
        ProbeError::NoKprobes,
        ProbeError::KernelRefused { lockdown: None },
        ProbeError::KernelRefused {
            lockdown: Some("confidentiality".into()),
        },
    ];
    for error in errors {
        let text = error.to_string();
        assert!(!text.contains('\n'), "{text}");
    }
    assert_eq!(
        ProbeError::KernelRefused { lockdown: None }.to_string(),
        "kernel refused the kprobe (EPERM): lockdown=confidentiality or missing CAP_BPF/CAP_PERFMON"
    );
    assert_eq!(
        ProbeError::FieldNotFound {
            structure: "inode",
            member: "i_size"
        }
        .to_string(),
        "field `inode.i_size` not found in the kernel's BTF"
    );
}

#[cfg(not(strata_probe))]
#[test]
fn without_the_object_embedded_says_not_built() {
    assert!(!CopyUpProbe::is_embedded());
    assert!(matches!(CopyUpProbe::embedded(), Err(ProbeError::NotBuilt)));
}

/// The outcome `CopyUpProbe::load` must have here, worked out without the loader, in the
/// order the loader checks.
#[cfg(strata_probe)]
fn expected_outcome() -> &'static str {
    if !Path::new(btf::VMLINUX_BTF).exists() {
        "NoBtf"
    } else if !Path::new(KPROBE_PMU_TYPE).exists() {
        "NoKprobes"
    } else if !overlay_symbol_present() {
        "OverlayNotLoaded"
    } else if !nix::unistd::geteuid().is_root()
        || lockdown_mode().as_deref() == Some("confidentiality")
    {
        "KernelRefused"
    } else {
        "Ok"
    }
}

/// On the team's build host (kernel without `CONFIG_KPROBES`) this pins `NoKprobes`; in the VM
/// (root, overlay module loaded) it pins a working attach and a readable map. Never a silent
/// pass: whatever the machine, the exact outcome is asserted.
#[cfg(strata_probe)]
#[test]
fn embedded_probe_loads_or_fails_with_the_exact_cause() {
    let expected = expected_outcome();
    let result = CopyUpProbe::embedded();
    match (expected, &result) {
        ("Ok", Ok(probe)) => {
            probe.read().expect("the stats map reads");
        }
        ("NoBtf", Err(ProbeError::NoBtf { .. }))
        | ("NoKprobes", Err(ProbeError::NoKprobes))
        | ("OverlayNotLoaded", Err(ProbeError::OverlayNotLoaded))
        | ("KernelRefused", Err(ProbeError::KernelRefused { .. })) => {
            let text = result.as_ref().map(|_| ()).unwrap_err().to_string();
            assert!(!text.contains('\n'), "{text}");
            eprintln!("refused as expected: {text}");
        }
        _ => panic!("expected {expected}, got {result:?}"),
    }
}

/// The verifier of the build host's kernel accepts both programs with its real offsets (as
/// root: loading eBPF needs `CAP_BPF`).
#[cfg(strata_probe)]
#[test]
fn host_verifier_accepts_both_programs() {
    if !nix::unistd::geteuid().is_root() || !Path::new(btf::VMLINUX_BTF).exists() {
        eprintln!("skipping: needs root and kernel BTF");
        return;
    }
    let object = embedded_object().expect("cfg(strata_probe) embeds the object");
    let offsets = CopyUpProbe::verify(object).unwrap_or_else(|e| panic!("{e}: {e:?}"));
    assert!(offsets.is_set());
}
