//! Tar in and out: applying layer tars to overlay2 diff directories ([`extract_layer`]),
//! exporting them back ([`export_layer`]), and reading whole image archives (`docker save`, OCI
//! image layouts) in one sequential pass ([`read_image_archive`]).
//!
//! Nothing here trusts archive content: see [`extract`] for the policy on hostile layer tars.

pub mod export;
pub mod extract;
pub mod source;
pub(crate) mod tape;

pub use export::{ExportError, export_layer};
pub use extract::{ExtractError, LayerStats, extract_layer};
pub use source::{
    ArchiveError, ArchiveImage, BlobKey, ImageConfig, ImportProgress, ImportedArchive, StagedLayer,
    read_image_archive,
};
pub use tape::TapeError;

#[cfg(test)]
mod extract_tests;
#[cfg(test)]
mod source_tests;
