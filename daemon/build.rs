//! Embeds the copy-up probe object when it has been built.
//!
//! The probe needs nightly, `rust-src` and bpf-linker, which a plain `cargo build` on stable
//! should not require; so the object is built by `cargo xtask build-probe` into
//! `target/bpf/strata-probe.o` (under the workspace root, whatever `CARGO_TARGET_DIR` says),
//! or taken from `$STRATA_PROBE_OBJECT`. When present, this script sets `cfg(strata_probe)`
//! and `STRATA_PROBE_OBJECT` for `include_bytes_aligned!`; when absent, stratad builds without
//! it and says so at start-up (`ProbeError::NotBuilt`).

use std::path::PathBuf;

const OBJECT_ENV: &str = "STRATA_PROBE_OBJECT";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(strata_probe)");
    println!("cargo::rerun-if-env-changed={OBJECT_ENV}");
    let object = if let Some(path) = std::env::var_os(OBJECT_ENV) {
        let path = PathBuf::from(path);
        println!("cargo::rerun-if-changed={}", path.display());
        path
    } else {
        let manifest_dir =
            PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
        let dir = manifest_dir
            .parent()
            .expect("daemon lives in the workspace")
            .join("target")
            .join("bpf");
        // Watch the directory rather than the file: cargo re-runs a script whose watched path
        // does not exist on every build, which would rebuild the daemon every time on machines
        // that never build the probe. The directory's mtime changes when the object appears.
        let _ = std::fs::create_dir_all(&dir);
        println!("cargo::rerun-if-changed={}", dir.display());
        dir.join("strata-probe.o")
    };
    if object.is_file() {
        println!("cargo::rustc-cfg=strata_probe");
        println!("cargo::rustc-env={OBJECT_ENV}={}", object.display());
    } else {
        println!(
            "cargo::warning=building stratad without the eBPF copy-up probe ({} not found); \
             run `cargo xtask build-probe` to include it",
            object.display()
        );
    }
}
