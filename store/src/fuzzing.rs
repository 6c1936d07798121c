//! Entry points for the cargo-fuzz targets in `fuzz/`, compiled only with the `fuzzing`
//! feature (off by default; only `fuzz/Cargo.toml` turns it on). Not part of the store's API.
//!
//! The record codec is private to `meta`, so that how records become bytes stays in one place
//! (`meta/codec.rs`). The `record_decode` target must still feed it hostile bytes, as a damaged
//! or foreign `meta.redb` would; these wrappers let it without making the codec public. Layer
//! extraction (`archive::extract_layer`) and mount specs (`mountspec`) are public already and
//! need nothing here; playing a layer's tape back (`archive::tape`) is private too.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::archive::TapeError;
pub use crate::meta::CodecError;
use crate::meta::ContainerRecord;

/// Decodes a record (`T` is one of the `meta` record types) from the bytes a table holds.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    crate::meta::decode_record(bytes)
}

/// Encodes a record (`T` is one of the `meta` record types) as the store writes it.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    crate::meta::encode_record(record)
}

/// Decodes a container record as schema 1 wrote it, converted to the current record the way
/// the migration to schema 2 does at open.
pub fn decode_container_v1(bytes: &[u8]) -> Result<ContainerRecord, CodecError> {
    crate::meta::decode_container_v1(bytes)
}

/// Plays the tape `extract_layer` recorded for the layer extracted to `layer` back: the layer
/// tar, as `layer export` writes it.
pub fn play_tape(tape: &[u8], layer: &Path) -> Result<Vec<u8>, TapeError> {
    let mut out = Vec::new();
    crate::archive::tape::play(tape, layer, &mut out)?;
    Ok(out)
}
