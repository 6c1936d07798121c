//! Layers: list, inspect, export.

use std::io::Write;

use serde::Serialize;

use crate::error::{Error, is_hex_prefix, unique_by_prefix};
use crate::ids::{ChainId, DiffId};
use crate::meta::{LayerRecord, Reads};
use crate::store::Store;

/// A row of `layer ls` and the body of `layer inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    pub chain_id: ChainId,
    pub diff_id: DiffId,
    pub parent: Option<ChainId>,
    pub cache_id: String,
    pub size: u64,
    pub tar_bytes: u64,
    pub files: u64,
    pub images: u32,
    pub created: u64,
    pub diff_path: std::path::PathBuf,
}

impl Store {
    fn summary(&self, l: &LayerRecord) -> LayerSummary {
        LayerSummary {
            chain_id: l.chain_id,
            diff_id: l.diff_id,
            parent: l.parent,
            cache_id: l.cache_id.hex(),
            size: l.size,
            tar_bytes: l.tar_bytes,
            files: l.files,
            images: l.image_users,
            created: l.created,
            diff_path: self.driver.diff_dir(l.cache_id),
        }
    }

    pub fn list_layers(&self) -> Result<Vec<LayerSummary>, Error> {
        let r = self.db.read()?;
        let mut out: Vec<_> = r.layers()?.into_iter().map(|l| self.summary(&l)).collect();
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.chain_id.cmp(&b.chain_id)));
        Ok(out)
    }

    /// Finds a layer by `ChainID`, or a unique prefix of its hex (at least 4 digits).
    pub fn inspect_layer(&self, reference: &str) -> Result<LayerSummary, Error> {
        let r = self.db.read()?;
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if !is_hex_prefix(hex) {
            return Err(Error::Invalid(format!(
                "{reference:?} is not a layer id (sha256:<hex> or a hex prefix)"
            )));
        }
        unique_by_prefix(r.layers()?, |l| l.chain_id.0.hex(), hex, "layer")
            .map(|l| self.summary(&l))
    }

    /// `layer export`: writes the layer's changes as a tar stream (whiteouts as `.wh.` files).
    pub fn export_layer(&self, reference: &str, out: impl Write) -> Result<(), Error> {
        let layer = self.inspect_layer(reference)?;
        crate::archive::export_layer(&layer.diff_path, out)?;
        Ok(())
    }
}
