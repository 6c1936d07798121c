//! `container commit`: the writable layer becomes a new image layer on the container's
//! chain. The upper dir is exported as a layer tar (whiteouts and opaque directories in their
//! tar form) and that stream is extracted into staging in the same pass, which computes the
//! `DiffID` and drops overlay's private xattrs; then the new image is recorded exactly as an
//! import would record it, so parent layers are shared, not copied.

use serde_json::{Value, json};

use super::resolve_container;
use crate::archive::{self, ArchiveImage, ImageConfig, StagedLayer};
use crate::error::{Error, ImportError};
use crate::ids::{CacheId, Digest, ImageId, ImageRef};
use crate::image::{ImportedImage, StagingDir};
use crate::meta::Reads;
use crate::store::{Store, now};

/// `2024-01-02T03:04:05Z` for seconds since the epoch (Howard Hinnant's `civil_from_days`).
pub(crate) fn rfc3339(secs: u64) -> String {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Store {
    /// Commits the container's changes as a new image tagged `tag`. The container keeps
    /// running and mounted. On error nothing is recorded and the staged layer is removed.
    pub fn commit_container(
        &self,
        reference: &str,
        tag: Option<&ImageRef>,
    ) -> Result<ImportedImage, Error> {
        let (c, image) = {
            let r = self.db.read()?;
            let c = resolve_container(&r, reference)?;
            let image = r.image(&c.image)?.ok_or_else(|| Error::NotFound {
                kind: "image",
                name: c.image.to_string(),
            })?;
            (c, image)
        };
        let staging = StagingDir(self.tmp_dir().join(format!("commit-{}", CacheId::random())));
        let layer_dir = staging.0.join("layer");
        std::fs::create_dir_all(&layer_dir).map_err(Error::io("creating", &layer_dir))?;
        let upper = self.driver.upper_dir(c.id);
        let (reader, writer) = std::io::pipe().map_err(Error::io("creating a pipe for", &upper))?;
        let stats = std::thread::scope(|s| {
            let exporter = s.spawn(|| archive::export_layer(&upper, writer));
            let extracted = archive::extract_layer(reader, &layer_dir);
            let exported = exporter.join().unwrap_or_else(|_| {
                Err(archive::ExportError::Unsupported {
                    path: upper.clone(),
                    why: "exporter thread panicked",
                })
            });
            // When the extraction stops (a full disk, say), the export fails too, with a broken
            // pipe: the extraction's error is the one that says why. When the export stops (a
            // file it cannot read), the extraction sees a cut-off tar: the export's error, which
            // names the file, is the one.
            let extraction_error = |source| {
                Error::from(ImportError::from(archive::ArchiveError::Layer {
                    entry: format!("container {}", c.name),
                    source,
                }))
            };
            match (extracted, exported) {
                (Ok(stats), Ok(())) => Ok(stats),
                (Err(e), Ok(())) => Err(extraction_error(e)),
                (Err(e), Err(archive::ExportError::Write { source, .. }))
                    if source.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    Err(extraction_error(e))
                }
                (_, Err(e)) => Err(e.into()),
            }
        })?;

        let mut config: Value =
            serde_json::from_slice(&image.config_json).unwrap_or_else(|_| json!({}));
        let created = rfc3339(now());
        let cfg = &c.config;
        config["created"] = json!(created);
        config["container"] = json!(c.id.hex());
        let runtime = config.get("config").cloned().unwrap_or_else(|| json!({}));
        let mut runtime = if runtime.is_object() {
            runtime
        } else {
            json!({})
        };
        runtime["Env"] = json!(cfg.env);
        runtime["Entrypoint"] = json!(cfg.entrypoint);
        runtime["Cmd"] = json!(cfg.cmd);
        runtime["WorkingDir"] = json!(cfg.working_dir.clone().unwrap_or_default());
        runtime["User"] = json!(cfg.user.clone().unwrap_or_default());
        config["config"] = runtime;
        let mut diff_ids: Vec<String> = image.diff_ids.iter().map(ToString::to_string).collect();
        diff_ids.push(stats.diff_id.to_string());
        config["rootfs"] = json!({ "type": "layers", "diff_ids": diff_ids });
        let mut history = config
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        history.push(json!({ "created": created, "created_by": format!("strata container commit {}", c.name) }));
        config["history"] = Value::Array(history);
        let config_json = serde_json::to_vec(&config)
            .map_err(|e| Error::Invalid(format!("encoding image config: {e}")))?;
        let parsed = ImageConfig::from_json(&config_json)
            .map_err(|e| Error::Invalid(format!("image config: {e}")))?;

        let mut all_diffs = image.diff_ids.clone();
        all_diffs.push(stats.diff_id);
        let new_image = ArchiveImage {
            id: ImageId(Digest::of(&config_json)),
            config_json,
            config: parsed,
            repo_tags: tag.into_iter().cloned().collect(),
            diff_ids: all_diffs,
        };
        let staged = StagedLayer {
            diff_id: stats.diff_id,
            dir: Some(layer_dir),
            stats: Some(stats),
            keys: Vec::new(),
        };
        let mut stored = self.store_staged(&[new_image], &[staged], &staging.0)?;
        tracing::info!(container = %c.name, image = ?stored.first().map(|i| i.id), "committed container");
        stored
            .pop()
            .ok_or_else(|| Error::Invalid("commit stored no image".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_formats_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_208_000), "2024-02-29T12:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
