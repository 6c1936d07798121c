//! `container create`: a record, reference counts on the image and volumes, and the writable
//! directories, all or nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ContainerName;
use crate::error::Error;
use crate::ids::CacheId;
use crate::meta::{
    ContainerConfig, ContainerMount, ContainerMountKind, ContainerRecord, ImageConfigRecord, Reads,
    WriteTxn,
};
use crate::mountspec::{MountKind, MountRequest, validate_set};
use crate::store::{Store, now};
use crate::volume::remove_dirs;

/// What `container create` was asked for. Config fields override the image's.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub name: Option<String>,
    pub image: String,
    pub mounts: Vec<MountRequest>,
    /// `KEY=VALUE` entries added to (or replacing) the image's.
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

fn merged_env(image: &[String], overrides: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_owned();
    let mut out: Vec<String> = image
        .iter()
        .filter(|e| !overrides.iter().any(|o| key(o) == key(e)))
        .cloned()
        .collect();
    out.extend(overrides.iter().cloned());
    out
}

impl Store {
    /// Creates a container from `opts.image`. Invalid names, images or mount specs are refused
    /// before anything is written; on any error nothing remains (no record, no directories,
    /// no volumes created for it).
    pub fn create_container(&self, opts: &CreateOptions) -> Result<super::ContainerSummary, Error> {
        let id = CacheId::random();
        let name = match &opts.name {
            Some(n) => ContainerName::parse(n)?,
            None => ContainerName::parse(&format!("strata_{}", &id.hex()[..12]))?,
        };
        let resolve = |p: &str| std::fs::canonicalize(p).ok();
        validate_set(&opts.mounts, &self.root, &resolve)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        // `-v /host/path:/target` creates a missing host directory, as Docker does.
        for m in opts.mounts.iter().filter(|m| m.kind == MountKind::Bind) {
            if let Some(src) = m.source.as_deref().filter(|s| !Path::new(s).exists()) {
                std::fs::create_dir_all(src).map_err(Error::io("creating bind source", src))?;
            }
        }

        let txn = self.db.write()?;
        if txn.container_by_name(name.as_str())?.is_some() {
            return Err(Error::InUse(format!(
                "container name {:?} is already in use",
                name.as_str()
            )));
        }
        let mut image = super::super::image::resolve_image_in(&txn, &opts.image)?;
        let mut made: Vec<PathBuf> = Vec::new();
        let mut made_rw = false;
        let built = (|| {
            let mounts = self.attach_mounts(&txn, &opts.mounts, &mut made)?;
            let mut chain = Vec::with_capacity(image.chain.len());
            for c in &image.chain {
                let l = txn.layer(c)?.ok_or_else(|| Error::NotFound {
                    kind: "layer",
                    name: c.to_string(),
                })?;
                chain.push((l.cache_id, l.short_link));
            }
            self.driver.create_rw(id, &chain)?;
            made_rw = true;
            let config = container_config(&image.config, opts);
            let record = ContainerRecord {
                id,
                name: name.as_str().to_owned(),
                image: image.id,
                chain: image.chain.clone(),
                config,
                mounts,
                created: now(),
                rw_size: Some((0, now())),
            };
            image.container_users += 1;
            txn.put_image(&image)?;
            txn.put_container(&record)?;
            Ok::<_, Error>(record)
        })();
        let committed = built.and_then(|rec| {
            txn.commit()?;
            Ok(rec)
        });
        match committed {
            Ok(rec) => Ok(self.summary_with_image(
                rec,
                image.size,
                image.tags.first().map(ToString::to_string),
            )),
            Err(e) => {
                remove_dirs(&made);
                let cleanup = if made_rw {
                    self.driver.remove_layer(id, "")
                } else {
                    Ok(())
                };
                if let Err(cleanup) = cleanup {
                    tracing::warn!(container = %id, error = %cleanup, "could not remove directories of a failed create");
                }
                Err(e)
            }
        }
    }
}

impl Store {
    /// Turns validated mount requests into the container's mounts, creating missing volumes
    /// (recorded in `made` for cleanup) and counting this container as their user.
    fn attach_mounts(
        &self,
        txn: &WriteTxn,
        requests: &[MountRequest],
        made: &mut Vec<PathBuf>,
    ) -> Result<Vec<ContainerMount>, Error> {
        let mut mounts = Vec::with_capacity(requests.len());
        for m in requests {
            let (kind, source) = match m.kind {
                MountKind::Bind => (
                    ContainerMountKind::Bind,
                    m.source.clone().unwrap_or_default(),
                ),
                MountKind::Tmpfs => (ContainerMountKind::Tmpfs, String::new()),
                MountKind::Volume => {
                    let mut vol =
                        self.ensure_volume(txn, m.source.as_deref(), BTreeMap::new(), made)?;
                    vol.users += 1;
                    txn.put_volume(&vol)?;
                    (ContainerMountKind::Volume, vol.name)
                }
            };
            mounts.push(ContainerMount {
                kind,
                source,
                target: m.target.clone(),
                readonly: m.readonly,
            });
        }
        Ok(mounts)
    }
}

/// The image's config with the create options' overrides.
fn container_config(image: &ImageConfigRecord, opts: &CreateOptions) -> ContainerConfig {
    let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    ContainerConfig {
        env: merged_env(&image.env, &opts.env),
        entrypoint: opts.entrypoint.clone().or_else(|| image.entrypoint.clone()),
        cmd: opts.cmd.clone().or_else(|| image.cmd.clone()),
        working_dir: non_empty(
            opts.working_dir
                .clone()
                .or_else(|| image.working_dir.clone()),
        ),
        user: non_empty(opts.user.clone().or_else(|| image.user.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::merged_env;

    #[test]
    fn env_overrides_replace_by_key_and_append_new_keys() {
        let image = vec!["PATH=/bin".to_owned(), "A=1".to_owned()];
        let got = merged_env(&image, &["A=2".to_owned(), "B=3".to_owned()]);
        assert_eq!(got, vec!["PATH=/bin", "A=2", "B=3"]);
    }
}
