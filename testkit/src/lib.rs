//! Test fixtures for Strata.
//!
//! - [`LayerBuilder`]: layer tars with exact control over names, modes, owners, mtimes,
//!   xattrs, links, devices and whiteouts, including hostile entries.
//! - [`ImageBuilder`]: the same layers as a `docker save` archive (dockerd 20.10 or Docker 25
//!   style) or an OCI layout with uncompressed, gzip or zstd layers; [`rich_image`] and
//!   [`shared_base_images`] are ready-made.
//! - [`TreeSnapshot`]: a canonical view of a filesystem tree, from a directory or a tar, with a
//!   human-readable [`TreeSnapshot::diff`].
//! - [`Dockerd`] and [`Stratad`]: private daemons for one test, cleaned up on drop.
//!
//! ```
//! use strata_testkit::{LayerBuilder, TreeSnapshot};
//! let mut layer = LayerBuilder::new();
//! layer.dir("etc", 0o755).file("etc/motd", b"hi\n", 0o644);
//! let tree = TreeSnapshot::from_tar(layer.build().as_slice()).unwrap();
//! assert_eq!(tree.nodes["etc/motd"].size, 3);
//! ```

mod busybox;
mod daemon;
mod error;
mod fixtures;
mod image;
mod json;
mod layer;
mod tree;

pub use busybox::{BUSYBOX, BUSYBOX_APPLETS, busybox_image};
pub use daemon::{Dockerd, Stratad, find_program, require_root};
pub use error::Error;
pub use fixtures::{
    RICH_IMAGE_TAG, RICH_XATTR_PATH, SHARED_IMAGE_TAGS, pseudo_random_bytes, rich_deep_path,
    rich_image, rich_long_name, shared_base_images,
};
pub use image::{
    Compression, ImageBuilder, chain_ids, media_type, normalize_reference, sha256_digest,
    sha256_file,
};
pub use json::numbers_under_keys;
pub use layer::{DEFAULT_MTIME, LayerBuilder};
pub use tree::{DOCKER_IGNORE, Node, NodeKind, TreeSnapshot};
