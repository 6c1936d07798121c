//! Layers: list, inspect, export.

use std::io::Write;

use serde::Serialize;

use crate::archive::tape;
use crate::error::{Error, is_hex_prefix, unique_by_prefix};
use crate::ids::{CacheId, ChainId, DiffId};
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

    /// `layer export`: writes the layer as a tar stream. A layer with a tape is written exactly
    /// as it was imported (its digest is its `DiffID`); an error after the first bytes means
    /// the layer's files changed since (see `fsck --verify`). A layer without a tape is walked
    /// and written anew (whiteouts as `.wh.` files; its digest differs).
    pub fn export_layer(&self, reference: &str, mut out: impl Write) -> Result<(), Error> {
        let layer = self.inspect_layer(reference)?;
        let id: CacheId = layer.cache_id.parse()?;
        match self.play_tape(id, layer.diff_id, &mut out)? {
            Some(()) => Ok(()),
            None => Ok(crate::archive::export_layer(&layer.diff_path, out)?),
        }
    }

    /// Plays layer `id`'s tape into `out`, failing if what was written does not hash to
    /// `diff_id`. `None` when the layer has no tape.
    pub(crate) fn play_tape(
        &self,
        id: CacheId,
        diff_id: DiffId,
        out: &mut impl Write,
    ) -> Result<Option<()>, Error> {
        let path = self.driver.tape_path(id);
        let tape = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("opening", &path)(e)),
        };
        let (recorded, actual) = tape::play(tape, &self.driver.diff_dir(id), out)
            .map_err(|e| Error::Invalid(format!("layer {diff_id}: {e}")))?;
        if recorded != diff_id || actual != diff_id.0 {
            return Err(Error::Invalid(format!(
                "layer {diff_id}: its files now hash to {actual}: they changed since the import"
            )));
        }
        Ok(Some(()))
    }
}
