//! Strata's system of record: layer, image, container and volume metadata in one redb
//! database, layer bytes in a graph driver (overlay2 by default, vfs as a fallback).
//!
//! ```no_run
//! use strata_store::{Store, StoreOptions};
//!
//! let (store, _report) = Store::open(&StoreOptions::new("/var/lib/strata"))?;
//! let file = std::fs::File::open("ubuntu.tar")?;
//! let images = store.import_images(file, &mut |_progress| {})?;
//! let path = store.mount_image(&images[0].id.to_string())?;
//! println!("mounted at {}", path.display());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The database is the truth: layers are built in `tmp/`, renamed into place and only then
//! recorded; removals drop the record first and the directory after; start-up removes what no
//! record names.

pub mod archive;
mod container;
pub mod driver;
mod error;
mod fsck;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
mod image;
mod janitor;
mod layer;
pub mod meta;
pub mod mounts;
pub mod mountspec;
mod salvage;
mod scan;
mod store;
mod sys;
mod usage;
mod volume;

pub use container::{
    Change, ChangeKind, ContainerName, ContainerSummary, CreateOptions, ExecRequest, ExecStdio,
};
pub use error::{Error, ErrorKind, ImportError, OpenError};
pub use fsck::{Check, Finding, FsckOptions, FsckReport};
pub use image::{ImageDetails, ImageLayer, ImageSummary, ImportedImage, RemovedImage};
pub use layer::LayerSummary;
pub use salvage::SalvageReport;
pub use scan::{LayerScan, ScanCache};
pub use store::{MountEvent, MountObserver, ReconcileReport, Store, StoreInfo, StoreOptions};
pub use usage::DiskUsage;
pub use volume::{ANONYMOUS_LABEL, PrunedVolumes, VolumeSummary};
