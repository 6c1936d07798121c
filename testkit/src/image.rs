//! Image archives in the three layouts Strata imports: `docker save` of dockerd 20.10 (legacy),
//! `docker save` of Docker 25 and later (OCI layout plus `manifest.json`), and a plain OCI image
//! layout with uncompressed, gzip or zstd layers.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// Media types from the OCI image spec (`media-types.md`).
pub mod media_type {
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
}

/// How layer blobs are compressed in an OCI layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Compression::None => media_type::LAYER,
            Compression::Gzip => media_type::LAYER_GZIP,
            Compression::Zstd => media_type::LAYER_ZSTD,
        }
    }

    /// Compresses `data` deterministically (gzip header without mtime, zstd level 3).
    pub fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder
                    .write_all(data)
                    .expect("writing to a Vec cannot fail");
                encoder.finish().expect("writing to a Vec cannot fail")
            }
            Compression::Zstd => zstd::encode_all(data, 3).expect("writing to a Vec cannot fail"),
        }
    }
}

/// `"sha256:<hex>"` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `ChainIDs` of a stack of `DiffIDs` (OCI image spec, "Layer ChainID"):
/// `ChainID(L0) = DiffID(L0)`, `ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let chain = match out.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(chain);
    }
    out
}

/// The fully qualified reference Docker and containerd use for a tag:
/// `alpine` -> `docker.io/library/alpine:latest`, `me/app:1` -> `docker.io/me/app:1`,
/// `registry.local:5000/app:1` unchanged.
pub fn normalize_reference(tag: &str) -> String {
    let (name, tag_part) = split_tag(tag);
    let first = name.split('/').next().unwrap_or_default();
    let has_domain =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let name = if has_domain {
        name.to_owned()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    format!("{name}:{tag_part}")
}

/// Splits `name[:tag]` (a `:` inside the registry host's port does not count) and defaults the
/// tag to `latest`.
fn split_tag(reference: &str) -> (&str, &str) {
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(i) => (
            &reference[..last_slash + i],
            &reference[last_slash + i + 1..],
        ),
        None => (reference, "latest"),
    }
}

/// An image: layer tars plus the fields of its config, written out in any of the archive
/// layouts Strata imports.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    /// Uncompressed layer tars, bottom first.
    pub layers: Vec<Vec<u8>>,
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: String,
    pub user: String,
    pub labels: BTreeMap<String, String>,
    pub os: String,
    pub architecture: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Tags such as `strata-test/rich:latest`.
    pub repo_tags: Vec<String>,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self {
            layers: Vec::new(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cmd: Some(vec!["/bin/sh".into()]),
            entrypoint: None,
            working_dir: String::new(),
            user: String::new(),
            labels: BTreeMap::new(),
            os: "linux".into(),
            architecture: "amd64".into(),
            created: "2023-11-14T22:13:20Z".into(),
            repo_tags: Vec::new(),
        }
    }
}

/// A file of an archive: name and bytes, written in this order.
type Member = (String, Vec<u8>);

impl ImageBuilder {
    /// An image with the given layers and tags and default config (PATH env, `/bin/sh`).
    pub fn new(layers: Vec<Vec<u8>>, repo_tags: &[&str]) -> Self {
        Self {
            layers,
            repo_tags: repo_tags.iter().map(|&t| t.to_owned()).collect(),
            ..Self::default()
        }
    }

    /// `sha256:` `DiffIDs` of the layers (digests of the uncompressed tars).
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| sha256_digest(l)).collect()
    }

    /// `ChainIDs` of the layers.
    pub fn chain_ids(&self) -> Vec<String> {
        chain_ids(&self.diff_ids())
    }

    /// The image config JSON (OCI `application/vnd.oci.image.config.v1+json`, which Docker also
    /// uses) for these layers.
    pub fn config_json(&self) -> Vec<u8> {
        self.config_json_for(&self.diff_ids())
    }

    /// The config JSON for layers with the given `DiffIDs`; for callers that stream large layers
    /// from files instead of holding them in [`ImageBuilder::layers`].
    pub fn config_json_for(&self, diff_ids: &[String]) -> Vec<u8> {
        let mut config = serde_json::Map::new();
        config.insert("Env".into(), json!(self.env));
        if let Some(cmd) = &self.cmd {
            config.insert("Cmd".into(), json!(cmd));
        }
        if let Some(entrypoint) = &self.entrypoint {
            config.insert("Entrypoint".into(), json!(entrypoint));
        }
        if !self.working_dir.is_empty() {
            config.insert("WorkingDir".into(), json!(self.working_dir));
        }
        if !self.user.is_empty() {
            config.insert("User".into(), json!(self.user));
        }
        if !self.labels.is_empty() {
            config.insert("Labels".into(), json!(self.labels));
        }
        let history: Vec<Value> = (0..diff_ids.len())
            .map(|i| {
                json!({
                    "created": self.created,
                    "created_by": format!("strata-testkit layer {i}"),
                })
            })
            .collect();
        let value = json!({
            "architecture": self.architecture,
            "os": self.os,
            "created": self.created,
            "config": config,
            "history": history,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        serde_json::to_vec(&value).expect("a JSON value always serializes")
    }

    /// `sha256:` digest of [`config_json`](Self::config_json), which is also the image ID.
    pub fn config_digest(&self) -> String {
        sha256_digest(&self.config_json())
    }

    /// The archive `docker save` of dockerd 20.10 writes: per layer a directory named by a
    /// v1-compatible ID holding `VERSION`, `json` and `layer.tar`; `<config hex>.json`;
    /// `manifest.json`; `repositories`.
    pub fn docker_save_legacy(&self) -> Vec<u8> {
        let diff_ids = self.diff_ids();
        let members = self.legacy_members(&diff_ids, |i| LayerSource::Bytes(&self.layers[i]));
        write_members(Vec::new(), members).expect("writing to a Vec cannot fail")
    }

    /// Writes the same archive as [`docker_save_legacy`](Self::docker_save_legacy) to `out`,
    /// taking the layers from tar files on disk instead of [`ImageBuilder::layers`] (which is
    /// ignored), so gigabyte images need not be held in memory.
    pub fn write_docker_save_legacy_from_files(
        &self,
        layer_tars: &[&Path],
        out: impl Write,
    ) -> Result<(), Error> {
        let mut diff_ids = Vec::with_capacity(layer_tars.len());
        for path in layer_tars {
            diff_ids.push(sha256_file(path)?);
        }
        let members = self.legacy_members(&diff_ids, |i| LayerSource::File(layer_tars[i]));
        write_members(out, members)
            .map(drop)
            .map_err(|source| Error::Io {
                context: "writing docker-save archive".into(),
                source,
            })
    }

    fn legacy_members<'a>(
        &self,
        diff_ids: &[String],
        layer: impl Fn(usize) -> LayerSource<'a>,
    ) -> Vec<(String, LayerSource<'a>)> {
        let config = self.config_json_for(diff_ids);
        let config_hex = hex_of(&sha256_digest(&config)).to_owned();
        // Docker derives v1 IDs from the v1 config, chain and parent; any stable 64-hex name
        // per layer is accepted by `docker load`, which reads only manifest.json.
        let mut v1_ids: Vec<String> = Vec::new();
        let mut members = Vec::new();
        for (i, chain) in chain_ids(diff_ids).iter().enumerate() {
            let parent = v1_ids.last().cloned();
            let v1_id = hex_of(&sha256_digest(
                format!("{chain} {}", parent.as_deref().unwrap_or("")).as_bytes(),
            ))
            .to_owned();
            let mut v1_json = json!({
                "id": v1_id,
                "created": self.created,
                "container_config": {"Cmd": null},
                "os": self.os,
            });
            if let Some(parent) = &parent {
                v1_json["parent"] = json!(parent);
            }
            if i + 1 == diff_ids.len() {
                v1_json["architecture"] = json!(self.architecture);
                v1_json["config"] = serde_json::from_slice::<Value>(&config)
                    .expect("config_json is valid JSON")["config"]
                    .clone();
            }
            members.push((format!("{v1_id}/"), LayerSource::Dir));
            members.push((
                format!("{v1_id}/VERSION"),
                LayerSource::Owned(b"1.0".to_vec()),
            ));
            members.push((
                format!("{v1_id}/json"),
                LayerSource::Owned(json_bytes(&v1_json)),
            ));
            members.push((format!("{v1_id}/layer.tar"), layer(i)));
            v1_ids.push(v1_id);
        }
        let manifest = json!([{
            "Config": format!("{config_hex}.json"),
            "RepoTags": self.repo_tags,
            "Layers": v1_ids.iter().map(|id| format!("{id}/layer.tar")).collect::<Vec<_>>(),
        }]);
        members.push((format!("{config_hex}.json"), LayerSource::Owned(config)));
        members.push((
            "manifest.json".into(),
            LayerSource::Owned(json_bytes(&manifest)),
        ));
        if let Some(top) = v1_ids.last() {
            members.push((
                "repositories".into(),
                LayerSource::Owned(json_bytes(&self.repositories_json(top))),
            ));
        }
        members
    }

    /// `{"name": {"tag": "<top id>"}}`, the pre-manifest index `docker save` still writes.
    fn repositories_json(&self, top: &str) -> Value {
        let mut repos = serde_json::Map::new();
        for tag in &self.repo_tags {
            let (name, tag) = split_tag(tag);
            let entry = repos
                .entry(name.to_owned())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            entry[tag] = json!(top);
        }
        Value::Object(repos)
    }

    /// The archive `docker save` of Docker 25 and later writes: an OCI image layout
    /// (`oci-layout`, `index.json`, `blobs/sha256/...` with uncompressed layers) plus a
    /// `manifest.json` whose `Config` and `Layers` are `blobs/sha256/<hex>` paths.
    pub fn docker_save_oci(&self) -> Vec<u8> {
        let layout = self.oci_members(Compression::None);
        let mut members = layout.blobs;
        let manifest = json!([{
            "Config": blob_path(&layout.config_digest),
            "RepoTags": self.repo_tags,
            "Layers": layout.layer_digests.iter().map(|d| blob_path(d)).collect::<Vec<_>>(),
        }]);
        members.push(("index.json".into(), layout.index));
        members.push(("manifest.json".into(), json_bytes(&manifest)));
        members.push(("oci-layout".into(), oci_layout_file()));
        write_owned(members)
    }

    /// An OCI image layout: `oci-layout`, `index.json` (one manifest per tag, annotated with
    /// `org.opencontainers.image.ref.name` = the tag and `io.containerd.image.name` = the full
    /// reference), and the manifest, config and layer blobs.
    pub fn oci_layout(&self, compression: Compression) -> Vec<u8> {
        let layout = self.oci_members(compression);
        let mut members = vec![("oci-layout".to_owned(), oci_layout_file())];
        members.push(("index.json".into(), layout.index));
        members.extend(layout.blobs);
        write_owned(members)
    }

    fn oci_members(&self, compression: Compression) -> OciLayout {
        let config = self.config_json();
        let config_digest = sha256_digest(&config);
        let mut blobs: Vec<Member> = Vec::new();
        let mut layer_descriptors = Vec::new();
        let mut layer_digests = Vec::new();
        for layer in &self.layers {
            let blob = compression.compress(layer);
            let digest = sha256_digest(&blob);
            layer_descriptors.push(json!({
                "mediaType": compression.layer_media_type(),
                "digest": digest,
                "size": blob.len(),
            }));
            if !blobs.iter().any(|(name, _)| *name == blob_path(&digest)) {
                blobs.push((blob_path(&digest), blob));
            }
            layer_digests.push(digest);
        }
        let manifest = json_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::MANIFEST,
            "config": {
                "mediaType": media_type::CONFIG,
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layer_descriptors,
        }));
        let manifest_digest = sha256_digest(&manifest);
        let manifests: Vec<Value> = if self.repo_tags.is_empty() {
            vec![descriptor(&manifest_digest, manifest.len(), None)]
        } else {
            self.repo_tags
                .iter()
                .map(|tag| {
                    let full = normalize_reference(tag);
                    // Like containerd's exporter and Docker 25: ref.name is the bare tag.
                    let ref_name = split_tag(&full).1;
                    descriptor(&manifest_digest, manifest.len(), Some((&full, ref_name)))
                })
                .collect()
        };
        let index = json_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::INDEX,
            "manifests": manifests,
        }));
        blobs.push((blob_path(&manifest_digest), manifest));
        blobs.push((blob_path(&config_digest), config));
        OciLayout {
            index,
            blobs,
            config_digest,
            layer_digests,
        }
    }
}

struct OciLayout {
    index: Vec<u8>,
    blobs: Vec<Member>,
    config_digest: String,
    layer_digests: Vec<String>,
}

fn descriptor(digest: &str, size: usize, names: Option<(&str, &str)>) -> Value {
    let mut d = json!({
        "mediaType": media_type::MANIFEST,
        "digest": digest,
        "size": size,
    });
    if let Some((full, ref_name)) = names {
        d["annotations"] = json!({
            "io.containerd.image.name": full,
            "org.opencontainers.image.ref.name": ref_name,
        });
    }
    d
}

fn oci_layout_file() -> Vec<u8> {
    json_bytes(&json!({"imageLayoutVersion": "1.0.0"}))
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", hex_of(digest))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a JSON value always serializes")
}

enum LayerSource<'a> {
    Dir,
    Bytes(&'a [u8]),
    Owned(Vec<u8>),
    File(&'a Path),
}

fn write_owned(members: Vec<Member>) -> Vec<u8> {
    let mut with_dirs: Vec<(String, LayerSource<'_>)> = Vec::new();
    let mut dirs_done = std::collections::BTreeSet::new();
    for (name, data) in members {
        // Parent directories first, as `docker save` writes them.
        let mut prefix = String::new();
        for part in name.split('/').take(name.split('/').count() - 1) {
            prefix.push_str(part);
            prefix.push('/');
            if dirs_done.insert(prefix.clone()) {
                with_dirs.push((prefix.clone(), LayerSource::Dir));
            }
        }
        with_dirs.push((name, LayerSource::Owned(data)));
    }
    write_members(Vec::new(), with_dirs).expect("writing to a Vec cannot fail")
}

fn write_members<W: Write>(out: W, members: Vec<(String, LayerSource<'_>)>) -> std::io::Result<W> {
    let mut builder = tar::Builder::new(out);
    for (name, source) in members {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(crate::layer::DEFAULT_MTIME);
        header.set_uid(0);
        header.set_gid(0);
        match source {
            LayerSource::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, &name, std::io::empty())?;
            }
            LayerSource::Bytes(data) => append_file(&mut builder, &mut header, &name, data)?,
            LayerSource::Owned(data) => append_file(&mut builder, &mut header, &name, &data)?,
            LayerSource::File(path) => {
                let file = std::fs::File::open(path)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(file.metadata()?.len());
                builder.append_data(&mut header, &name, file)?;
            }
        }
    }
    builder.into_inner()
}

fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    header: &mut tar::Header,
    name: &str,
    data: &[u8],
) -> std::io::Result<()> {
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    builder.append_data(header, name, data)
}

/// `sha256:` digest of a file's content.
pub fn sha256_file(path: &Path) -> Result<String, Error> {
    let io = |source| Error::Io {
        context: format!("hashing {}", path.display()),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LayerBuilder;

    fn members(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for entry in tar::Archive::new(archive).entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let name = entry.path().expect("path").to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read");
            out.insert(name, data);
        }
        out
    }

    fn small_image() -> ImageBuilder {
        let mut l0 = LayerBuilder::new();
        l0.dir("etc", 0o755).file("etc/a", b"a", 0o644);
        let mut l1 = LayerBuilder::new();
        l1.dir("etc", 0o755).whiteout("etc/a");
        ImageBuilder::new(vec![l0.build(), l1.build()], &["strata-test/small:v1"])
    }

    #[test]
    fn reference_normalization_matches_docker() {
        assert_eq!(
            normalize_reference("alpine"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(normalize_reference("me/app:1"), "docker.io/me/app:1");
        assert_eq!(
            normalize_reference("registry.local:5000/app:1"),
            "registry.local:5000/app:1"
        );
        assert_eq!(normalize_reference("localhost/app"), "localhost/app:latest");
    }

    #[test]
    fn config_carries_diff_ids_of_uncompressed_layers() {
        let image = small_image();
        let config: Value = serde_json::from_slice(&image.config_json()).expect("json");
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(config["rootfs"]["diff_ids"], json!(image.diff_ids()));
        assert_eq!(config["history"].as_array().expect("history").len(), 2);
        assert_eq!(config["config"]["Cmd"], json!(["/bin/sh"]));
        assert_eq!(image.chain_ids()[0], image.diff_ids()[0]);
    }

    #[test]
    fn legacy_save_has_docker_20_10_members() {
        let image = small_image();
        let files = members(&image.docker_save_legacy());
        let manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("json");
        let config_name = manifest[0]["Config"].as_str().expect("config");
        assert_eq!(
            sha256_digest(&files[config_name]),
            format!("sha256:{}", config_name.trim_end_matches(".json"))
        );
        assert_eq!(manifest[0]["RepoTags"], json!(["strata-test/small:v1"]));
        for (i, layer) in manifest[0]["Layers"]
            .as_array()
            .expect("layers")
            .iter()
            .enumerate()
        {
            let layer = layer.as_str().expect("str");
            assert_eq!(files[layer], image.layers[i]);
            let dir = layer.trim_end_matches("layer.tar");
            assert_eq!(files[&format!("{dir}VERSION")], b"1.0");
            assert!(files.contains_key(&format!("{dir}json")));
        }
        let repos: Value = serde_json::from_slice(&files["repositories"]).expect("json");
        assert!(repos["strata-test/small"]["v1"].is_string());
    }

    #[test]
    fn oci_layout_digests_and_media_types_are_consistent() {
        let image = small_image();
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let files = members(&image.oci_layout(compression));
            assert!(files.contains_key("oci-layout"));
            let index: Value = serde_json::from_slice(&files["index.json"]).expect("json");
            let desc = &index["manifests"][0];
            assert_eq!(
                desc["annotations"]["org.opencontainers.image.ref.name"],
                "v1"
            );
            assert_eq!(
                desc["annotations"]["io.containerd.image.name"],
                "docker.io/strata-test/small:v1"
            );
            let blob = |digest: &Value| {
                let digest = digest.as_str().expect("digest");
                let data = &files[&blob_path(digest)];
                assert_eq!(sha256_digest(data), digest);
                data.clone()
            };
            let manifest: Value = serde_json::from_slice(&blob(&desc["digest"])).expect("json");
            let config: Value =
                serde_json::from_slice(&blob(&manifest["config"]["digest"])).expect("json");
            for (i, layer) in manifest["layers"]
                .as_array()
                .expect("layers")
                .iter()
                .enumerate()
            {
                assert_eq!(layer["mediaType"], compression.layer_media_type());
                let compressed = blob(&layer["digest"]);
                assert_eq!(layer["size"], compressed.len());
                let plain = match compression {
                    Compression::None => compressed,
                    Compression::Gzip => {
                        let mut out = Vec::new();
                        flate2::read::GzDecoder::new(compressed.as_slice())
                            .read_to_end(&mut out)
                            .expect("gunzip");
                        out
                    }
                    Compression::Zstd => zstd::decode_all(compressed.as_slice()).expect("zstd"),
                };
                assert_eq!(config["rootfs"]["diff_ids"][i], sha256_digest(&plain));
            }
        }
    }

    #[test]
    fn docker_oci_save_has_manifest_json_pointing_into_blobs() {
        let image = small_image();
        let files = members(&image.docker_save_oci());
        let manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("json");
        let config = manifest[0]["Config"].as_str().expect("config");
        assert!(config.starts_with("blobs/sha256/"));
        assert_eq!(files[config], image.config_json());
        for (i, layer) in manifest[0]["Layers"]
            .as_array()
            .expect("layers")
            .iter()
            .enumerate()
        {
            assert_eq!(files[layer.as_str().expect("str")], image.layers[i]);
        }
        assert!(files.contains_key("index.json"));
        assert!(files.contains_key("oci-layout"));
    }
}
