//! The one place that knows how records become bytes: a format-version byte, then bincode 2
//! (standard config: little-endian, varint integers) of the serde record.
//!
//! bincode is frozen upstream (RUSTSEC-2025-0141) but its format is stable; should we move,
//! only this module and the golden tests below change, and a new format byte tells old records
//! from new ones.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format byte written before every record.
pub(crate) const FORMAT_BINCODE2: u8 = 1;

/// A record that could not be decoded: the database holds bytes this build does not understand.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("record is empty")]
    Empty,
    #[error("record has unknown format byte {0} (written by a newer strata?)")]
    UnknownFormat(u8),
    #[error("record is corrupt: {0}")]
    Corrupt(String),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The most string bytes one record may hold when decoded. bincode allocates a string's
/// length before reading its bytes, so without a limit a corrupt length (a few bytes) asks for
/// up to 2^64 bytes: a panic or an aborted daemon instead of a [`CodecError`]. Records'
/// strings come from image configs, which import caps at 32 MiB, so legitimate records stay
/// well below this. The limit only checks; it does not change the encoding.
const DECODE_LIMIT: usize = 64 << 20;

fn decode_config() -> impl bincode::config::Config {
    config().with_limit::<DECODE_LIMIT>()
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_BINCODE2];
    // Encoding into a Vec only fails for types serde cannot describe (maps with non-string
    // keys are fine in bincode); our records are plain structs, so this is a programming error.
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .expect("records are always encodable");
    out
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&format, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if format != FORMAT_BINCODE2 {
        return Err(CodecError::UnknownFormat(format));
    }
    let (value, used) = bincode::serde::decode_from_slice(body, decode_config())
        .map_err(|e| CodecError::Corrupt(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Corrupt(format!(
            "{} trailing bytes",
            body.len() - used
        )));
    }
    Ok(value)
}
