//! Metadata in redb: the only source of truth. Tables, typed transactions and schema
//! migrations are private to this module; the rest of the store sees records.

mod codec;
mod records;
mod schema;
#[cfg(test)]
mod tests;

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

pub use codec::CodecError;
pub use records::{
    ContainerConfig, ContainerMount, ContainerMountKind, ContainerRecord, ImageConfigRecord,
    ImageRecord, LayerRecord, VolumeRecord,
};
pub use schema::SCHEMA_VERSION;
// Only the fuzz targets (through `crate::fuzzing`) reach the codec from outside `meta`.
#[cfg(feature = "fuzzing")]
pub(crate) use {
    codec::{decode as decode_record, encode as encode_record},
    schema::decode_container_v1,
};

use crate::ids::{CacheId, ChainId, DiffId, Digest, ImageId, ImageRef};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LAYERS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("layers");
const IMAGES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("images");
const TAGS: TableDefinition<&str, &[u8; 32]> = TableDefinition::new("tags");
const BLOB_KEYS: TableDefinition<&[u8; 32], &[u8; 32]> = TableDefinition::new("blob_keys");
const CONTAINERS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("containers");
const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");
const CONTAINER_NAMES: TableDefinition<&str, &[u8; 32]> = TableDefinition::new("container_names");

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    #[error("database {0} is in use by another process (is another stratad running on this root?)")]
    Locked(String),
    #[error(
        "database {path} has schema version {found}, newer than this strata understands ({supported}); upgrade strata"
    )]
    NewerSchema {
        path: String,
        found: u64,
        supported: u64,
    },
    #[error("database {path}: {source}")]
    Open {
        path: String,
        source: redb::DatabaseError,
    },
    #[error("database: {0}")]
    Redb(#[from] redb::Error),
    #[error("database record in table {table}: {source}")]
    Codec {
        table: &'static str,
        source: CodecError,
    },
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for MetaError {
            fn from(e: $t) -> Self { MetaError::Redb(e.into()) }
        }
    )*};
}
redb_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn decode<T: serde::de::DeserializeOwned>(
    table: &'static str,
    bytes: &[u8],
) -> Result<T, MetaError> {
    codec::decode(bytes).map_err(|source| MetaError::Codec { table, source })
}

/// The open database.
#[derive(Debug)]
pub struct MetaDb {
    db: redb::Database,
}

impl MetaDb {
    /// Opens (creating if needed) `path` and migrates it to [`SCHEMA_VERSION`].
    /// On error nothing has been written.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        let shown = path.display().to_string();
        let db = redb::Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => MetaError::Locked(shown.clone()),
            source => MetaError::Open {
                path: shown.clone(),
                source,
            },
        })?;
        schema::migrate(&db, &shown)?;
        Ok(Self { db })
    }

    pub fn read(&self) -> Result<ReadTxn, MetaError> {
        Ok(ReadTxn {
            txn: self.db.begin_read()?,
        })
    }

    /// A write transaction whose commit is not flushed to disk (redb `Durability::None`); a
    /// later durable commit persists it. Only for state that start-up reconcile rebuilds from
    /// the kernel anyway (mount counts), where an fsync per mount would be wasted.
    pub fn write_volatile(&self) -> Result<WriteTxn, MetaError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| MetaError::Redb(redb::Error::from(e)))?;
        Ok(WriteTxn { txn })
    }

    pub fn write(&self) -> Result<WriteTxn, MetaError> {
        Ok(WriteTxn {
            txn: self.db.begin_write()?,
        })
    }
}

/// How many records each kind has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordCounts {
    pub layers: usize,
    pub images: usize,
    pub containers: usize,
    pub volumes: usize,
}

/// Reads shared by read and write transactions.
pub trait Reads {
    fn layer(&self, id: &ChainId) -> Result<Option<LayerRecord>, MetaError>;
    fn image(&self, id: &ImageId) -> Result<Option<ImageRecord>, MetaError>;
    fn tag(&self, r: &ImageRef) -> Result<Option<ImageId>, MetaError>;
    fn blob_key(&self, key: &Digest) -> Result<Option<DiffId>, MetaError>;
    fn layers(&self) -> Result<Vec<LayerRecord>, MetaError>;
    fn images(&self) -> Result<Vec<ImageRecord>, MetaError>;
    fn containers(&self) -> Result<Vec<ContainerRecord>, MetaError>;
    fn container(&self, id: &CacheId) -> Result<Option<ContainerRecord>, MetaError>;
    fn volume(&self, name: &str) -> Result<Option<VolumeRecord>, MetaError>;
    fn container_by_name(&self, name: &str) -> Result<Option<ContainerRecord>, MetaError>;
    fn volumes(&self) -> Result<Vec<VolumeRecord>, MetaError>;
    /// Numbers of layers, images, containers and volumes, without decoding a record.
    fn counts(&self) -> Result<RecordCounts, MetaError>;
}

fn get_record<T, K>(
    table: &impl ReadableTable<K, &'static [u8]>,
    name: &'static str,
    key: K::SelfType<'_>,
) -> Result<Option<T>, MetaError>
where
    T: serde::de::DeserializeOwned,
    K: redb::Key + 'static,
{
    match table.get(key)? {
        Some(v) => decode(name, v.value()).map(Some),
        None => Ok(None),
    }
}

fn all_records<T, K>(
    table: &impl ReadableTable<K, &'static [u8]>,
    name: &'static str,
) -> Result<Vec<T>, MetaError>
where
    T: serde::de::DeserializeOwned,
    K: redb::Key + 'static,
{
    let mut out = Vec::new();
    for item in table.iter()? {
        let (_, v) = item?;
        out.push(decode(name, v.value())?);
    }
    Ok(out)
}

macro_rules! impl_reads {
    ($ty:ty) => {
        impl Reads for $ty {
            fn layer(&self, id: &ChainId) -> Result<Option<LayerRecord>, MetaError> {
                get_record(&self.txn.open_table(LAYERS)?, "layers", id.0.as_bytes())
            }
            fn image(&self, id: &ImageId) -> Result<Option<ImageRecord>, MetaError> {
                get_record(&self.txn.open_table(IMAGES)?, "images", id.0.as_bytes())
            }
            fn tag(&self, r: &ImageRef) -> Result<Option<ImageId>, MetaError> {
                let t = self.txn.open_table(TAGS)?;
                let found = t.get(r.to_string().as_str())?;
                Ok(found.map(|v| ImageId(Digest::from_bytes(*v.value()))))
            }
            fn blob_key(&self, key: &Digest) -> Result<Option<DiffId>, MetaError> {
                let t = self.txn.open_table(BLOB_KEYS)?;
                let found = t.get(key.as_bytes())?;
                Ok(found.map(|v| DiffId(Digest::from_bytes(*v.value()))))
            }
            fn layers(&self) -> Result<Vec<LayerRecord>, MetaError> {
                all_records(&self.txn.open_table(LAYERS)?, "layers")
            }
            fn images(&self) -> Result<Vec<ImageRecord>, MetaError> {
                all_records(&self.txn.open_table(IMAGES)?, "images")
            }
            fn containers(&self) -> Result<Vec<ContainerRecord>, MetaError> {
                all_records(&self.txn.open_table(CONTAINERS)?, "containers")
            }
            fn volumes(&self) -> Result<Vec<VolumeRecord>, MetaError> {
                all_records(&self.txn.open_table(VOLUMES)?, "volumes")
            }
            fn counts(&self) -> Result<RecordCounts, MetaError> {
                let len = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
                Ok(RecordCounts {
                    layers: len(self.txn.open_table(LAYERS)?.len()?),
                    images: len(self.txn.open_table(IMAGES)?.len()?),
                    containers: len(self.txn.open_table(CONTAINERS)?.len()?),
                    volumes: len(self.txn.open_table(VOLUMES)?.len()?),
                })
            }
            fn container(&self, id: &CacheId) -> Result<Option<ContainerRecord>, MetaError> {
                get_record(
                    &self.txn.open_table(CONTAINERS)?,
                    "containers",
                    id.as_bytes(),
                )
            }
            fn volume(&self, name: &str) -> Result<Option<VolumeRecord>, MetaError> {
                get_record(&self.txn.open_table(VOLUMES)?, "volumes", name)
            }
            fn container_by_name(&self, name: &str) -> Result<Option<ContainerRecord>, MetaError> {
                let id = self
                    .txn
                    .open_table(CONTAINER_NAMES)?
                    .get(name)?
                    .map(|v| *v.value());
                match id {
                    Some(id) => get_record(&self.txn.open_table(CONTAINERS)?, "containers", &id),
                    None => Ok(None),
                }
            }
        }
    };
}

/// A consistent snapshot.
pub struct ReadTxn {
    txn: redb::ReadTransaction,
}

/// All changes in one transaction become durable together at [`WriteTxn::commit`]; dropping
/// it without committing discards them.
pub struct WriteTxn {
    txn: redb::WriteTransaction,
}

impl std::fmt::Debug for ReadTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadTxn")
    }
}
impl std::fmt::Debug for WriteTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteTxn")
    }
}

impl_reads!(ReadTxn);
impl_reads!(WriteTxn);

impl WriteTxn {
    pub fn put_layer(&self, rec: &LayerRecord) -> Result<(), MetaError> {
        self.txn
            .open_table(LAYERS)?
            .insert(rec.chain_id.0.as_bytes(), codec::encode(rec).as_slice())?;
        Ok(())
    }
    pub fn delete_layer(&self, id: &ChainId) -> Result<(), MetaError> {
        self.txn.open_table(LAYERS)?.remove(id.0.as_bytes())?;
        Ok(())
    }
    pub fn put_image(&self, rec: &ImageRecord) -> Result<(), MetaError> {
        self.txn
            .open_table(IMAGES)?
            .insert(rec.id.0.as_bytes(), codec::encode(rec).as_slice())?;
        Ok(())
    }
    pub fn delete_image(&self, id: &ImageId) -> Result<(), MetaError> {
        self.txn.open_table(IMAGES)?.remove(id.0.as_bytes())?;
        Ok(())
    }
    pub fn put_tag(&self, r: &ImageRef, id: &ImageId) -> Result<(), MetaError> {
        self.txn
            .open_table(TAGS)?
            .insert(r.to_string().as_str(), id.0.as_bytes())?;
        Ok(())
    }
    pub fn delete_tag(&self, r: &ImageRef) -> Result<(), MetaError> {
        self.txn.open_table(TAGS)?.remove(r.to_string().as_str())?;
        Ok(())
    }
    pub fn put_blob_key(&self, key: &Digest, diff: &DiffId) -> Result<(), MetaError> {
        self.txn
            .open_table(BLOB_KEYS)?
            .insert(key.as_bytes(), diff.0.as_bytes())?;
        Ok(())
    }
    /// Forgets every blob key pointing at `diff` (its last layer is gone).
    pub fn delete_blob_keys_for(&self, diff: &DiffId) -> Result<(), MetaError> {
        let mut t = self.txn.open_table(BLOB_KEYS)?;
        t.retain(|_, v| v != diff.0.as_bytes())?;
        Ok(())
    }
    /// Writes the record and its name index entry.
    pub fn put_container(&self, rec: &ContainerRecord) -> Result<(), MetaError> {
        self.txn
            .open_table(CONTAINER_NAMES)?
            .insert(rec.name.as_str(), rec.id.as_bytes())?;
        self.txn
            .open_table(CONTAINERS)?
            .insert(rec.id.as_bytes(), codec::encode(rec).as_slice())?;
        Ok(())
    }
    pub fn delete_container(&self, rec: &ContainerRecord) -> Result<(), MetaError> {
        self.txn.open_table(CONTAINERS)?.remove(rec.id.as_bytes())?;
        self.txn
            .open_table(CONTAINER_NAMES)?
            .remove(rec.name.as_str())?;
        Ok(())
    }
    pub fn delete_volume(&self, name: &str) -> Result<(), MetaError> {
        self.txn.open_table(VOLUMES)?.remove(name)?;
        Ok(())
    }
    pub fn put_volume(&self, rec: &VolumeRecord) -> Result<(), MetaError> {
        self.txn
            .open_table(VOLUMES)?
            .insert(rec.name.as_str(), codec::encode(rec).as_slice())?;
        Ok(())
    }
    pub fn commit(self) -> Result<(), MetaError> {
        self.txn.commit()?;
        Ok(())
    }
}
