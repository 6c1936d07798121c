//! Private daemons for one test: a `dockerd` with its own data root and socket, and a `stratad`
//! with its own root. Both are stopped and cleaned up on drop, mounts included.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{Error, TreeSnapshot};

/// How long a daemon gets to answer after start. Generous: CI machines share two cores with
/// parallel test binaries.
const READY_TIMEOUT: Duration = Duration::from_mins(1);
/// How long a daemon gets to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const LOG_TAIL_LINES: usize = 40;

/// Panics unless running as root, naming what needs it.
pub fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root (mounts, device nodes, file owners): run the tests as root, e.g. via `cargo xtask test`"
    );
}

/// Finds `program` in `PATH` or the sbin/bin directories root normally has (CI's environment
/// may carry a user's PATH without `/usr/sbin`).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .into_iter()
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// A temporary directory with a short path: unix socket paths are limited to 108 bytes.
fn short_tempdir(prefix: &str) -> Result<tempfile::TempDir, Error> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .map_err(|source| Error::Io {
            context: "creating a temporary directory in /tmp".into(),
            source,
        })
}

fn spawn_logged(command: Command, log: &Path) -> Result<Child, Error> {
    let file = std::fs::File::create(log).map_err(|e| Error::io(log, "creating", e))?;
    spawn_into(command, file, log)
}

/// Like [`spawn_logged`], appending to `log` (a restart keeps the earlier runs' lines).
fn spawn_appending(command: Command, log: &Path) -> Result<Child, Error> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .map_err(|e| Error::io(log, "opening", e))?;
    spawn_into(command, file, log)
}

fn spawn_into(mut command: Command, file: std::fs::File, log: &Path) -> Result<Child, Error> {
    let err = file
        .try_clone()
        .map_err(|e| Error::io(log, "duplicating", e))?;
    command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        // Own process group: a Ctrl-C in the terminal reaches the test, which then stops the
        // daemon in order, instead of killing it mid-write.
        .process_group(0)
        .spawn()
        .map_err(|source| Error::Io {
            context: format!("starting {}", command.get_program().display()),
            source,
        })
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"))
}

/// SIGTERM, wait up to [`STOP_TIMEOUT`], then SIGKILL. Returns whether it exited by itself.
fn terminate(child: &mut Child) -> bool {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return true;
    }
    let _ = kill(pid_of(child), Signal::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Mount points at or below `dir`, deepest first, from `/proc/self/mountinfo`.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(code) = field
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(code);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything at or below `dir`, so removing it cannot descend into a mounted
/// layer (or worse, a bind mount of something real).
fn unmount_all_under(dir: &Path) {
    for point in mounts_under(dir) {
        if let Err(e) = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("testkit: umount {}: {e}", point.display());
        }
    }
}

fn check_output(what: &str, output: Output) -> Output {
    assert!(
        output.status.success(),
        "`{what}` failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

/// A private `dockerd` (overlay2 storage, no networking setup) listening on its own socket.
///
/// ```no_run
/// let docker = strata_testkit::Dockerd::start();
/// docker.load(std::path::Path::new("/tmp/image.tar"));
/// let id = docker.create("strata-test/rich:latest");
/// let rootfs_tar = docker.export(&id);
/// ```
#[derive(Debug)]
pub struct Dockerd {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    data_root: PathBuf,
    socket: PathBuf,
    client: PathBuf,
}

impl Dockerd {
    /// Starts a dockerd and waits until `docker version` answers.
    ///
    /// # Panics
    /// If dockerd is not installed, or does not come up (the message has its log tail).
    pub fn start() -> Self {
        match Self::try_start() {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`start`](Self::start), but with the data root in a fresh directory under `parent`
    /// (for benchmarks that need docker's layers on a given disk; it is removed on drop); the
    /// socket and exec root stay under `/tmp`.
    pub fn start_in(parent: &Path) -> Self {
        match Self::try_start_in(Some(parent)) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`start`](Self::start), returning errors instead of panicking.
    pub fn try_start() -> Result<Self, Error> {
        Self::try_start_in(None)
    }

    /// [`start`](Self::start) / [`start_in`](Self::start_in), returning errors.
    pub fn try_start_in(parent: Option<&Path>) -> Result<Self, Error> {
        let not_found = |program: &str| Error::ProgramNotFound {
            program: program.into(),
            hint: "install docker.io (`.ci/run` and `cargo xtask test` do)",
        };
        let dockerd = find_program("dockerd").ok_or_else(|| not_found("dockerd"))?;
        // Debian's docker.io client matches its dockerd; a newer client on PATH also works,
        // since it negotiates the API version down (dockerd 20.10 speaks 1.41).
        let client = Some(PathBuf::from("/usr/bin/docker"))
            .filter(|p| p.is_file())
            .or_else(|| find_program("docker"))
            .ok_or_else(|| not_found("docker"))?;
        let dir = short_tempdir("sdk")?;
        let base = dir.path();
        let socket = base.join("docker.sock");
        let config = base.join("daemon.json");
        std::fs::write(&config, "{}\n").map_err(|e| Error::io(&config, "writing", e))?;
        let data_root = match parent {
            None => base.join("data"),
            Some(parent) => tempfile::Builder::new()
                .prefix("docker-data")
                .tempdir_in(parent)
                .map_err(|e| Error::io(parent, "creating a directory in", e))?
                .keep(),
        };
        let mut command = Command::new(dockerd);
        command
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(&data_root)
            .arg("--exec-root")
            .arg(base.join("exec"))
            .arg("--pidfile")
            .arg(base.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--storage-driver",
                "overlay2",
            ]);
        let log = base.join("dockerd.log");
        let child = spawn_logged(command, &log)?;
        let mut me = Self {
            child: Some(child),
            dir: Some(dir),
            data_root,
            socket,
            client,
        };
        me.wait_ready(&log)?;
        Ok(me)
    }

    fn wait_ready(&mut self, log: &Path) -> Result<(), Error> {
        let start = Instant::now();
        loop {
            let child = self.child.as_mut().expect("running");
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::DaemonNotReady {
                    daemon: "dockerd",
                    reason: format!("exited with {status}"),
                    log_tail: log_tail(log),
                });
            }
            if self.docker(&["version"]).status.success() {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(Error::DaemonNotReady {
                    daemon: "dockerd",
                    reason: format!("`docker version` did not answer within {READY_TIMEOUT:?}"),
                    log_tail: log_tail(log),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The data root (`<tmp>/data`, or the directory [`start_in`](Self::start_in) made), where
    /// `overlay2/` and `image/` live.
    pub fn data_root(&self) -> PathBuf {
        self.data_root.clone()
    }

    fn base(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }

    /// The last lines of dockerd's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.base().join("dockerd.log"))
    }

    /// A `docker` command aimed at this daemon (own `DOCKER_HOST` and `DOCKER_CONFIG`).
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.client);
        command
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.base().join("client-config"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .stdin(Stdio::null());
        command
    }

    /// Runs `docker ARGS...` and returns its output, whatever the exit status.
    pub fn docker<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.command()
            .args(args)
            .output()
            .expect("the docker client was found at start")
    }

    /// Runs `docker ARGS...`, panicking with stderr and the daemon log tail on failure.
    pub fn docker_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let what = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let output = self.docker(args);
        if !output.status.success() {
            eprintln!("--- dockerd log tail ---\n{}", self.log_tail());
        }
        check_output(&format!("docker {what}"), output)
    }

    /// `docker load -i ARCHIVE`; returns docker's stdout (`Loaded image: ...`).
    pub fn load(&self, archive: &Path) -> String {
        let out = self.docker_ok(&[OsStr::new("load"), OsStr::new("-i"), archive.as_os_str()]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `docker save -o OUT IMAGE`.
    pub fn save(&self, image: &str, out: &Path) {
        self.docker_ok(&[
            OsStr::new("save"),
            OsStr::new("-o"),
            out.as_os_str(),
            OsStr::new(image),
        ]);
    }

    /// `docker create IMAGE`; returns the container ID.
    pub fn create(&self, image: &str) -> String {
        let out = self.docker_ok(&["create", image]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `docker export CONTAINER`: the container's root filesystem as a tar.
    pub fn export(&self, container: &str) -> Vec<u8> {
        self.docker_ok(&["export", container]).stdout
    }

    /// `docker rm -f CONTAINER`.
    pub fn rm(&self, container: &str) {
        self.docker_ok(&["rm", "-f", container]);
    }

    /// `docker rmi -f IMAGE`.
    pub fn rmi(&self, image: &str) {
        self.docker_ok(&["rmi", "-f", image]);
    }

    /// Docker's own view of `image` without any container: its overlay2 layer directories
    /// mounted read-only (lower dirs only) in a temporary directory, snapshotted, unmounted.
    /// Unlike `docker export`, this keeps every xattr.
    pub fn image_view(&self, image: &str) -> Result<TreeSnapshot, Error> {
        let upper = self.inspect_image(image, "{{.GraphDriver.Data.UpperDir}}");
        let lower = self.inspect_image(image, "{{.GraphDriver.Data.LowerDir}}");
        // Top layer first; an overlay with only lower dirs is read-only and needs no work dir,
        // but needs two of them, so a one-layer image is bind-mounted instead.
        let dirs: Vec<&str> = std::iter::once(upper.as_str())
            .chain(lower.split(':'))
            .filter(|d| !d.is_empty() && *d != "<no value>")
            .collect();
        let mnt = short_tempdir("sdv")?;
        let target = mnt.path();
        let mounted = if dirs.len() == 1 {
            nix::mount::mount(
                Some(dirs[0]),
                target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_RDONLY,
                None::<&str>,
            )
        } else {
            nix::mount::mount(
                Some("overlay"),
                target,
                Some("overlay"),
                nix::mount::MsFlags::MS_RDONLY,
                Some(format!("lowerdir={}", dirs.join(":")).as_str()),
            )
        };
        mounted.map_err(|e| Error::io(target, "mounting docker's layers at", e.into()))?;
        let snapshot = TreeSnapshot::from_dir(target);
        unmount_all_under(target);
        snapshot
    }

    /// `docker image inspect --format FORMAT IMAGE`, trimmed.
    pub fn inspect_image(&self, image: &str, format: &str) -> String {
        let out = self.docker_ok(&["image", "inspect", "--format", format, image]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        if let Some(mut child) = self.child.take()
            && !terminate(&mut child)
        {
            // dockerd was killed; its managed containerd would outlive it.
            let pidfile = dir.path().join("exec/containerd/containerd.pid");
            if let Some(pid) = std::fs::read_to_string(pidfile)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        unmount_all_under(dir.path());
        if !self.data_root.starts_with(dir.path()) {
            unmount_all_under(&self.data_root);
            if let Err(e) = std::fs::remove_dir_all(&self.data_root) {
                eprintln!(
                    "testkit: removing dockerd's data root {}: {e}",
                    self.data_root.display()
                );
            }
        }
        if let Err(e) = dir.close() {
            eprintln!("testkit: removing dockerd's directory: {e}");
        }
    }
}

/// A private `stratad` with its own root and socket.
///
/// ```no_run
/// let strata = strata_testkit::Stratad::start("target/debug/stratad");
/// let out = strata.strata_ok("target/debug/strata", &["image", "ls"]);
/// ```
#[derive(Debug)]
pub struct Stratad {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    program: PathBuf,
    root: PathBuf,
    socket: PathBuf,
    metrics_addr: std::net::SocketAddr,
    log: PathBuf,
    extra_args: Vec<String>,
}

/// A loopback port nobody listens on right now (for the daemon's metrics endpoint, so
/// parallel tests do not collide on the default port).
fn free_loopback_port() -> Result<std::net::SocketAddr, Error> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io(Path::new("127.0.0.1:0"), "binding", e))?;
    probe
        .local_addr()
        .map_err(|e| Error::io(Path::new("127.0.0.1:0"), "reading the address of", e))
}

impl Stratad {
    /// Starts `stratad --root <tmp>/root --socket <tmp>/strata.sock` and waits until the socket
    /// accepts connections.
    ///
    /// # Panics
    /// If the binary is missing or the daemon does not come up (the message has its log tail).
    pub fn start(stratad: impl AsRef<Path>) -> Self {
        match Self::try_start(stratad, None) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`start`](Self::start), but with the root in a fresh directory under `parent` (for
    /// benchmarks that need the store on a given disk); the socket stays under `/tmp`.
    pub fn start_in(stratad: impl AsRef<Path>, parent: &Path) -> Self {
        match Self::try_start(stratad, Some(parent)) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`start`](Self::start), with more flags for `stratad`.
    pub fn start_with(stratad: impl AsRef<Path>, args: &[&str]) -> Self {
        match Self::try_start_with(stratad, None, args) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`start`](Self::start) / [`start_in`](Self::start_in), returning errors.
    pub fn try_start(stratad: impl AsRef<Path>, parent: Option<&Path>) -> Result<Self, Error> {
        Self::try_start_with(stratad, parent, &[])
    }

    fn try_start_with(
        stratad: impl AsRef<Path>,
        parent: Option<&Path>,
        args: &[&str],
    ) -> Result<Self, Error> {
        let stratad = stratad.as_ref();
        if !stratad.is_file() {
            return Err(Error::ProgramNotFound {
                program: stratad.display().to_string(),
                hint: "build it first (`cargo build -p strata-daemon`)",
            });
        }
        let dir = short_tempdir("sst")?;
        let root = match parent {
            None => dir.path().join("root"),
            Some(parent) => tempfile::Builder::new()
                .prefix("strata-root")
                .tempdir_in(parent)
                .map_err(|e| Error::io(parent, "creating a directory in", e))?
                .keep(),
        };
        let socket = dir.path().join("strata.sock");
        let metrics_addr = free_loopback_port()?;
        let log = dir.path().join("stratad.log");
        let mut me = Self {
            child: None,
            dir: Some(dir),
            program: stratad.to_path_buf(),
            root,
            socket,
            metrics_addr,
            log,
            extra_args: args.iter().map(|&a| a.to_owned()).collect(),
        };
        me.child = Some(spawn_logged(me.daemon_command(), &me.log)?);
        let log = me.log.clone();
        me.wait_ready(&log)?;
        Ok(me)
    }

    fn daemon_command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--metrics-addr")
            .arg(self.metrics_addr.to_string())
            .arg("--scan-interval")
            .arg("1")
            .args(&self.extra_args);
        command
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would: no shutdown, nothing flushed that was not already.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(pid_of(&child), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Starts the daemon again on the same root, socket and metrics address (after
    /// [`kill`](Self::kill) or [`stop`](Self::stop)) and waits until it accepts connections.
    /// Its log goes on in the same file.
    pub fn restart(&mut self) -> Result<(), Error> {
        assert!(self.child.is_none(), "restart of a running stratad");
        self.child = Some(spawn_appending(self.daemon_command(), &self.log)?);
        let log = self.log.clone();
        self.wait_ready(&log)
    }

    fn wait_ready(&mut self, log: &Path) -> Result<(), Error> {
        let start = Instant::now();
        loop {
            let child = self.child.as_mut().expect("running");
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::DaemonNotReady {
                    daemon: "stratad",
                    reason: format!("exited with {status}"),
                    log_tail: log_tail(log),
                });
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(Error::DaemonNotReady {
                    daemon: "stratad",
                    reason: format!(
                        "{} did not accept connections within {READY_TIMEOUT:?}",
                        self.socket.display()
                    ),
                    log_tail: log_tail(log),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The store root given to `--root`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The address given to `--metrics-addr`.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        self.metrics_addr
    }

    /// `GET /metrics`: the exposition text.
    ///
    /// # Panics
    /// If the endpoint does not answer 200.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(self.metrics_addr)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.metrics_addr));
        write!(conn, "GET /metrics HTTP/1.0\r\nHost: strata\r\n\r\n").expect("sending the request");
        let mut response = String::new();
        conn.read_to_string(&mut response)
            .expect("reading /metrics");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "GET /metrics: {head}"
        );
        body.to_owned()
    }

    /// The API socket given to `--socket`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The last lines of stratad's log.
    pub fn log_tail(&self) -> String {
        log_tail(
            &self
                .dir
                .as_ref()
                .expect("present until drop")
                .path()
                .join("stratad.log"),
        )
    }

    /// One raw HTTP/1.1 request to the API (`path` with its query); the status and the body
    /// parsed as JSON. The body is sent from another thread while this one reads, so an answer
    /// the daemon gives before taking the whole body (and its hang-up) is what comes back.
    ///
    /// # Panics
    /// If the daemon does not answer, or answers with a body that is not JSON.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
        use std::io::{Read as _, Write as _};
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.socket.display()));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: sending the request: {e}"));
        let mut writer = s
            .try_clone()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let body = body.to_vec();
        let sender = std::thread::spawn(move || {
            let _ = writer.write_all(&body);
        });
        let mut answer = Vec::new();
        let read = s.read_to_end(&mut answer);
        let _ = sender.join();
        assert!(!answer.is_empty(), "{method} {path}: no answer ({read:?})");
        let text = String::from_utf8_lossy(&answer);
        let status: u16 = text
            .get(9..12)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: not an HTTP answer: {text:?}"));
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let json = serde_json::from_str(body.trim())
            .unwrap_or_else(|_| panic!("{method} {path}: answer body is not JSON: {body:?}"));
        (status, json)
    }

    /// A CLI command aimed at this daemon: `CLI --socket SOCKET` with `STRATA_SOCKET` set too.
    pub fn command(&self, cli: impl AsRef<Path>) -> Command {
        let mut command = Command::new(cli.as_ref());
        command
            .env("STRATA_SOCKET", &self.socket)
            .arg("--socket")
            .arg(&self.socket)
            .stdin(Stdio::null());
        command
    }

    /// Runs `CLI --socket SOCKET ARGS...` and returns its output, whatever the exit status.
    pub fn strata<S: AsRef<OsStr>>(&self, cli: impl AsRef<Path>, args: &[S]) -> Output {
        let cli = cli.as_ref();
        self.command(cli)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", cli.display()))
    }

    /// Runs the CLI and returns its stdout, panicking with stderr and the daemon log tail on
    /// failure.
    pub fn strata_ok<S: AsRef<OsStr>>(&self, cli: impl AsRef<Path>, args: &[S]) -> String {
        let what = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let output = self.strata(cli, args);
        if !output.status.success() {
            eprintln!("--- stratad log tail ---\n{}", self.log_tail());
        }
        let output = check_output(&format!("strata {what}"), output);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Imports `image` (as a legacy `docker save` archive) with `CLI image import`.
    ///
    /// # Panics
    /// If the archive cannot be written or the import fails.
    pub fn import(&self, cli: impl AsRef<Path>, image: &crate::ImageBuilder) {
        let dir = self.dir.as_ref().expect("present until drop").path();
        let archive = dir.join(format!(
            "import-{}.tar",
            image.config_digest().trim_start_matches("sha256:")
        ));
        std::fs::write(&archive, image.docker_save_legacy())
            .unwrap_or_else(|e| panic!("writing {}: {e}", archive.display()));
        self.strata_ok(
            cli,
            &[
                OsStr::new("image"),
                OsStr::new("import"),
                OsStr::new("-q"),
                archive.as_os_str(),
            ],
        );
        let _ = std::fs::remove_file(&archive);
    }

    /// Stops the daemon (SIGTERM, then SIGKILL after a grace period) without removing its
    /// root; returns whether it exited by itself in time.
    pub fn stop(&mut self) -> bool {
        self.child
            .take()
            .is_none_or(|mut child| terminate(&mut child))
    }
}

impl Drop for Stratad {
    fn drop(&mut self) {
        if !self.stop() {
            eprintln!("testkit: stratad ignored SIGTERM and was killed");
        }
        unmount_all_under(&self.root);
        if let Some(dir) = self.dir.take() {
            unmount_all_under(dir.path());
            if !self.root.starts_with(dir.path()) {
                let _ = std::fs::remove_dir_all(&self.root);
            }
            if let Err(e) = dir.close() {
                eprintln!("testkit: removing stratad's directory: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b\134c"), "/tmp/a b\\c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
