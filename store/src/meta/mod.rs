//! Metadata in redb: the only source of truth. Tables, typed transactions and schema
//! migrations are private to this module; the rest of the store sees records.

mod codec;
mod records;
mod schema;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

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
    /// The file is damaged: truncated, or failing redb's checksums. Nothing was changed.
    #[error(
        "database {path} is corrupt: {detail}. Nothing was changed; to recover see docs/recovery.md (`stratad --salvage`)"
    )]
    Corrupt { path: String, detail: String },
    /// redb's checks pass but records do not decode (`count` of them). Nothing was changed.
    #[error(
        "database {path} has {count} record(s) that do not decode (first: {} record {}: {}). Nothing was changed; to recover see docs/recovery.md (`stratad --salvage`)",
        first.table, first.key, first.error
    )]
    CorruptRecords {
        path: String,
        count: usize,
        first: Box<CorruptRecord>,
    },
    #[error("locking database {path} (lock file {path}.lock): {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Redb(#[from] redb::Error),
    /// An I/O error stopped the database and opening it again failed too.
    #[error(
        "database {0} stopped after an I/O error and could not be opened again; restart stratad"
    )]
    Unavailable(String),
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

/// `redb::Database::create`, with its failures sorted: in use, damaged, other.
fn open_redb(path: &Path, shown: &str) -> Result<redb::Database, MetaError> {
    let corrupt = |detail: String| MetaError::Corrupt {
        path: shown.to_owned(),
        detail,
    };
    // redb can panic on some damaged pages: a damaged file must be refused, not crash us.
    let opened = std::panic::catch_unwind(|| redb::Database::create(path))
        .map_err(|_| corrupt("opening it failed: redb panicked".into()))?;
    opened.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => MetaError::Locked(shown.to_owned()),
        redb::DatabaseError::Storage(
            e @ (redb::StorageError::Corrupted(_) | redb::StorageError::Io(_)),
        ) => corrupt(e.to_string()),
        source => MetaError::Open {
            path: shown.to_owned(),
            source,
        },
    })
}

/// Opens the file at `path` (shown as `shown`), runs redb's integrity check, migrates it and
/// decodes every record.
fn check(path: &Path, shown: &str) -> Result<Arc<redb::Database>, MetaError> {
    let mut db = open_redb(path, shown)?;
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.check_integrity()));
    let corrupt = |detail: String| MetaError::Corrupt {
        path: shown.to_owned(),
        detail,
    };
    match checked {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            tracing::warn!(database = %shown, "redb found the database inconsistent and repaired it; run `strata system fsck`");
        }
        Ok(Err(e)) => return Err(corrupt(format!("integrity check failed: {e}"))),
        Err(_) => return Err(corrupt("integrity check failed: redb panicked".into())),
    }
    schema::migrate(&db, shown)?;
    let db = Arc::new(db);
    let mut records = corrupt_records(&db)?;
    if !records.is_empty() {
        return Err(MetaError::CorruptRecords {
            path: shown.to_owned(),
            count: records.len(),
            first: Box::new(records.swap_remove(0)),
        });
    }
    Ok(db)
}

/// Every record, of every table, that does not decode.
fn corrupt_records(db: &Arc<redb::Database>) -> Result<Vec<CorruptRecord>, MetaError> {
    let txn = WriteTxn {
        txn: db.begin_write()?,
        _db: Arc::clone(db),
    };
    let mut out = Vec::new();
    out.extend(txn.scan_layers()?.corrupt);
    out.extend(txn.scan_images()?.corrupt);
    out.extend(txn.scan_containers()?.corrupt);
    out.extend(txn.scan_volumes()?.corrupt);
    Ok(out)
}

/// Makes a database file one process's: `<file>.lock` beside it, held with `flock` for as long
/// as the database is open. It is taken before the file is read at all, so a second process
/// is told the database is in use rather than checking a copy of a file being written.
#[derive(Debug)]
pub struct DbLock {
    _held: nix::fcntl::Flock<std::fs::File>,
}

impl DbLock {
    /// Locks the database at `path`; [`MetaError::Locked`] if another holder has it (another
    /// process, or another open of it in this one).
    pub fn acquire(path: &Path) -> Result<Self, MetaError> {
        let shown = path.display().to_string();
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_error = |source| MetaError::Lock {
            path: shown.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(lock_error)?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(held) => Ok(Self { _held: held }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(MetaError::Locked(shown)),
            Err((_, errno)) => Err(lock_error(errno.into())),
        }
    }
}

/// The open database.
#[derive(Debug)]
pub struct MetaDb {
    _lock: DbLock,
    path: std::path::PathBuf,
    /// Replaced by [`MetaDb::reopen`] after redb latched an I/O error (`None` if that failed);
    /// transactions hold the instance they began on.
    db: std::sync::RwLock<Option<Arc<redb::Database>>>,
}

/// How long a reopen waits for the transactions still using the failed instance.
const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl MetaDb {
    /// Opens (creating if needed) `path`, checks it and migrates it to [`SCHEMA_VERSION`].
    ///
    /// The check is redb's integrity check (every page against its checksum: a flipped bit
    /// anywhere in live data is caught) and a decode of every record. A damaged file is refused
    /// ([`MetaError::Corrupt`], [`MetaError::CorruptRecords`]) rather than opened with data
    /// missing, and an empty file is not taken for a new database. Opening can make redb repair
    /// the file (normal after a crash: it rebuilds its allocator state), so the check runs on a
    /// copy first: a refused file is left exactly as it was. On error nothing was written.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        Self::open_locked(path, DbLock::acquire(path)?)
    }

    /// [`MetaDb::open`], with the file's lock already taken.
    pub fn open_locked(path: &Path, lock: DbLock) -> Result<Self, MetaError> {
        let shown = path.display().to_string();
        let existing = std::fs::metadata(path).ok();
        if existing.as_ref().is_some_and(|m| m.len() == 0) {
            return Err(MetaError::Corrupt {
                path: shown,
                detail:
                    "the file is empty (truncated?); a new database is only made where none exists"
                        .into(),
            });
        }
        if existing.is_some() {
            let copy = path.with_extension("redb.check");
            match std::fs::copy(path, &copy) {
                Ok(_) => {
                    let checked = check(&copy, &shown);
                    let _ = std::fs::remove_file(&copy);
                    checked?;
                    // The copy passed, migration included: the real file opens the same way.
                    let db = open_redb(path, &shown)?;
                    schema::migrate(&db, &shown)?;
                    return Ok(Self::new(path, Arc::new(db), lock));
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&copy);
                    tracing::warn!(database = %shown, error = %e, "cannot copy the database to check it first; checking it in place");
                }
            }
        }
        let db = check(path, &shown)?;
        Ok(Self::new(path, db, lock))
    }

    fn new(path: &Path, db: Arc<redb::Database>, lock: DbLock) -> Self {
        Self {
            _lock: lock,
            path: path.to_path_buf(),
            db: std::sync::RwLock::new(Some(db)),
        }
    }

    fn current(&self) -> Result<Arc<redb::Database>, MetaError> {
        self.db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| MetaError::Unavailable(self.path.display().to_string()))
    }

    /// redb latches an I/O error (a full disk, say): every later operation on that instance
    /// fails with `PreviousIo` until the database is closed and opened again. Once the
    /// transactions still using `failed` are done, this opens the file again (redb repairs what
    /// the failed write left). Returns whether it did.
    fn reopen(&self, failed: *const redb::Database) -> bool {
        let mut current = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_ref().is_none_or(|db| Arc::as_ptr(db) != failed) {
            return current.is_some();
        }
        let started = std::time::Instant::now();
        // The lock's own: any other holder is a transaction still running on it.
        while current.as_ref().map_or(0, Arc::strong_count) > 1 {
            if started.elapsed() > REOPEN_WAIT {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let shown = self.path.display().to_string();
        // The old instance must be closed (its file lock released) before the new one opens.
        drop(current.take());
        match open_redb(&self.path, &shown) {
            Ok(db) => {
                *current = Some(Arc::new(db));
                tracing::warn!(database = %shown, "reopened the database after an I/O error");
                true
            }
            Err(e) => {
                tracing::error!(database = %shown, error = %e, "cannot reopen the database after an I/O error");
                false
            }
        }
    }

    /// Begins a transaction with `begin`, reopening the database once if redb latched an I/O
    /// error on the instance in use.
    fn begin<T>(
        &self,
        begin: impl Fn(&redb::Database) -> Result<T, redb::TransactionError>,
    ) -> Result<(T, Arc<redb::Database>), MetaError> {
        let db = self.current()?;
        match begin(&db) {
            Err(redb::TransactionError::Storage(redb::StorageError::PreviousIo)) => {
                let failed = Arc::as_ptr(&db);
                drop(db);
                if !self.reopen(failed) {
                    return Err(MetaError::Unavailable(self.path.display().to_string()));
                }
                let db = self.current()?;
                let txn = begin(&db)?;
                Ok((txn, db))
            }
            other => Ok((other?, db)),
        }
    }

    pub fn read(&self) -> Result<ReadTxn, MetaError> {
        let (txn, db) = self.begin(redb::ReadableDatabase::begin_read)?;
        Ok(ReadTxn { txn, _db: db })
    }

    pub fn write(&self) -> Result<WriteTxn, MetaError> {
        let (txn, db) = self.begin(redb::Database::begin_write)?;
        Ok(WriteTxn { txn, _db: db })
    }
}

/// The records that could be read out of a damaged database file (`stratad --salvage`).
#[derive(Debug, Default)]
pub struct Salvaged {
    pub layers: Vec<LayerRecord>,
    pub images: Vec<ImageRecord>,
    pub containers: Vec<ContainerRecord>,
    pub volumes: Vec<VolumeRecord>,
    /// What could not be read, one line each.
    pub lost: Vec<String>,
}

/// Reads every record it can out of the database at `path`, without writing to it: read-only
/// when the file allows, else from a scratch copy that redb may repair. A table whose pages
/// fail part way keeps the records read before the failure.
/// Records are decoded as the schema version the file records wrote them (schema-1 container
/// records have a mount count); when that version cannot be read, each record is tried as the
/// current schema, then as schema 1.
/// `_lock` is the file's, held by the caller. Fails only with [`MetaError::Locked`] (redb's
/// own lock says the file is open elsewhere) and [`MetaError::NewerSchema`] (a newer strata
/// wrote it: salvage with that one).
pub fn salvage_records(path: &Path, _lock: &DbLock, scratch: &Path) -> Result<Salvaged, MetaError> {
    let mut out = Salvaged::default();
    let read_only = redb::Builder::new().open_read_only(path);
    if let Err(redb::DatabaseError::DatabaseAlreadyOpen) = read_only {
        return Err(MetaError::Locked(path.display().to_string()));
    }
    let txn = match read_only {
        Ok(db) => db.begin_read().map_err(|e| e.to_string()),
        Err(ro) => std::fs::copy(path, scratch)
            .map_err(|e| format!("{ro}; copying it to {}: {e}", scratch.display()))
            .and_then(|_| {
                redb::Database::open(scratch).map_err(|e| format!("{ro}; opened read-write: {e}"))
            })
            .and_then(|db| db.begin_read().map_err(|e| e.to_string())),
    };
    let txn = match txn {
        Ok(txn) => txn,
        Err(e) => {
            out.lost
                .push(format!("the file cannot be opened at all: {e}"));
            return Ok(out);
        }
    };
    let version = match schema::stored_version(&txn) {
        Ok(found) if found > SCHEMA_VERSION => {
            return Err(MetaError::NewerSchema {
                path: path.display().to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(found) => Some(found),
        Err(e) => {
            out.lost.push(format!(
                "the schema version cannot be read ({e}): decoding each record as either schema"
            ));
            None
        }
    };
    let hex = |k: &[u8; 32]| hex::encode(k);
    salvage_table(
        &txn,
        LAYERS,
        "layers",
        hex,
        codec::decode,
        &mut out.layers,
        &mut out.lost,
    );
    salvage_table(
        &txn,
        IMAGES,
        "images",
        hex,
        codec::decode,
        &mut out.images,
        &mut out.lost,
    );
    let container = |bytes: &[u8]| match version {
        Some(1) => schema::decode_container_v1(bytes),
        Some(_) => codec::decode(bytes),
        None => codec::decode(bytes).or_else(|e| schema::decode_container_v1(bytes).map_err(|_| e)),
    };
    salvage_table(
        &txn,
        CONTAINERS,
        "containers",
        hex,
        container,
        &mut out.containers,
        &mut out.lost,
    );
    salvage_table(
        &txn,
        VOLUMES,
        "volumes",
        |k: &str| k.to_owned(),
        codec::decode,
        &mut out.volumes,
        &mut out.lost,
    );
    Ok(out)
}

fn salvage_table<K, T>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<K, &[u8]>,
    name: &'static str,
    show_key: impl Fn(K::SelfType<'_>) -> String,
    decode: impl Fn(&[u8]) -> Result<T, codec::CodecError>,
    into: &mut Vec<T>,
    lost: &mut Vec<String>,
) where
    K: redb::Key + 'static,
{
    // redb can panic on a damaged page; what was read before it is kept.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let table = txn.open_table(def).map_err(|e| e.to_string())?;
        decode_each(&table, show_key, decode, |decoded| match decoded {
            Ok(record) => into.push(record),
            Err((key, e)) => lost.push(format!("{name} record {key}: {e}")),
        })
        .map_err(|e| e.to_string())
    }));
    let stopped = match read {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(_) => "redb panicked on a damaged page".to_owned(),
    };
    lost.push(format!(
        "{name}: stopped after {} record(s): {stopped}",
        into.len()
    ));
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

/// A record whose bytes do not decode (for `fsck`, which reports them instead of stopping).
#[derive(Debug)]
pub struct CorruptRecord {
    pub table: &'static str,
    /// The record's key: hex for digests and ids, the name for volumes.
    pub key: String,
    pub error: CodecError,
}

/// Every record of a table: the ones that decode, and the ones that do not.
#[derive(Debug)]
pub struct Scan<T> {
    pub records: Vec<T>,
    pub corrupt: Vec<CorruptRecord>,
}

fn scan_table<T, K>(
    table: &impl ReadableTable<K, &'static [u8]>,
    name: &'static str,
    show_key: impl Fn(K::SelfType<'_>) -> String,
) -> Result<Scan<T>, MetaError>
where
    T: serde::de::DeserializeOwned,
    K: redb::Key + 'static,
{
    let mut scan = Scan {
        records: Vec::new(),
        corrupt: Vec::new(),
    };
    decode_each(table, show_key, codec::decode, |decoded| match decoded {
        Ok(record) => scan.records.push(record),
        Err((key, error)) => scan.corrupt.push(CorruptRecord {
            table: name,
            key,
            error,
        }),
    })?;
    Ok(scan)
}

/// Decodes every record of `table` in key order and hands each to `sink`: the record, or its
/// key (as `show_key` writes it) with why it does not decode. Stops at the first storage error.
fn decode_each<K, T>(
    table: &impl ReadableTable<K, &'static [u8]>,
    show_key: impl Fn(K::SelfType<'_>) -> String,
    decode: impl Fn(&[u8]) -> Result<T, CodecError>,
    mut sink: impl FnMut(Result<T, (String, CodecError)>),
) -> Result<(), redb::StorageError>
where
    K: redb::Key + 'static,
{
    for item in table.iter()? {
        let (k, v) = item?;
        sink(decode(v.value()).map_err(|e| (show_key(k.value()), e)));
    }
    Ok(())
}

/// A consistent snapshot.
pub struct ReadTxn {
    txn: redb::ReadTransaction,
    _db: Arc<redb::Database>,
}

/// All changes in one transaction become durable together at [`WriteTxn::commit`]; dropping
/// it without committing discards them.
pub struct WriteTxn {
    txn: redb::WriteTransaction,
    _db: Arc<redb::Database>,
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

/// For `fsck`: every record, decodable or not, and the raw index tables.
impl WriteTxn {
    pub fn scan_layers(&self) -> Result<Scan<LayerRecord>, MetaError> {
        scan_table(&self.txn.open_table(LAYERS)?, "layers", |k: &[u8; 32]| {
            hex::encode(k)
        })
    }
    pub fn scan_images(&self) -> Result<Scan<ImageRecord>, MetaError> {
        scan_table(&self.txn.open_table(IMAGES)?, "images", |k: &[u8; 32]| {
            hex::encode(k)
        })
    }
    pub fn scan_containers(&self) -> Result<Scan<ContainerRecord>, MetaError> {
        scan_table(
            &self.txn.open_table(CONTAINERS)?,
            "containers",
            |k: &[u8; 32]| hex::encode(k),
        )
    }
    pub fn scan_volumes(&self) -> Result<Scan<VolumeRecord>, MetaError> {
        scan_table(&self.txn.open_table(VOLUMES)?, "volumes", |k: &str| {
            k.to_owned()
        })
    }
    /// `TAGS`: tag -> image id.
    pub fn tag_index(&self) -> Result<Vec<(String, ImageId)>, MetaError> {
        let mut out = Vec::new();
        for item in self.txn.open_table(TAGS)?.iter()? {
            let (k, v) = item?;
            out.push((
                k.value().to_owned(),
                ImageId(Digest::from_bytes(*v.value())),
            ));
        }
        Ok(out)
    }
    /// Removes a `TAGS` entry by its stored text (which may not parse as a reference).
    pub fn delete_tag_entry(&self, tag: &str) -> Result<(), MetaError> {
        self.txn.open_table(TAGS)?.remove(tag)?;
        Ok(())
    }
    /// `CONTAINER_NAMES`: name -> container id.
    pub fn container_name_index(&self) -> Result<Vec<(String, CacheId)>, MetaError> {
        let mut out = Vec::new();
        for item in self.txn.open_table(CONTAINER_NAMES)?.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_owned(), CacheId::from_bytes(*v.value())));
        }
        Ok(out)
    }
    pub fn delete_container_name(&self, name: &str) -> Result<(), MetaError> {
        self.txn.open_table(CONTAINER_NAMES)?.remove(name)?;
        Ok(())
    }
    /// `BLOB_KEYS`: compressed blob digest -> `DiffID`.
    pub fn blob_key_index(&self) -> Result<Vec<(Digest, DiffId)>, MetaError> {
        let mut out = Vec::new();
        for item in self.txn.open_table(BLOB_KEYS)?.iter()? {
            let (k, v) = item?;
            out.push((
                Digest::from_bytes(*k.value()),
                DiffId(Digest::from_bytes(*v.value())),
            ));
        }
        Ok(out)
    }
    pub fn delete_blob_key(&self, key: &Digest) -> Result<(), MetaError> {
        self.txn.open_table(BLOB_KEYS)?.remove(key.as_bytes())?;
        Ok(())
    }
}
