//! `container exec`: a command in the container's root. A forked child gets a private mount
//! namespace, the container's volumes, binds and tmpfs mounts, `/proc`, a minimal `/dev`,
//! `pivot_root`s into the merged overlay and drops to the configured user. Writes land in the
//! upper dir through the real overlay mount: this is where copy-ups happen. Isolation beyond
//! the mount namespace (pids, network, cgroups, seccomp) is out of scope.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::resolve_container;
use crate::error::Error;
use crate::meta::{ContainerMountKind, ContainerRecord};
use crate::store::Store;
use crate::sys::fs::{mkdir_all_in_root, open_in_root};
use crate::sys::ns::{ChildMount, ChildSetup, DevNode, cstr};

/// What to run. Empty `cmd` runs the container's entrypoint and command.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `KEY=VALUE` added to the container's environment.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub workdir: Option<String>,
}

/// The process's standard streams, passed through from the client.
#[derive(Debug)]
pub struct ExecStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Held shared while an exec's child holds a copy of this process's mount table, exclusive
/// while a container overlay is mounted (see `spawn_exec`). Process-wide, because every store
/// in the process shares one mount table.
pub(crate) static NAMESPACE_COPIES: std::sync::RwLock<()> = std::sync::RwLock::new(());

const DEV_NODES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn read_in_root(root: &Path, path: &str) -> String {
    let mut text = String::new();
    if let Ok(fd) = open_in_root(root, path, libc::O_RDONLY) {
        let _ = std::fs::File::from(fd).read_to_string(&mut text);
    }
    text
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`) against the container's
/// `/etc/passwd` and `/etc/group`, like Docker: a numeric id needs no entry.
fn resolve_user(root: &Path, user: Option<&str>) -> Result<(u32, u32, Vec<u32>), Error> {
    let user = user.unwrap_or("").trim();
    if user.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let (u, g) = user
        .split_once(':')
        .map_or((user, None), |(u, g)| (u, Some(g)));
    let passwd = read_in_root(root, "/etc/passwd");
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == u || f[2] == u));
    let (uid, mut gid) = match (u.parse::<u32>(), &entry) {
        (_, Some(f)) => (f[2].parse().unwrap_or(0), f[3].parse().unwrap_or(0)),
        (Ok(uid), None) => (uid, uid),
        (Err(_), None) => {
            return Err(Error::Invalid(format!(
                "user {u:?} not found in the container's /etc/passwd"
            )));
        }
    };
    let groups_text = read_in_root(root, "/etc/group");
    let groups: Vec<Vec<&str>> = groups_text
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 3)
        .collect();
    if let Some(g) = g {
        gid = match (g.parse::<u32>(), groups.iter().find(|f| f[0] == g)) {
            (_, Some(f)) => f[2].parse().unwrap_or(0),
            (Ok(gid), None) => gid,
            (Err(_), None) => {
                return Err(Error::Invalid(format!(
                    "group {g:?} not found in the container's /etc/group"
                )));
            }
        };
    }
    let name = entry.as_ref().map_or("", |f| f[0]);
    let extra = groups
        .iter()
        .filter(|f| f.len() >= 4 && !name.is_empty() && f[3].split(',').any(|m| m == name))
        .filter_map(|f| f[2].parse().ok())
        .collect();
    Ok((uid, gid, extra))
}

/// Finds `program` on the container's `PATH`, resolving inside the container root.
fn find_program(root: &Path, program: &str, env: &[String]) -> Result<String, Error> {
    if program.contains('/') {
        return Ok(program.to_owned());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        let candidate = format!("{}/{program}", dir.trim_end_matches('/'));
        if let Ok(fd) = open_in_root(root, &candidate, libc::O_PATH) {
            let meta = std::fs::File::from(fd).metadata();
            if meta.is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            }) {
                return Ok(candidate);
            }
        }
    }
    Err(Error::Invalid(format!(
        "executable {program:?} not found in the container's PATH ({path})"
    )))
}

impl Store {
    /// Runs `req` in the container and returns its exit code (128 + signal when killed, as a
    /// shell reports it). The container is mounted for the duration (a mount reference).
    pub fn exec_container(
        &self,
        reference: &str,
        req: &ExecRequest,
        stdio: ExecStdio,
    ) -> Result<i32, Error> {
        let root = self.mount_container(reference)?;
        let result = (|| {
            let c = resolve_container(&self.db.read()?, reference)?;
            let mut child = self.spawn_exec(&c, &root, req, stdio)?;
            let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
            self.track_exec(c.id, pid, true);
            let status = child.wait();
            self.track_exec(c.id, pid, false);
            let status = status.map_err(Error::io("waiting for exec in", &root))?;
            Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        })();
        if let Err(e) = self.unmount_container(reference, false) {
            tracing::warn!(container = reference, error = %e, "could not drop the exec's mount reference");
        }
        result
    }

    fn spawn_exec(
        &self,
        c: &ContainerRecord,
        root: &Path,
        req: &ExecRequest,
        stdio: ExecStdio,
    ) -> Result<std::process::Child, Error> {
        let cfg = &c.config;
        let mut argv = req.cmd.clone();
        if argv.is_empty() {
            argv = cfg.entrypoint.clone().unwrap_or_default();
            argv.extend(cfg.cmd.clone().unwrap_or_default());
        }
        let Some(program) = argv.first().cloned() else {
            return Err(Error::Invalid(format!(
                "container {} has no command to run; give one",
                c.name
            )));
        };
        let mut env = cfg.env.clone();
        env.extend(req.env.iter().cloned());
        let program = find_program(root, &program, &env)?;
        let (uid, gid, groups) = resolve_user(root, req.user.as_deref().or(cfg.user.as_deref()))?;
        let workdir = req
            .workdir
            .clone()
            .or_else(|| cfg.working_dir.clone())
            .unwrap_or_else(|| "/".into());
        let in_root = |target: &str| -> Result<PathBuf, Error> {
            mkdir_all_in_root(root, target).map_err(|e| {
                Error::Invalid(format!("preparing {target} in container {}: {e}", c.name))
            })
        };
        let mut mounts = Vec::new();
        for m in &c.mounts {
            let target =
                cstr(&in_root(&m.target)?).map_err(Error::io("mount target", &m.target))?;
            let mount = match m.kind {
                ContainerMountKind::Bind => ChildMount::Bind {
                    source: cstr(Path::new(&m.source))
                        .map_err(Error::io("bind source", &m.source))?,
                    target,
                    readonly: m.readonly,
                },
                ContainerMountKind::Volume => {
                    let data = self.volume_data(&m.source);
                    ChildMount::Bind {
                        source: cstr(&data).map_err(Error::io("volume", &data))?,
                        target,
                        readonly: m.readonly,
                    }
                }
                ContainerMountKind::Tmpfs => ChildMount::Tmpfs {
                    target,
                    options: c"mode=1777".into(),
                },
            };
            mounts.push(mount);
        }
        let dev = in_root("/dev")?;
        let setup = ChildSetup {
            root: cstr(root).map_err(Error::io("container root", root))?,
            mounts,
            proc_target: cstr(&in_root("/proc")?).map_err(Error::io("proc", root))?,
            dev_nodes: DEV_NODES
                .iter()
                .map(|(name, major, minor)| {
                    Ok(DevNode {
                        path: cstr(&dev.join(name))?,
                        major: *major,
                        minor: *minor,
                    })
                })
                .collect::<std::io::Result<_>>()
                .map_err(Error::io("dev nodes in", &dev))?,
            dev_target: cstr(&dev).map_err(Error::io("dev", &dev))?,
            workdir: cstr(Path::new(&workdir)).map_err(Error::io("working dir", &workdir))?,
            uid,
            gid,
            groups,
        };
        let mut command = Command::new(&program);
        command
            .args(&argv[1..])
            .env_clear()
            .stdin(Stdio::from(stdio.stdin))
            .stdout(Stdio::from(stdio.stdout))
            .stderr(Stdio::from(stdio.stderr));
        for e in &env {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            command.env(k, v);
        }
        // SAFETY: `apply` only makes raw syscalls on memory prepared above (no allocation, no
        // locks), which is what may run between fork and exec.
        unsafe {
            command.pre_exec(move || setup.apply());
        }
        // The child's new mount namespace starts as a copy of ours, other containers'
        // overlays included, until it drops the old root after pivot_root. A container
        // unmounted in that window is torn down only when the child drops its copy, and must
        // not be mounted again before then (two overlays on one upper dir). `spawn` returns
        // once the child has exec'd, so the window is closed while this guard is held.
        let _copying = NAMESPACE_COPIES
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        command
            .spawn()
            .map_err(|e| Error::Invalid(format!("starting {program} in container {}: {e}", c.name)))
    }
}
