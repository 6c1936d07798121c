//! Crash consistency: a seeded random workload through the CLI and API, with `stratad` killed
//! (SIGKILL) at random points, at least 200 times (`STRATA_CRASH_KILLS`, default 200).
//!
//! Guards against: an acknowledged operation lost or damaged by a crash (a record committed
//! without its directory, a directory renamed before its record, a count left behind), and a
//! half-made object becoming visible after restart (a container without its directories, a
//! layer record without files, an image naming a missing layer). After every kill the daemon
//! restarts on the same root, `system fsck` must find nothing at all, every acknowledged
//! operation must be there with its data, and the one operation in flight at the kill must have
//! happened entirely or not at all.
//!
//! The sequence of operations and kill points comes from `STRATA_CRASH_SEED` (printed; set it to
//! replay a run). Kills land after a random delay into an operation, so the exact byte a kill
//! interrupts varies between runs; a failure prints the seed, the iteration and the operation.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic with context, like the tests"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_testkit::{LayerBuilder, Stratad, busybox_image, require_root};

const STRATAD: &str = env!("CARGO_BIN_EXE_stratad");
const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// splitmix64: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ContainerModel {
    id: String,
    image: String,
    volume: Option<String>,
    /// Files written into the container's own layer: path -> content.
    files: BTreeMap<String, String>,
    mounted: bool,
}

/// What the daemon acknowledged, and so must still hold.
#[derive(Debug, Default, Clone)]
struct Model {
    /// Tag -> image id.
    tags: BTreeMap<String, String>,
    containers: BTreeMap<String, ContainerModel>,
    /// Volume -> files written into it.
    volumes: BTreeMap<String, BTreeMap<String, String>>,
}

impl Model {
    fn volume_users(&self, volume: &str) -> usize {
        self.containers
            .values()
            .filter(|c| c.volume.as_deref() == Some(volume))
            .count()
    }

    fn image_in_use(&self, image: &str) -> bool {
        self.containers.values().any(|c| c.image == image)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Import(usize),
    Tag {
        source: String,
        target: String,
    },
    Create {
        name: String,
        image: String,
        volume: Option<String>,
    },
    Mount(String),
    Unmount(String),
    Write {
        container: String,
        path: String,
        content: String,
        in_volume: bool,
    },
    Commit {
        container: String,
        tag: String,
    },
    Remove(String),
    VolumeCreate(String),
    VolumeRemove(String),
    VolumePrune,
    ImageRemove(String),
}

struct Harness {
    daemon: Stratad,
    archives: Vec<(PathBuf, String)>,
    rng: Rng,
    model: Model,
    counter: usize,
    acknowledged: usize,
    in_flight_done: usize,
    in_flight_not_done: usize,
}

/// Runs `strata --json ARGS`; the JSON answer (or `Null`) on success, stderr on failure.
fn cli(daemon: &Stratad, args: &[&str]) -> Result<Value, String> {
    let mut command = daemon.command(STRATA);
    command.arg("--json").args(args);
    let out = command.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

impl Harness {
    fn new(seed: u64) -> Self {
        let daemon = Stratad::start(STRATAD);
        let dir = daemon.root().parent().unwrap().join("archives");
        std::fs::create_dir_all(&dir).unwrap();
        let archives = (0..3)
            .map(|k| {
                let tag = format!("crash/base{k}:latest");
                let mut image = busybox_image(&tag);
                let mut extra = LayerBuilder::new();
                extra.dir("opt", 0o755).file(
                    &format!("opt/variant-{k}"),
                    format!("variant {k}\n").repeat(100 * (k + 1)).as_bytes(),
                    0o644,
                );
                image.layers.push(extra.build());
                let path = dir.join(format!("base{k}.tar"));
                std::fs::write(&path, image.docker_save_legacy()).unwrap();
                (path, tag)
            })
            .collect();
        Self {
            daemon,
            archives,
            rng: Rng(seed),
            model: Model::default(),
            counter: 0,
            acknowledged: 0,
            in_flight_done: 0,
            in_flight_not_done: 0,
        }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    /// A random operation that makes sense for the model (so refusals are not the norm).
    fn choose(&mut self) -> Op {
        let m = self.model.clone();
        let tags: Vec<String> = m.tags.keys().cloned().collect();
        let containers: Vec<String> = m.containers.keys().cloned().collect();
        let mounted: Vec<String> = m
            .containers
            .iter()
            .filter(|(_, c)| c.mounted)
            .map(|(n, _)| n.clone())
            .collect();
        let free_volumes: Vec<String> = m
            .volumes
            .keys()
            .filter(|v| m.volume_users(v) == 0)
            .cloned()
            .collect();
        let removable_tags: Vec<String> = tags
            .iter()
            .filter(|t| !m.image_in_use(&m.tags[*t]))
            .cloned()
            .collect();
        loop {
            let op = match self.rng.below(13) {
                0 | 1 => Op::Import(self.rng.below(self.archives.len())),
                2 => match self.rng.pick(&tags) {
                    Some(source) => Op::Tag {
                        source: source.clone(),
                        target: format!("{}:latest", self.fresh("crash/tag")),
                    },
                    None => continue,
                },
                3 | 4 => {
                    let Some(tag) = self.rng.pick(&tags).cloned() else {
                        continue;
                    };
                    let volume = match self.rng.below(3) {
                        0 => Some(self.fresh("vol")),
                        1 => self
                            .rng
                            .pick(&m.volumes.keys().cloned().collect::<Vec<_>>())
                            .cloned(),
                        _ => None,
                    };
                    Op::Create {
                        name: self.fresh("c"),
                        image: tag,
                        volume,
                    }
                }
                5 => match self.rng.pick(&containers) {
                    Some(c) => Op::Mount(c.clone()),
                    None => continue,
                },
                6 => match self.rng.pick(&mounted) {
                    Some(c) => Op::Unmount(c.clone()),
                    None => continue,
                },
                7 | 8 => {
                    let Some(container) = self.rng.pick(&containers).cloned() else {
                        continue;
                    };
                    let in_volume =
                        m.containers[&container].volume.is_some() && self.rng.below(2) == 0;
                    Op::Write {
                        container,
                        path: self.fresh("file"),
                        content: format!("{:x}", self.rng.next()),
                        in_volume,
                    }
                }
                9 => match self.rng.pick(&containers) {
                    Some(c) => Op::Commit {
                        container: c.clone(),
                        tag: format!("{}:latest", self.fresh("crash/commit")),
                    },
                    None => continue,
                },
                10 => match self.rng.pick(&containers) {
                    Some(c) => Op::Remove(c.clone()),
                    None => continue,
                },
                11 => match self.rng.below(3) {
                    0 => Op::VolumeCreate(self.fresh("vol")),
                    1 => match self.rng.pick(&free_volumes) {
                        Some(v) => Op::VolumeRemove(v.clone()),
                        None => continue,
                    },
                    _ => Op::VolumePrune,
                },
                _ => match self.rng.pick(&removable_tags) {
                    Some(t) => Op::ImageRemove(t.clone()),
                    None => continue,
                },
            };
            return op;
        }
    }

    /// Runs `op`; on success, records what the daemon acknowledged.
    #[expect(clippy::too_many_lines, reason = "one arm per operation")]
    fn run(&mut self, op: &Op) -> Result<(), String> {
        let d = &self.daemon;
        match op {
            Op::Import(k) => {
                let (path, tag) = &self.archives[*k];
                let v = cli(d, &["image", "import", "-q", path.to_str().unwrap()])?;
                let id = str_of(&v[0], "id").to_owned();
                self.model.tags.insert(tag.clone(), id);
            }
            Op::Tag { source, target } => {
                let v = cli(d, &["image", "tag", source, target])?;
                self.model
                    .tags
                    .insert(target.clone(), str_of(&v, "id").to_owned());
            }
            Op::Create {
                name,
                image,
                volume,
            } => {
                let mut args = vec!["container", "create", "--name", name];
                let spec = volume.as_ref().map(|v| format!("{v}:/data"));
                if let Some(spec) = &spec {
                    args.extend(["-v", spec]);
                }
                args.push(image);
                let v = cli(d, &args)?;
                if let Some(volume) = volume {
                    self.model.volumes.entry(volume.clone()).or_default();
                }
                self.model.containers.insert(
                    name.clone(),
                    ContainerModel {
                        id: str_of(&v, "id").to_owned(),
                        image: str_of(&v, "image").to_owned(),
                        volume: volume.clone(),
                        files: BTreeMap::new(),
                        mounted: false,
                    },
                );
            }
            Op::Mount(name) => {
                cli(d, &["container", "mount", name])?;
                self.model.containers.get_mut(name).unwrap().mounted = true;
            }
            Op::Unmount(name) => {
                cli(d, &["container", "unmount", "--all", name])?;
                self.model.containers.get_mut(name).unwrap().mounted = false;
            }
            Op::Write {
                container,
                path,
                content,
                in_volume,
            } => {
                let target = if *in_volume {
                    format!("/data/{path}")
                } else {
                    format!("/{path}")
                };
                let script =
                    format!("printf %s {content} > {target}.tmp && mv {target}.tmp {target}");
                cli(
                    d,
                    &["container", "exec", container, "--", "sh", "-c", &script],
                )?;
                let c = self.model.containers.get_mut(container).unwrap();
                if *in_volume {
                    let volume = c.volume.clone().unwrap();
                    self.model
                        .volumes
                        .get_mut(&volume)
                        .unwrap()
                        .insert(path.clone(), content.clone());
                } else {
                    c.files.insert(path.clone(), content.clone());
                }
            }
            Op::Commit { container, tag } => {
                let v = cli(d, &["container", "commit", container, tag])?;
                self.model
                    .tags
                    .insert(tag.clone(), str_of(&v, "id").to_owned());
            }
            Op::Remove(name) => {
                cli(d, &["container", "rm", "-f", name])?;
                self.model.containers.remove(name);
            }
            Op::VolumeCreate(name) => {
                cli(d, &["volume", "create", name])?;
                self.model.volumes.entry(name.clone()).or_default();
            }
            Op::VolumeRemove(name) => {
                cli(d, &["volume", "rm", name])?;
                self.model.volumes.remove(name);
            }
            Op::VolumePrune => {
                let v = cli(d, &["volume", "prune", "--all"])?;
                for name in v["removed"].as_array().into_iter().flatten() {
                    self.model.volumes.remove(name.as_str().unwrap());
                }
            }
            Op::ImageRemove(tag) => {
                cli(d, &["image", "rm", tag])?;
                self.model.tags.remove(tag);
            }
        }
        self.acknowledged += 1;
        Ok(())
    }

    /// One kill: a few acknowledged operations, then one cut short after a random delay.
    fn iteration(&mut self, index: usize) {
        for _ in 0..self.rng.below(4) {
            let op = self.choose();
            // Refusals (a name taken meanwhile, say) are answers too: nothing to record.
            let _ = self.run(&op);
        }
        let op = self.choose();
        // Most operations take a few milliseconds: most kills land inside one; some later, in
        // the background work an operation leaves (deletions, unmount teardowns).
        let window = if self.rng.below(5) == 0 {
            40_000
        } else {
            8_000
        };
        let delay = Duration::from_micros(self.rng.next() % window);
        let pid = self.daemon.pid().unwrap();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            );
        });
        let before = self.model.clone();
        let outcome = self.run(&op);
        killer.join().unwrap();
        self.daemon.kill();
        self.daemon
            .restart()
            .unwrap_or_else(|e| panic!("iteration {index}, after {op:?}: restart failed: {e}"));
        let in_flight = outcome.is_err().then_some((&op, before));
        if let Err(problem) = self.verify(in_flight) {
            panic!(
                "iteration {index}, kill {delay:?} into {op:?} (it {}): {problem}\n--- stratad log ---\n{}",
                if outcome.is_ok() {
                    "was acknowledged"
                } else {
                    "was in flight"
                },
                self.daemon.log_tail()
            );
        }
    }

    /// After a restart: fsck finds nothing, the acknowledged model is all there, and the
    /// operation in flight (with the model from before it) happened wholly or not at all.
    #[expect(clippy::too_many_lines, reason = "one check after another, in order")]
    fn verify(&mut self, in_flight: Option<(&Op, Model)>) -> Result<(), String> {
        let d = &self.daemon;
        let fsck = d
            .command(STRATA)
            .args(["--json", "system", "fsck"])
            .output()
            .map_err(|e| e.to_string())?;
        if !fsck.status.success() {
            return Err(format!(
                "fsck after restart: {}",
                String::from_utf8_lossy(&fsck.stdout)
            ));
        }
        let containers = cli(d, &["container", "ls", "-a"])?;
        let mut live: BTreeMap<String, (String, String, bool)> = BTreeMap::new();
        for c in containers.as_array().into_iter().flatten() {
            live.insert(
                str_of(c, "name").to_owned(),
                (
                    str_of(c, "id").to_owned(),
                    str_of(c, "image").to_owned(),
                    c["mounted"].as_bool().unwrap_or(false),
                ),
            );
        }
        let images = cli(d, &["image", "ls"])?;
        let mut tags: BTreeMap<String, String> = BTreeMap::new();
        for img in images.as_array().into_iter().flatten() {
            for tag in img["tags"].as_array().into_iter().flatten() {
                tags.insert(
                    tag.as_str().unwrap().to_owned(),
                    str_of(img, "id").to_owned(),
                );
            }
        }
        let volumes: Vec<String> = cli(d, &["volume", "ls"])?
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| str_of(v, "name").to_owned())
            .collect();

        // The in-flight operation: take whatever it left, provided it left all or nothing.
        if let Some((op, before)) = in_flight {
            let done = self.settle_in_flight(op, &before, &live, &tags, &volumes)?;
            if done {
                self.in_flight_done += 1;
            } else {
                self.in_flight_not_done += 1;
            }
        }
        let d = &self.daemon;
        let m = &mut self.model;
        if m.tags != tags {
            return Err(format!("tags: acknowledged {:?}, found {tags:?}", m.tags));
        }
        let names: Vec<&String> = live.keys().collect();
        if m.containers.keys().collect::<Vec<_>>() != names {
            return Err(format!(
                "containers: acknowledged {:?}, found {names:?}",
                m.containers.keys().collect::<Vec<_>>()
            ));
        }
        for (name, c) in &mut m.containers {
            let (id, image, mounted) = &live[name];
            if (id, image) != (&c.id, &c.image) {
                return Err(format!(
                    "container {name}: was {} on {}, found {id} on {image}",
                    c.id, c.image
                ));
            }
            // Mount counts live in memory: a mount survives a restart as one reference.
            if *mounted != c.mounted {
                return Err(format!(
                    "container {name}: mounted {mounted}, acknowledged {}",
                    c.mounted
                ));
            }
            let upper = d.root().join("overlay2").join(&c.id).join("diff");
            for (path, content) in &c.files {
                let found = std::fs::read_to_string(upper.join(path)).unwrap_or_default();
                if &found != content {
                    return Err(format!(
                        "container {name}: /{path} holds {found:?}, acknowledged {content:?}"
                    ));
                }
            }
        }
        let mut model_volumes: Vec<&String> = m.volumes.keys().collect();
        model_volumes.sort();
        let mut found_volumes: Vec<&String> = volumes.iter().collect();
        found_volumes.sort();
        if model_volumes != found_volumes {
            return Err(format!(
                "volumes: acknowledged {model_volumes:?}, found {found_volumes:?}"
            ));
        }
        for (volume, files) in &m.volumes {
            let data = d.root().join("volumes").join(volume).join("_data");
            for (path, content) in files {
                let found = std::fs::read_to_string(data.join(path)).unwrap_or_default();
                if &found != content {
                    return Err(format!(
                        "volume {volume}: {path} holds {found:?}, acknowledged {content:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Folds the in-flight operation's effect into the model, after checking it is whole.
    /// Returns whether it happened.
    #[expect(clippy::too_many_lines, reason = "one arm per operation")]
    fn settle_in_flight(
        &mut self,
        op: &Op,
        before: &Model,
        live: &BTreeMap<String, (String, String, bool)>,
        tags: &BTreeMap<String, String>,
        volumes: &[String],
    ) -> Result<bool, String> {
        let m = &mut self.model;
        let new_tag = |tag: &str| {
            tags.get(tag)
                .filter(|_| !before.tags.contains_key(tag))
                .cloned()
        };
        Ok(match op {
            Op::Import(k) => {
                let tag = &self.archives[*k].1;
                match tags.get(tag) {
                    Some(id) => {
                        m.tags.insert(tag.clone(), id.clone());
                        true
                    }
                    None => false,
                }
            }
            Op::Tag { target: tag, .. } | Op::Commit { tag, .. } => match new_tag(tag) {
                Some(id) => {
                    m.tags.insert(tag.clone(), id);
                    true
                }
                None => false,
            },
            Op::Create { name, volume, .. } => {
                if let Some((id, image, _)) = live.get(name) {
                    if let Some(volume) = volume {
                        if !volumes.contains(volume) {
                            return Err(format!("created {name} without its volume {volume}"));
                        }
                        m.volumes.entry(volume.clone()).or_default();
                    }
                    m.containers.insert(
                        name.clone(),
                        ContainerModel {
                            id: id.clone(),
                            image: image.clone(),
                            volume: volume.clone(),
                            files: BTreeMap::new(),
                            mounted: false,
                        },
                    );
                    true
                } else {
                    if let Some(volume) = volume
                        .as_ref()
                        .filter(|v| !before.volumes.contains_key(*v) && volumes.contains(*v))
                    {
                        return Err(format!(
                            "create of {name} failed but left its new volume {volume}"
                        ));
                    }
                    false
                }
            }
            Op::Mount(name)
            | Op::Unmount(name)
            | Op::Write {
                container: name, ..
            } => {
                // A mount count is whatever the kernel kept; an exec's write may land after
                // the restart (its process outlives the daemon), so it is not checked.
                let mounted = live.get(name).is_some_and(|l| l.2);
                if let Some(c) = m.containers.get_mut(name) {
                    c.mounted = mounted;
                }
                if let Op::Write {
                    path, in_volume, ..
                } = op
                    && let Some(c) = m.containers.get(name)
                {
                    let dir = if *in_volume {
                        self.daemon
                            .root()
                            .join("volumes")
                            .join(c.volume.as_ref().unwrap())
                            .join("_data")
                    } else {
                        self.daemon.root().join("overlay2").join(&c.id).join("diff")
                    };
                    // The write renames into place: a half-written file is never visible.
                    if dir.join(format!("{path}.tmp")).exists() && !dir.join(path).exists() {
                        return Ok(false);
                    }
                }
                true
            }
            Op::Remove(name) => {
                if live.contains_key(name) {
                    false
                } else {
                    m.containers.remove(name);
                    true
                }
            }
            Op::VolumeCreate(name) => {
                if volumes.contains(name) {
                    m.volumes.entry(name.clone()).or_default();
                    true
                } else {
                    false
                }
            }
            Op::VolumeRemove(name) => {
                if volumes.contains(name) {
                    false
                } else {
                    m.volumes.remove(name);
                    true
                }
            }
            Op::VolumePrune => {
                m.volumes.retain(|v, _| volumes.contains(v));
                true
            }
            Op::ImageRemove(tag) => {
                if tags.contains_key(tag) {
                    false
                } else {
                    m.tags.remove(tag);
                    true
                }
            }
        })
    }
}

#[test]
fn every_acknowledged_operation_survives_sigkill_and_nothing_half_made_shows() {
    require_root("the crash test mounts overlays");
    let kills: usize = std::env::var("STRATA_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("STRATA_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
    eprintln!("crash test: seed {seed} (STRATA_CRASH_SEED={seed} replays it), {kills} kills");
    let started = Instant::now();
    let mut h = Harness::new(seed);
    for i in 0..kills {
        h.iteration(i);
    }
    eprintln!(
        "crash test: {kills} kills survived in {:.0} s; {} acknowledged operations verified after every later kill; in flight at the kill: {} happened wholly, {} not at all; final store: {} tags, {} containers, {} volumes",
        started.elapsed().as_secs_f64(),
        h.acknowledged,
        h.in_flight_done,
        h.in_flight_not_done,
        h.model.tags.len(),
        h.model.containers.len(),
        h.model.volumes.len()
    );
    assert!(
        h.acknowledged > kills,
        "the workload did too little to test anything"
    );
}
