//! `cargo xtask build-probe`: provisions the eBPF toolchain and builds the copy-up probe into
//! `target/bpf/strata-probe.o`, where `daemon/build.rs` picks it up.
//!
//! Every step is skipped when already done: the nightly toolchain and its `rust-src`,
//! bpf-linker (built once against the nightly's own LLVM and cached in `~/.cargo/bin`, its
//! LLVM prefix kept in `~/.cache/strata/`), and the object itself (copied only when changed,
//! so the daemon is not rebuilt for nothing).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{run_checked, workspace_root};

pub(crate) const TOOLCHAIN: &str = "nightly";
const BPF_TARGET: &str = "bpfel-unknown-none";

/// Where the object goes: read by `daemon/build.rs`.
pub(crate) fn object_path() -> PathBuf {
    workspace_root().join("target/bpf/strata-probe.o")
}

pub(crate) fn build_probe() -> Result<()> {
    let cargo_bin = cargo_home().join("bin");
    let sysroot = ensure_nightly()?;
    ensure_rust_src(&sysroot)?;
    let linker = ensure_bpf_linker(&sysroot, &cargo_bin)?;

    let started = Instant::now();
    let probe_dir = workspace_root().join("ebpf/probe");
    eprintln!("xtask: building the probe ({BPF_TARGET}, {TOOLCHAIN})");
    let mut path = OsString::from(linker.parent().expect("a bin dir"));
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    run_checked(
        rustup_cargo()
            .args(["build", "--release"])
            .current_dir(&probe_dir)
            .env("PATH", path)
            // The probe has its own target dir (ebpf/probe/target): never share the
            // workspace's, whose host artifacts were built by stable.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
    )?;
    let built = probe_dir.join(format!("target/{BPF_TARGET}/release/strata-probe"));
    let bytes = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    let object = object_path();
    if std::fs::read(&object).ok().as_deref() == Some(&bytes[..]) {
        eprintln!("xtask: {} is up to date", object.display());
    } else {
        std::fs::create_dir_all(object.parent().expect("a parent"))?;
        std::fs::write(&object, &bytes).with_context(|| format!("writing {}", object.display()))?;
        eprintln!(
            "xtask: wrote {} ({} bytes) in {:.1?}; rebuild stratad to embed it",
            object.display(),
            bytes.len(),
            started.elapsed()
        );
    }
    Ok(())
}

pub(crate) fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"),
        PathBuf::from,
    )
}

/// `cargo +nightly` through rustup, with the variables `cargo xtask` (run by stable) exports
/// removed so that they do not pin the child to stable.
pub(crate) fn rustup_cargo() -> Command {
    let mut command = Command::new("rustup");
    command
        .args(["run", TOOLCHAIN, "cargo"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTDOC")
        .env_remove("CARGO");
    command
}

pub(crate) fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Installs the nightly toolchain when missing; returns its sysroot.
pub(crate) fn ensure_nightly() -> Result<PathBuf> {
    let sysroot = |()| -> Result<PathBuf> {
        Ok(PathBuf::from(output(
            Command::new("rustup").args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"]),
        )?))
    };
    if let Ok(sysroot) = sysroot(()) {
        return Ok(sysroot);
    }
    eprintln!("xtask: installing the {TOOLCHAIN} toolchain");
    run_checked(Command::new("rustup").args([
        "toolchain",
        "install",
        TOOLCHAIN,
        "--profile",
        "minimal",
    ]))?;
    sysroot(())
}

/// Adds `rust-src` to the nightly when missing: the probe builds `core` itself.
fn ensure_rust_src(sysroot: &Path) -> Result<()> {
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        eprintln!("xtask: adding rust-src to {TOOLCHAIN} (for -Z build-std=core)");
        run_checked(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            TOOLCHAIN,
        ]))?;
    }
    Ok(())
}

/// bpf-linker must use the very LLVM that rustc generated the bitcode with; the nightly ships
/// it as `lib/libLLVM.so.<major>.<minor>-rust-<version>-nightly`. llvm-sys finds it through
/// `LLVM_PREFIX` pointing at a folder whose `lib/` holds `libLLVM.so` and that file.
fn ensure_bpf_linker(sysroot: &Path, cargo_bin: &Path) -> Result<PathBuf> {
    let lib_dir = sysroot.join("lib");
    let llvm_name = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("listing {}", lib_dir.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .find(|name| name.starts_with("libLLVM.so.") && name.contains("-rust-"))
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib_dir.display()))?;
    let version = llvm_name.trim_start_matches("libLLVM.so.");
    let major = version.split('.').next().unwrap_or_default();
    let prefix = cargo_home()
        .parent()
        .map_or_else(|| PathBuf::from("/root"), Path::to_path_buf)
        .join(format!(".cache/strata/llvm-prefix-{version}"));
    // Recreated every time (cheap): the symlinks must follow the current nightly.
    std::fs::create_dir_all(prefix.join("lib"))?;
    for link in ["libLLVM.so", llvm_name.as_str()] {
        let link = prefix.join("lib").join(link);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&llvm_name), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }

    let linker = cargo_bin.join("bpf-linker");
    let stamp = prefix.join("bpf-linker.built");
    let usable = linker.is_file()
        && stamp.is_file()
        && Command::new(&linker)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if usable {
        return Ok(linker);
    }
    eprintln!("xtask: building bpf-linker against {llvm_name} (several minutes, once)");
    let started = Instant::now();
    run_checked(
        rustup_cargo()
            .args([
                "install",
                "bpf-linker",
                "--force",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix)
            .env_remove("CARGO_TARGET_DIR"),
    )?;
    std::fs::write(&stamp, format!("{llvm_name}\n"))?;
    eprintln!("xtask: bpf-linker built in {:.0?}", started.elapsed());
    Ok(linker)
}
