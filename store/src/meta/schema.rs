//! Schema versions and the migrations between them, run at open inside one write transaction
//! so a crash mid-migration leaves the old schema intact.

use redb::{ReadableTable, WriteTransaction};
use serde::Deserialize;

use super::records::{ContainerConfig, ContainerMount, ContainerRecord};
use super::{
    BLOB_KEYS, CONTAINER_NAMES, CONTAINERS, IMAGES, LAYERS, META, MetaError, TAGS, VOLUMES, codec,
    decode,
};
use crate::ids::{CacheId, ChainId, ImageId};

/// The schema this build writes.
pub const SCHEMA_VERSION: u64 = 2;

const VERSION_KEY: &str = "schema_version";

type Migration = fn(&WriteTransaction) -> Result<(), MetaError>;

/// `MIGRATIONS[n]` moves a database from version `n` to `n + 1`. Version 0 is a new, empty file.
const MIGRATIONS: [Migration; 2] = [create_v1_tables, drop_container_mount_counts];
const _: () = assert!(
    MIGRATIONS.len() as u64 == SCHEMA_VERSION,
    "one migration per version"
);

fn create_v1_tables(txn: &WriteTransaction) -> Result<(), MetaError> {
    txn.open_table(LAYERS)?;
    txn.open_table(IMAGES)?;
    txn.open_table(TAGS)?;
    txn.open_table(BLOB_KEYS)?;
    txn.open_table(CONTAINERS)?;
    txn.open_table(CONTAINER_NAMES)?;
    txn.open_table(VOLUMES)?;
    Ok(())
}

/// A container record as schema 1 wrote it: with a mount count between `created` and
/// `rw_size`. Mount counts now live in memory, rebuilt from the kernel at start-up.
#[derive(Deserialize)]
struct ContainerRecordV1 {
    id: CacheId,
    name: String,
    image: ImageId,
    chain: Vec<ChainId>,
    config: ContainerConfig,
    mounts: Vec<ContainerMount>,
    created: u64,
    _mounted: u32,
    rw_size: Option<(u64, u64)>,
}

impl From<ContainerRecordV1> for ContainerRecord {
    fn from(v1: ContainerRecordV1) -> Self {
        Self {
            id: v1.id,
            name: v1.name,
            image: v1.image,
            chain: v1.chain,
            config: v1.config,
            mounts: v1.mounts,
            created: v1.created,
            rw_size: v1.rw_size,
        }
    }
}

/// A schema-1 container record decoded and converted as [`drop_container_mount_counts`] does.
pub(crate) fn decode_container_v1(bytes: &[u8]) -> Result<ContainerRecord, codec::CodecError> {
    codec::decode::<ContainerRecordV1>(bytes).map(ContainerRecord::from)
}

/// The schema version a read transaction sees (0: none recorded), or why it cannot be read.
pub(super) fn stored_version(txn: &redb::ReadTransaction) -> Result<u64, String> {
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.to_string()),
    };
    let version = meta.get(VERSION_KEY).map_err(|e| e.to_string())?;
    Ok(version.map_or(0, |v| v.value()))
}

fn drop_container_mount_counts(txn: &WriteTransaction) -> Result<(), MetaError> {
    let mut table = txn.open_table(CONTAINERS)?;
    let mut rewritten = Vec::new();
    for item in table.iter()? {
        let (key, value) = item?;
        let old: ContainerRecordV1 = decode("containers", value.value())?;
        rewritten.push((*key.value(), codec::encode(&ContainerRecord::from(old))));
    }
    for (key, value) in rewritten {
        table.insert(&key, value.as_slice())?;
    }
    Ok(())
}

pub(super) fn migrate(db: &redb::Database, path: &str) -> Result<(), MetaError> {
    let txn = db.begin_write()?;
    let found = {
        let meta = txn.open_table(META)?;
        meta.get(VERSION_KEY)?.map_or(0, |v| v.value())
    };
    if found > SCHEMA_VERSION {
        return Err(MetaError::NewerSchema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    for (from, step) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(usize::MAX))
    {
        step(&txn)?;
        tracing::info!(database = path, from, to = from + 1, "migrated schema");
    }
    txn.open_table(META)?.insert(VERSION_KEY, SCHEMA_VERSION)?;
    txn.commit()?;
    Ok(())
}

/// Test-only: pretend another strata wrote this database.
#[cfg(test)]
pub(super) fn set_version(db: &redb::Database, version: u64) {
    let txn = db.begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert(VERSION_KEY, version)
        .unwrap();
    txn.commit().unwrap();
}
