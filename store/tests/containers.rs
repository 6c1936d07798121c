//! Containers on real overlay mounts: copy-up, whiteouts, diff, commit, exec, volumes, binds.
//!
//! Guards against: writes that reach a lower layer, a diff that misreports copy-ups or
//! deletions, commits that copy shared layers or lose changes, volume data lost with its
//! container, read-only binds that are writable, and invalid mount specs that half-create a
//! container.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use common::{TestStore, null_stdio};
use strata_store::mountspec::{parse_mount_flag, parse_volume_flag};
use strata_store::{ChangeKind, CreateOptions, ErrorKind, ExecRequest, ExecStdio};
use strata_testkit::{NodeKind, TreeSnapshot, busybox_image};

const IMAGE: &str = "busybox/test:latest";

fn store_with_image() -> TestStore {
    let t = TestStore::new("overlay2");
    t.import(&busybox_image(IMAGE).docker_save_legacy());
    t
}

fn create(
    t: &TestStore,
    name: &str,
    volumes: &[&str],
    env: &[&str],
) -> strata_store::ContainerSummary {
    let mounts = volumes
        .iter()
        .map(|v| parse_volume_flag(v).unwrap())
        .collect();
    t.store()
        .create_container(&CreateOptions {
            name: Some(name.into()),
            image: IMAGE.into(),
            mounts,
            env: env.iter().map(|e| (*e).to_owned()).collect(),
            ..CreateOptions::default()
        })
        .unwrap()
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `argv` in the container with `input` on stdin; collects stdout and stderr.
fn exec(t: &TestStore, container: &str, argv: &[&str], user: Option<&str>, input: &[u8]) -> Output {
    let (stdin_r, mut stdin_w) = std::io::pipe().unwrap();
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    let (mut err_r, err_w) = std::io::pipe().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin_w.write_all(&input);
    });
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        out_r.read_to_string(&mut s).unwrap();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err_r.read_to_string(&mut s).unwrap();
        s
    });
    let req = ExecRequest {
        cmd: argv.iter().map(|a| (*a).to_owned()).collect(),
        user: user.map(str::to_owned),
        ..ExecRequest::default()
    };
    let stdio = ExecStdio {
        stdin: OwnedFd::from(stdin_r),
        stdout: OwnedFd::from(out_w),
        stderr: OwnedFd::from(err_w),
    };
    let code = t.store().exec_container(container, &req, stdio).unwrap();
    feeder.join().unwrap();
    Output {
        code,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

#[test]
fn writes_copy_up_deletes_whiteout_and_diff_and_commit_report_them() {
    let t = store_with_image();
    let c = create(&t, "web", &[], &[]);
    let script =
        "echo changed >> /data/lower.txt && rm /data/delete-me && echo new > /data/new.txt";
    let out = exec(&t, "web", &["sh", "-c", script], None, b"");
    assert_eq!(out.code, 0, "{}", out.stderr);

    // The lower layer is untouched; the upper holds a full copy and a whiteout.
    let layers = t.store().list_layers().unwrap();
    let lower_file = layers
        .iter()
        .map(|l| l.diff_path.join("data/lower.txt"))
        .find(|p| p.exists())
        .unwrap();
    assert_eq!(std::fs::read(&lower_file).unwrap(), b"from the image\n");
    let upper = t
        .root()
        .join("overlay2")
        .join(c.id.to_string())
        .join("diff");
    assert_eq!(
        std::fs::read(upper.join("data/lower.txt")).unwrap(),
        b"from the image\nchanged\n"
    );
    let upper_tree = TreeSnapshot::from_dir(&upper).unwrap();
    assert_eq!(upper_tree.nodes["data/delete-me"].kind, NodeKind::Char);
    assert_eq!(upper_tree.nodes["data/delete-me"].rdev, Some((0, 0)));

    let changes: Vec<(ChangeKind, String)> = t
        .store()
        .container_changes("web")
        .unwrap()
        .into_iter()
        .map(|c| (c.kind, c.path))
        .collect();
    assert_eq!(
        changes,
        vec![
            (ChangeKind::Changed, "/data".to_owned()),
            (ChangeKind::Deleted, "/data/delete-me".to_owned()),
            (ChangeKind::Changed, "/data/lower.txt".to_owned()),
            (ChangeKind::Added, "/data/new.txt".to_owned()),
        ]
    );

    let layers_before = t.store().list_layers().unwrap().len();
    let committed = t
        .store()
        .commit_container("web", Some(&"busybox/committed:v1".parse().unwrap()))
        .unwrap();
    assert_eq!(committed.layers, 3);
    assert_eq!(
        committed.new_layers, 1,
        "parent layers are shared, not copied"
    );
    assert_eq!(t.store().list_layers().unwrap().len(), layers_before + 1);
    let view = t.view("busybox/committed:v1");
    assert!(!view.nodes.contains_key("data/delete-me"));
    assert_eq!(view.nodes["data/new.txt"].size, 4);
    assert_eq!(
        view.nodes["data/lower.txt"].size,
        "from the image\nchanged\n".len() as u64
    );
    // The container keeps working after the commit.
    assert_eq!(
        exec(&t, "web", &["cat", "/data/new.txt"], None, b"").stdout,
        "new\n"
    );
}

/// A file the export refuses (a name that is not UTF-8) stops the commit with the export's
/// error, which names it; nothing is recorded.
#[test]
fn a_commit_that_cannot_export_a_file_names_it() {
    use std::os::unix::ffi::OsStrExt as _;
    let t = store_with_image();
    create(&t, "web", &[], &[]);
    let merged = t.store().mount_container("web").unwrap();
    let name = std::ffi::OsStr::from_bytes(b"tmp/report-\xff.txt");
    std::fs::write(merged.join(name), b"data").unwrap();
    let layers_before = t.store().list_layers().unwrap().len();
    let e = t
        .store()
        .commit_container("web", Some(&"busybox/committed:v1".parse().unwrap()))
        .unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("report-") && message.contains("not UTF-8"),
        "{message}"
    );
    assert_eq!(t.store().list_layers().unwrap().len(), layers_before);
    t.store().unmount_container("web", false).unwrap();
}

#[test]
fn exec_passes_stdio_and_returns_the_exit_code_with_the_records_user_env_and_workdir() {
    let t = store_with_image();
    let mounts = vec![];
    t.store()
        .create_container(&CreateOptions {
            name: Some("app".into()),
            image: IMAGE.into(),
            mounts,
            env: vec!["EXTRA=2".into()],
            user: Some("app".into()),
            working_dir: Some("/home/app".into()),
            ..CreateOptions::default()
        })
        .unwrap();
    let out = exec(
        &t,
        "app",
        &[
            "sh",
            "-c",
            "cat; echo \"$IMAGE_ENV$EXTRA $(id -u):$(id -g) $(pwd)\"; exit 3",
        ],
        None,
        b"hello\n",
    );
    assert_eq!(out.code, 3);
    assert_eq!(out.stdout, "hello\n12 1000:1000 /home/app\n");
    let root = exec(&t, "app", &["id", "-u"], Some("0"), b"");
    assert_eq!(root.stdout, "0\n");
    let devices = exec(
        &t,
        "app",
        &[
            "sh",
            "-c",
            "echo x > /dev/null && ls /dev && test -r /proc/self/status",
        ],
        None,
        b"",
    );
    assert_eq!(devices.code, 0, "{}", devices.stderr);
    for dev in ["null", "zero", "random", "urandom", "tty"] {
        assert!(
            devices.stdout.split_whitespace().any(|d| d == dev),
            "{}",
            devices.stdout
        );
    }
    let missing = t.store().exec_container(
        "app",
        &ExecRequest {
            cmd: vec!["nope".into()],
            ..ExecRequest::default()
        },
        null_stdio(),
    );
    assert!(
        missing
            .unwrap_err()
            .to_string()
            .contains("not found in the container's PATH")
    );
    assert!(
        !t.store().inspect_container("app").unwrap().mounted,
        "exec released its mount reference"
    );
}

#[test]
fn volume_data_outlives_its_container_and_readonly_binds_refuse_writes() {
    let t = store_with_image();
    create(&t, "writer", &["shared:/vol"], &[]);
    assert_eq!(
        exec(
            &t,
            "writer",
            &["sh", "-c", "echo kept > /vol/file"],
            None,
            b""
        )
        .code,
        0
    );
    t.store().remove_container("writer", false).unwrap();
    assert_eq!(t.store().inspect_volume("shared").unwrap().users, 0);
    create(&t, "reader", &["shared:/vol:ro"], &[]);
    assert_eq!(
        exec(&t, "reader", &["cat", "/vol/file"], None, b"").stdout,
        "kept\n"
    );
    assert_eq!(
        t.store().remove_volume("shared").unwrap_err().kind(),
        ErrorKind::InUse
    );

    let host = t.dir.path().join("host-ro");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("f"), b"host").unwrap();
    create(&t, "binder", &[&format!("{}:/ro:ro", host.display())], &[]);
    let out = exec(
        &t,
        "binder",
        &["sh", "-c", "cat /ro/f; touch /ro/x"],
        None,
        b"",
    );
    assert_ne!(out.code, 0);
    assert_eq!(out.stdout, "host");
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.stderr
    );
    assert!(!host.join("x").exists());
}

#[test]
fn invalid_mount_specs_are_refused_and_create_nothing() {
    let t = store_with_image();
    let before = t.tree_listing();
    let inside_store = format!("{}/overlay2:/x", t.root().display());
    let cases: Vec<(Vec<&str>, Vec<&str>, &str)> = vec![
        (vec!["data:relative"], vec![], "relative"),
        (vec!["data:/"], vec![], "/"),
        (vec!["data:/a:rw,ro"], vec![], "ro"),
        (vec!["a:b:c:d"], vec![], "colons"),
        (vec!["data:/same", "other:/same"], vec![], "/same"),
        (vec![&inside_store], vec![], "store"),
        (
            vec![],
            vec!["type=bind,source=/does/not/exist,target=/x"],
            "/does/not/exist",
        ),
        (vec![], vec!["type=volume,target=/x,bogus=1"], "bogus"),
    ];
    for (volumes, mounts, needle) in cases {
        let parsed: Result<Vec<_>, String> = volumes
            .iter()
            .map(|v| parse_volume_flag(v).map_err(|e| e.to_string()))
            .chain(
                mounts
                    .iter()
                    .map(|m| parse_mount_flag(m).map_err(|e| e.to_string())),
            )
            .collect();
        let message = match parsed {
            Err(e) => e,
            Ok(mounts) => t
                .store()
                .create_container(&CreateOptions {
                    name: Some("bad".into()),
                    image: IMAGE.into(),
                    mounts,
                    ..CreateOptions::default()
                })
                .unwrap_err()
                .to_string(),
        };
        assert!(
            message.contains(needle),
            "{volumes:?} {mounts:?}: {message}"
        );
        assert!(t.store().list_containers().unwrap().is_empty());
        assert!(t.store().list_volumes(None).unwrap().is_empty());
        assert_eq!(t.tree_listing(), before);
    }
}

#[test]
fn mounted_containers_and_used_images_are_protected() {
    let t = store_with_image();
    create(&t, "c1", &["/anon"], &[]);
    let path = t.store().mount_container("c1").unwrap();
    assert_eq!(t.store().mount_container("c1").unwrap(), path);
    assert!(path.join("bin/busybox").exists());
    assert_eq!(
        t.store().remove_container("c1", false).unwrap_err().kind(),
        ErrorKind::InUse
    );
    assert_eq!(
        t.store().remove_image(IMAGE, false).unwrap_err().kind(),
        ErrorKind::InUse
    );
    assert_eq!(t.store().unmount_container("c1", false).unwrap(), 1);
    assert_eq!(t.store().unmount_container("c1", false).unwrap(), 0);
    assert_eq!(
        t.store().unmount_container("c1", false).unwrap(),
        0,
        "unmount is idempotent"
    );
    t.store().mount_container("c1").unwrap();
    t.store().remove_container("c1", true).unwrap();
    assert!(!path.exists());
    // The anonymous volume is now dangling and pruned by default; named ones need --all.
    t.store()
        .create_volume(Some("named"), std::collections::BTreeMap::new())
        .unwrap();
    assert_eq!(t.store().list_volumes(Some(true)).unwrap().len(), 2);
    let pruned = t.store().prune_volumes(false).unwrap();
    assert_eq!(pruned.removed.len(), 1);
    assert_eq!(
        t.store().prune_volumes(true).unwrap().removed,
        vec!["named".to_owned()]
    );
    t.store().remove_image(IMAGE, false).unwrap();
}

/// Mount references live in memory; the kernel's mount table is what survives a restart, and
/// start-up adopts a mounted container as one reference (as Docker's overlay2 driver does).
#[test]
fn container_mounts_survive_a_restart_as_one_reference() {
    let mut t = store_with_image();
    create(&t, "keep", &[], &[]);
    let path = t.store().mount_container("keep").unwrap();
    t.store().mount_container("keep").unwrap();
    std::fs::write(path.join("tmp/marker"), b"x").unwrap();
    let report = t.reopen();
    assert_eq!(report.adopted_mounts, vec![path.clone()]);
    let c = t.store().inspect_container("keep").unwrap();
    assert!(c.mounted, "mount state lost across restart");
    assert!(path.join("tmp/marker").exists());
    assert_eq!(t.store().unmount_container("keep", false).unwrap(), 0);
    assert!(!path.join("tmp/marker").exists(), "still mounted");
    assert!(!t.store().inspect_container("keep").unwrap().mounted);
    // An upper dir no record names is an orphan at start-up; the container's is not.
    t.reopen();
    assert!(t.store().inspect_container("keep").is_ok());
    assert!(
        t.root()
            .join("overlay2")
            .join(c.id.to_string())
            .join("diff/tmp/marker")
            .exists()
    );
}

/// An unmount detaches at once and leaves the overlay's teardown (a sync of the upper
/// filesystem) to a background thread; a mount of the same container right after must wait
/// for it rather than stack a second overlay on an upper dir still in use.
#[test]
fn remounting_right_after_an_unmount_sees_every_write() {
    let t = store_with_image();
    create(&t, "again", &[], &[]);
    for round in 0..50 {
        let path = t.store().mount_container("again").unwrap();
        let file = path.join("tmp/rounds");
        let before = std::fs::read_to_string(&file).unwrap_or_default();
        assert_eq!(before.lines().count(), round, "round {round}: lost a write");
        std::fs::write(&file, format!("{before}{round}\n")).unwrap();
        assert_eq!(t.store().unmount_container("again", false).unwrap(), 0);
        assert!(
            !strata_store::mounts::mounts_under(&path)
                .unwrap()
                .contains(&path),
            "round {round}: still in the mount table after unmount"
        );
    }
}

/// Mount references change under one claim per container: concurrent mounts and unmounts end
/// with the count and the kernel's mount table in agreement.
#[test]
fn concurrent_mounts_and_unmounts_keep_count_and_kernel_in_step() {
    let t = store_with_image();
    create(&t, "busy", &[], &[]);
    let store = t.store();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..25 {
                    let path = store.mount_container("busy").unwrap();
                    assert!(path.join("bin/busybox").exists(), "mounted but empty");
                    store.unmount_container("busy", false).unwrap();
                }
            });
        }
    });
    let c = store.inspect_container("busy").unwrap();
    assert!(!c.mounted);
    let merged = t
        .root()
        .join("overlay2")
        .join(c.id.to_string())
        .join("merged");
    assert!(
        !strata_store::mounts::mounts_under(&merged)
            .unwrap()
            .contains(&merged)
    );
    store.remove_container("busy", false).unwrap();
}

/// A container's directories are created without an fsync (the record's commit is the one
/// flush of a create); if a crash loses them, start-up re-creates them.
#[test]
fn lost_container_directories_are_recreated_at_start_up() {
    let mut t = store_with_image();
    let c = create(&t, "fresh", &[], &[]);
    std::fs::remove_dir_all(t.root().join("overlay2").join(c.id.to_string())).unwrap();
    t.reopen();
    let path = t.store().mount_container("fresh").unwrap();
    assert!(path.join("bin/busybox").exists());
    t.store().unmount_container("fresh", false).unwrap();
}

/// A kill between a mounted container's record removal and its unmount leaves an orphan
/// directory with an overlay still mounted inside: start-up must unmount it and go on, not
/// fail to remove the directory (EBUSY) and refuse to start.
#[test]
fn an_orphan_still_mounted_after_a_crash_is_unmounted_and_removed_at_start_up() {
    let mut t = store_with_image();
    let c = create(&t, "cut", &[], &[]);
    let merged = t.store().mount_container("cut").unwrap();
    t.store = None;
    {
        let db = strata_store::meta::MetaDb::open(&t.root().join("meta.redb")).unwrap();
        let txn = db.write().unwrap();
        let record = strata_store::meta::Reads::container(&txn, &c.id)
            .unwrap()
            .unwrap();
        txn.delete_container(&record).unwrap();
        txn.commit().unwrap();
    }
    let report = t.reopen();
    assert_eq!(report.unmounted_stale, vec![merged.clone()]);
    assert_eq!(report.removed_orphans, vec![c.id.to_string()]);
    assert!(
        !strata_store::mounts::mounts_under(&t.root())
            .unwrap()
            .contains(&merged)
    );
    assert!(!t.root().join("overlay2").join(c.id.to_string()).exists());
}

/// The inode numbers of the directories in `dir` (empty if it does not exist).
fn dir_inodes(dir: &std::path::Path) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().metadata().unwrap().ino())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("listing {}: {e}", dir.display()),
    }
}

/// A create takes a ready-made directory from `overlay2/spare/` (one rename) once the first
/// create has set the filler going; the container's directories have their modes and mount
/// like any other; a reopen removes leftover spares, and a store that never created a
/// container has none.
#[test]
fn creates_take_ready_made_directories_which_a_reopen_clears() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut t = store_with_image();
    let spare_dir = t.root().join("overlay2/spare");
    assert!(
        dir_inodes(&spare_dir).is_empty(),
        "spares made before any create"
    );
    create(&t, "first", &[], &[]);
    // Wait until the filler is done (the listing stops changing): a create takes the newest
    // spare, which must be in the listing the check compares with.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut last = Vec::new();
    let ready = loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut ready = dir_inodes(&spare_dir);
        ready.sort_unstable();
        if ready.len() >= 2 && ready == last {
            break ready;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the spares did not settle in 20 s: {ready:?}"
        );
        last = ready;
    };
    let c = create(&t, "second", &[], &[]);
    let dir = t.root().join("overlay2").join(c.id.to_string());
    let ino = std::fs::metadata(&dir).unwrap().ino();
    assert!(
        ready.contains(&ino),
        "{} (inode {ino}) is not one of the spares {ready:?}",
        dir.display()
    );
    assert!(!dir_inodes(&spare_dir).contains(&ino), "taken twice");
    for (sub, mode) in [("diff", 0o755), ("work", 0o700), ("merged", 0o755)] {
        let meta = std::fs::metadata(dir.join(sub)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{sub}");
        assert_eq!(
            std::fs::read_dir(dir.join(sub)).unwrap().count(),
            0,
            "{sub}"
        );
    }
    let merged = t.store().mount_container("second").unwrap();
    std::fs::write(merged.join("tmp/written"), b"x").unwrap();
    assert!(dir.join("diff/tmp/written").exists());
    assert_eq!(t.store().unmount_container("second", false).unwrap(), 0);
    t.store().remove_container("second", false).unwrap();

    t.reopen();
    assert!(
        dir_inodes(&spare_dir).is_empty(),
        "spares survived a reopen"
    );
    assert!(t.store().inspect_container("first").is_ok());
}
