//! The fallback for kernels before 6.8 (no `lowerdir+`): classic mount(2) with relative
//! short links from the driver home, in a forked helper so the daemon's working directory
//! never changes. Its own test binary, because the API choice is process-wide.
//! Guards against a fallback that only works for short chains or that breaks the parent's cwd.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

mod common;

use common::{TestStore, tall_image};

#[test]
fn classic_mount_api_stacks_dockers_128_layers_and_refuses_beyond_a_page() {
    strata_store::mounts::force_classic_overlay_api();
    let t = TestStore::new("overlay2");
    let cwd = std::env::current_dir().unwrap();
    t.import(&tall_image(128, "tall/128:latest").docker_save_oci());
    let view = t.view("tall/128:latest");
    assert_eq!(
        view.nodes
            .keys()
            .filter(|p| p.starts_with("layers/"))
            .count(),
        128
    );
    assert_eq!(std::env::current_dir().unwrap(), cwd);
    assert!(strata_store::mounts::overlay_api_name().starts_with("mount(2)"));

    t.import(&tall_image(200, "tall/200:latest").docker_save_oci());
    let err = t.store().mount_image("tall/200:latest").unwrap_err();
    assert!(err.to_string().contains("over a page"), "{err}");
}
