//! Races between unmounts and execs, on real overlay mounts.
//!
//! Guards against an overlay that outlives its unmount while the same container mounts again,
//! so that two overlays share one upper dir (the kernel warns: "accessing files from both
//! mounts will result in undefined behavior"). Unmounts leave the overlay's teardown to a
//! background thread holding the last reference, and exec forks children whose new mount
//! namespace starts as a copy of every mount. The test counts the kernel's warnings, so it
//! runs alone in its own process: a file another test of the same process has open on an
//! overlay is copied into every child forked meanwhile (fork's semantics, not the store's)
//! and could delay a teardown it does not own.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

mod common;

use common::{TestStore, null_stdio, overlay_in_use_warnings};
use strata_store::{CreateOptions, ExecRequest};
use strata_testkit::busybox_image;

const IMAGE: &str = "busybox/test:latest";

fn create(t: &TestStore, name: &str) {
    t.store()
        .create_container(&CreateOptions {
            name: Some(name.into()),
            image: IMAGE.into(),
            ..CreateOptions::default()
        })
        .unwrap();
}

/// An unmount's teardown finishes in the background, and exec forks children that copy the
/// process's descriptors and mount table. Neither may keep an unmounted overlay alive past the
/// point where the same container mounts again: the kernel would stack two overlays on one
/// upper dir (and says so in its log).
#[test]
fn remounts_racing_execs_never_share_an_upper_dir() {
    let t = TestStore::new("overlay2");
    t.import(&busybox_image(IMAGE).docker_save_legacy());
    create(&t, "runner");
    create(&t, "cycler");
    let store = t.store();
    let before = overlay_in_use_warnings();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for _ in 0..40 {
                let req = ExecRequest {
                    cmd: vec!["true".into()],
                    ..ExecRequest::default()
                };
                assert_eq!(
                    store.exec_container("runner", &req, null_stdio()).unwrap(),
                    0
                );
            }
        });
        for round in 0..200 {
            let path = store.mount_container("cycler").unwrap();
            assert!(
                path.join("bin/busybox").exists(),
                "round {round}: empty mount"
            );
            store.unmount_container("cycler", false).unwrap();
        }
    });
    assert_eq!(
        overlay_in_use_warnings() - before,
        0,
        "the kernel mounted an upper dir that was still in use"
    );
}
