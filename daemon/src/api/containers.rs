use std::os::fd::AsRawFd;

use axum::Json;
use axum::extract::{Request, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use strata_store::ids::ImageRef;
use strata_store::mountspec::{parse_mount_flag, parse_volume_flag};
use strata_store::{
    Change, ContainerSummary, CreateOptions, ExecRequest, ExecStdio, ImportedImage,
};

use super::extract::{JsonBody, Params};
use super::{ApiError, AppState, RefQuery, blocking};

/// `POST /v1/containers`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub name: Option<String>,
    pub image: String,
    /// `-v SRC:DST[:MODE]` specs, as typed.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// `--mount type=...` specs, as typed.
    #[serde(default)]
    pub mounts: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

pub(super) async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Json<ContainerSummary>, ApiError> {
    let mut mounts = Vec::new();
    for v in &body.volumes {
        mounts
            .push(parse_volume_flag(v).map_err(|e| ApiError::bad_request(format!("-v {v}: {e}")))?);
    }
    for m in &body.mounts {
        mounts.push(
            parse_mount_flag(m).map_err(|e| ApiError::bad_request(format!("--mount {m}: {e}")))?,
        );
    }
    let opts = CreateOptions {
        name: body.name,
        image: body.image,
        mounts,
        env: body.env,
        entrypoint: body.entrypoint,
        cmd: body.cmd,
        working_dir: body.workdir,
        user: body.user,
    };
    blocking(&state, move |s| s.create_container(&opts)).map(Json)
}

/// Sizes come from the records, as last measured by the background refresher: listing never
/// walks upper dirs.
pub(super) async fn list(
    State(state): State<AppState>,
) -> Result<Json<Vec<ContainerSummary>>, ApiError> {
    blocking(&state, strata_store::Store::list_containers).map(Json)
}

pub(super) async fn inspect(
    State(state): State<AppState>,
    Params(q): Params<RefQuery>,
) -> Result<Json<ContainerSummary>, ApiError> {
    blocking(&state, move |s| s.inspect_container(&q.reference)).map(Json)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MountedContainer {
    pub path: std::path::PathBuf,
}

pub(super) async fn mount(
    State(state): State<AppState>,
    Params(q): Params<RefQuery>,
) -> Result<Json<MountedContainer>, ApiError> {
    blocking(&state, move |s| s.mount_container(&q.reference))
        .map(|path| Json(MountedContainer { path }))
}

pub(super) async fn unmount(
    State(state): State<AppState>,
    Params(q): Params<RefQuery>,
) -> Result<Json<super::images::Unmounted>, ApiError> {
    blocking(&state, move |s| s.unmount_container(&q.reference, q.all))
        .map(|remaining| Json(super::images::Unmounted { remaining }))
}

pub(super) async fn diff(
    State(state): State<AppState>,
    Params(q): Params<RefQuery>,
) -> Result<Json<Vec<Change>>, ApiError> {
    blocking(&state, move |s| s.container_changes(&q.reference)).map(Json)
}

pub(super) async fn commit(
    State(state): State<AppState>,
    Params(q): Params<RefQuery>,
) -> Result<Json<ImportedImage>, ApiError> {
    let tag = q
        .tag
        .as_deref()
        .map(str::parse::<ImageRef>)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    blocking(&state, move |s| {
        s.commit_container(&q.reference, tag.as_ref())
    })
    .map(Json)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RemovedContainer {
    pub name: String,
}

pub(super) async fn remove(
    State(state): State<AppState>,
    Params(q): Params<RefQuery>,
) -> Result<Json<RemovedContainer>, ApiError> {
    blocking(&state, move |s| s.remove_container(&q.reference, q.force))
        .map(|name| Json(RemovedContainer { name }))
}

/// The last line an exec connection carries: the exit code, or why it did not run.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecOutcome {
    Exited { code: i32 },
    Error { message: String },
}

/// The upgrade protocol name of exec connections.
pub const EXEC_PROTOCOL: &str = "strata-exec";

/// `POST /v1/containers/exec?ref=&spec=` with `Upgrade: strata-exec`. After the 101 the
/// client sends its stdin, stdout and stderr as file descriptors (`SCM_RIGHTS`), so the
/// command reads and writes the client's own terminal or pipes with no copying; the daemon
/// answers with one JSON [`ExecOutcome`] line when the command ends.
pub(super) async fn exec(
    State(state): State<AppState>,
    Params(q): Params<RefQuery>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let spec: ExecRequest = serde_json::from_str(q.spec.as_deref().unwrap_or("{}"))
        .map_err(|e| ApiError::bad_request(format!("exec spec: {e}")))?;
    let reference = q.reference.clone();
    blocking(&state, move |s| s.inspect_container(&reference))?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let store = state.store.clone();
    tokio::spawn(async move {
        let Some(stream) = super::upgraded_stream(on_upgrade, "exec").await else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || {
            let stream = stream.into_std()?;
            stream.set_nonblocking(false)?;
            let outcome = match receive_stdio(&stream) {
                Ok(stdio) => match store.exec_container(&q.reference, &spec, stdio) {
                    Ok(code) => ExecOutcome::Exited { code },
                    Err(e) => ExecOutcome::Error {
                        message: e.to_string(),
                    },
                },
                Err(e) => ExecOutcome::Error {
                    message: format!("receiving the client's stdio: {e}"),
                },
            };
            let mut line = serde_json::to_vec(&outcome).unwrap_or_default();
            line.push(b'\n');
            std::io::Write::write_all(&mut &stream, &line)
        })
        .await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "exec: client went away before the exit code");
        }
    });
    Ok(super::switching_protocols(EXEC_PROTOCOL))
}

/// Receives exactly three descriptors (stdin, stdout, stderr) in one `SCM_RIGHTS` message.
fn receive_stdio(stream: &std::os::unix::net::UnixStream) -> std::io::Result<ExecStdio> {
    let [stdin, stdout, stderr] = crate::fdpass::receive_fds::<3>(stream.as_raw_fd())?;
    Ok(ExecStdio {
        stdin,
        stdout,
        stderr,
    })
}
