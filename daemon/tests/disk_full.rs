//! A full disk: the store on a small tmpfs that the test mounts, filled by an import, a commit,
//! writes inside a container, and a filler file until not one more block is free.
//!
//! Guards against: a half-imported image or half-committed layer left recorded, staging left
//! behind, a database that stops working after one failed write (redb latches I/O errors), and
//! a daemon that stops serving once the disk fills. Every failure must be one clear error, fsck
//! must stay clean, and once space is freed the same operations must work.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use strata_testkit::{ImageBuilder, LayerBuilder, Stratad, busybox_image, require_root};

const STRATAD: &str = env!("CARGO_BIN_EXE_stratad");
const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const FS_MIB: u64 = 48;

/// A tmpfs of [`FS_MIB`] MiB at a fresh directory, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("strata-full")
            .tempdir()
            .unwrap()
            .keep();
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={FS_MIB}m,mode=755").as_str()),
        )
        .unwrap();
        Self(dir)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        for m in strata_store::mounts::mounts_under(&self.0).unwrap_or_default() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `strata --json ARGS`: the answer on success, the one-line error on failure.
fn cli(d: &Stratad, args: &[&str]) -> Result<Value, String> {
    let out = d.command(STRATA).arg("--json").args(args).output().unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn assert_fsck_clean(d: &Stratad, after: &str) {
    let out = d
        .command(STRATA)
        .args(["--json", "system", "fsck"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsck after {after}: {}{}\n--- stratad log ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log_tail()
    );
}

fn assert_no_space_error(result: Result<Value, String>, what: &str) {
    let message = result.expect_err(&format!("{what} succeeded on a full disk"));
    assert!(
        message.contains("No space left on device") || message.contains("ENOSPC"),
        "{what}: {message}"
    );
    assert_eq!(message.lines().count(), 1, "{what}: one line: {message}");
}

fn staging_entries(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("discard-"))
        .collect()
}

/// An image whose top layer is one `mib`-MiB file, written to `dir`.
fn big_image(dir: &Path, tag: &str, mib: usize) -> PathBuf {
    let mut image: ImageBuilder = busybox_image(tag);
    let mut layer = LayerBuilder::new();
    let mut content = vec![0u8; mib << 20];
    for (i, b) in content.iter_mut().enumerate() {
        *b = u8::try_from(i % 251).unwrap();
    }
    layer.dir("big", 0o755).file("big/blob", &content, 0o644);
    image.layers.push(layer.build());
    let path = dir.join(format!("{}.tar", tag.replace([':', '/'], "_")));
    std::fs::write(&path, image.docker_save_legacy()).unwrap();
    path
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one story in five steps on one filling filesystem"
)]
fn a_full_disk_gives_clean_errors_leaves_nothing_half_made_and_the_daemon_serves_on() {
    require_root("the disk-full test mounts a tmpfs and overlays");
    let fs = SmallFs::mount();
    let d = Stratad::start_in(STRATAD, &fs.0);
    let archives = tempfile::tempdir().unwrap();
    let small = archives.path().join("small.tar");
    std::fs::write(
        &small,
        busybox_image("full/small:latest").docker_save_legacy(),
    )
    .unwrap();
    cli(&d, &["image", "import", small.to_str().unwrap()]).unwrap();
    let before = cli(&d, &["image", "ls"]).unwrap();

    // 1. An import larger than the disk.
    let big = big_image(
        archives.path(),
        "full/big:latest",
        usize::try_from(FS_MIB).unwrap() + 8,
    );
    assert_no_space_error(
        cli(&d, &["image", "import", big.to_str().unwrap()]),
        "import",
    );
    assert_eq!(
        cli(&d, &["image", "ls"]).unwrap(),
        before,
        "a failed import left an image"
    );
    assert!(
        staging_entries(d.root()).is_empty(),
        "staging left: {:?}",
        staging_entries(d.root())
    );
    assert_fsck_clean(&d, "the failed import");

    // 2. Writes inside a container until the disk is full: the command fails, not the daemon.
    cli(
        &d,
        &[
            "container",
            "create",
            "--name",
            "filler",
            "full/small:latest",
        ],
    )
    .unwrap();
    let out = d
        .command(STRATA)
        .args([
            "container",
            "exec",
            "filler",
            "--",
            "sh",
            "-c",
            "dd if=/dev/zero of=/fill bs=1M count=1000 2>&1; echo dd=$?",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("No space left on device"), "{said}");
    assert!(
        cli(&d, &["container", "ls", "-a"]).is_ok(),
        "the daemon stopped serving"
    );
    assert_fsck_clean(&d, "filling the disk from a container");

    // 3. A commit needs room for the new layer: there is none. The API says so with 507.
    assert_no_space_error(
        cli(&d, &["container", "commit", "filler", "full/commit:latest"]),
        "commit",
    );
    let (status, answer) = d.request(
        "POST",
        "/v1/containers/commit?ref=filler&tag=full/commit:latest",
        b"",
    );
    assert_eq!(status, 507, "{answer}");
    assert!(
        cli(&d, &["image", "inspect", "full/commit:latest"]).is_err(),
        "a failed commit left an image"
    );
    assert!(
        staging_entries(d.root()).is_empty(),
        "staging left: {:?}",
        staging_entries(d.root())
    );
    assert_fsck_clean(&d, "the failed commit");

    // 4. Not one block left: even a record cannot grow the database. Fill the rest from the
    // host, then create containers until one fails.
    let rest = fs.0.join("rest");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", rest.display()), "bs=64k"])
        .output()
        .unwrap();
    let mut refused = None;
    for i in 0..500 {
        if let Err(e) = cli(
            &d,
            &[
                "container",
                "create",
                "--name",
                &format!("n{i}"),
                "full/small:latest",
            ],
        ) {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("500 creates fit on a full disk");
    assert!(
        refused.contains("No space left") || refused.contains("space"),
        "{refused}"
    );
    assert_fsck_clean(&d, "a create on a full disk");

    // 5. Space back (the filler file, and what the container wrote): everything works again,
    // in the same daemon.
    std::fs::remove_file(&rest).unwrap();
    let filler = cli(&d, &["container", "inspect", "filler"]).unwrap();
    let id = filler["id"].as_str().unwrap();
    std::fs::remove_file(d.root().join("overlay2").join(id).join("diff/fill")).unwrap();
    cli(&d, &["container", "rm", "-f", "filler"]).unwrap();
    let c = cli(
        &d,
        &[
            "container",
            "create",
            "--name",
            "after",
            "full/small:latest",
        ],
    );
    assert!(
        c.is_ok(),
        "create after freeing space: {c:?}\n{}",
        d.log_tail()
    );
    cli(&d, &["container", "mount", "after"]).unwrap();
    cli(&d, &["container", "commit", "after", "full/after:latest"]).unwrap();
    assert_fsck_clean(&d, "freeing space");
}
