//! Bytes from the fuzzer decoded as every record the database holds (layer, image, container,
//! volume, and a container as schema 1 wrote it, which the migration to schema 2 reads), as a
//! damaged or foreign `meta.redb` would hand them to the store.
//!
//! Asserts that decoding never panics (an error is a `CodecError`), and that whatever decodes
//! survives a round trip: re-encoding and decoding again gives an equal record, and encoding
//! that gives the same bytes again.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use strata_store::fuzzing::{CodecError, decode, decode_container_v1, encode};
use strata_store::meta::{ContainerRecord, ImageRecord, LayerRecord, VolumeRecord};

fn round_trip<T>(what: &str, decoded: Result<T, CodecError>)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let record = match decoded {
        Ok(record) => record,
        // The message ends up in the daemon's log: building it must not panic either.
        Err(e) => return drop(e.to_string()),
    };
    let bytes = encode(&record);
    let again: T = decode(&bytes)
        .unwrap_or_else(|e| panic!("{what} {record:?} encodes to bytes it cannot decode: {e}"));
    assert_eq!(again, record, "{what} changed in a round trip");
    assert_eq!(
        encode(&again),
        bytes,
        "{what} encodes differently the second time"
    );
}

fuzz_target!(|data: &[u8]| {
    round_trip("layer record", decode::<LayerRecord>(data));
    round_trip("image record", decode::<ImageRecord>(data));
    round_trip("container record", decode::<ContainerRecord>(data));
    round_trip("volume record", decode::<VolumeRecord>(data));
    round_trip("schema-1 container record", decode_container_v1(data));
});
