use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use strata_store::archive::ImportProgress;
use strata_store::ids::ImageRef;
use strata_store::{ImageDetails, ImageSummary, ImportedImage, RemovedImage, Store};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::extract::Params;
use super::{ApiError, AppState, RefQuery, blocking};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TagQuery {
    source: String,
    target: String,
}

/// One line of the import response stream (NDJSON), like `docker load`'s progress messages.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportEvent {
    Progress {
        archive_bytes: u64,
        entry: String,
        layers_done: usize,
    },
    Imported {
        images: Vec<ImportedImage>,
    },
    Error {
        message: String,
    },
}

/// Progress lines are sent at most this often (by archive bytes), plus at every layer.
const PROGRESS_EVERY: u64 = 8 << 20;

/// `POST /v1/images/import`: the request body is the archive, streamed into the store as it
/// arrives; the response streams progress and ends with the result or the error.
pub(super) async fn import(State(state): State<AppState>, body: Body) -> Response {
    let reader = BodyReader::spawn(body);
    let (tx, rx) = mpsc::channel::<ImportEvent>(64);
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || run_import(&store, reader, &tx));
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        Some((Ok::<_, io::Error>(Bytes::from(event.line())), rx))
    });
    let mut response = Response::new(Body::from_stream(lines));
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// The upgrade protocol of `POST /v1/images/import-fd`.
pub const IMPORT_FD_PROTOCOL: &str = "strata-import-fd";

/// `POST /v1/images/import-fd`, upgraded: the client hands over the archive as an open
/// descriptor (a file or a pipe, `SCM_RIGHTS`), which the daemon reads itself, with no copy
/// through the socket (what `strata image import` uses). The answer is the same NDJSON lines as
/// `/v1/images/import`'s, on the upgraded connection. Closing the connection cancels the
/// import; it then leaves nothing behind.
pub(super) async fn import_fd(State(state): State<AppState>, mut req: Request) -> Response {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let store = state.store.clone();
    tokio::spawn(async move {
        if let Some(stream) = super::upgraded_stream(on_upgrade, "import-fd").await {
            serve_import_fd(store, stream).await;
        }
    });
    super::switching_protocols(IMPORT_FD_PROTOCOL)
}

async fn serve_import_fd(store: Arc<Store>, mut stream: UnixStream) {
    let received = stream
        .async_io(Interest::READABLE, || {
            crate::fdpass::receive_fds::<1>(stream.as_raw_fd())
        })
        .await;
    let cancelled = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel::<ImportEvent>(64);
    let archive = received
        .map_err(|e| format!("receiving the archive's descriptor: {e}"))
        .and_then(|[fd]| ArchiveFd::new(fd, cancelled.clone()).map_err(|e| e.to_string()));
    match archive {
        Ok(archive) => {
            tokio::task::spawn_blocking(move || run_import(&store, archive, &tx));
        }
        Err(message) => {
            let _ = tx.try_send(ImportEvent::Error { message });
        }
    }
    let mut client_gone = false;
    loop {
        tokio::select! {
            event = rx.recv() => {
                let Some(event) = event else { break };
                if !client_gone && stream.write_all(&event.line()).await.is_err() {
                    client_gone = true;
                }
                if !matches!(event, ImportEvent::Progress { .. }) {
                    break; // the import's last word: nothing is left to cancel
                }
            }
            ready = stream.readable(), if !client_gone => {
                // The client sends nothing after its descriptor: readable means it hung up.
                let mut byte = [0u8; 1];
                client_gone = match ready.and_then(|()| stream.try_read(&mut byte)) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                    Ok(n) => n == 0,
                    Err(_) => true,
                };
            }
        }
        if client_gone && !cancelled.swap(true, Ordering::Relaxed) {
            tracing::info!("import-fd: the client hung up; cancelling the import");
        }
    }
}

/// Runs one import on this (blocking) thread: progress events, then the result or the error,
/// go to `events`.
fn run_import(store: &Store, reader: impl io::Read, events: &mpsc::Sender<ImportEvent>) {
    let mut last = (0u64, 0usize);
    let mut on_progress = |p: &ImportProgress| {
        if p.archive_bytes >= last.0 + PROGRESS_EVERY || p.layers_done != last.1 {
            last = (p.archive_bytes, p.layers_done);
            let _ = events.blocking_send(ImportEvent::Progress {
                archive_bytes: p.archive_bytes,
                entry: p.entry.clone(),
                layers_done: p.layers_done,
            });
        }
    };
    let event = match store.import_images(reader, &mut on_progress) {
        Ok(images) => {
            for i in &images {
                tracing::info!(image = %i.id, tags = ?i.tags, layers = i.layers, new_layers = i.new_layers, "imported image");
            }
            ImportEvent::Imported { images }
        }
        Err(e) => {
            tracing::info!(error = %e, "import refused");
            ImportEvent::Error {
                message: e.to_string(),
            }
        }
    };
    let _ = events.blocking_send(event);
}

impl ImportEvent {
    /// The event as one NDJSON line.
    fn line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// An archive descriptor from the client, read until the client hangs up.
///
/// A pipe (or socket) is polled before each read, so that an import waiting on a stalled
/// writer still notices the cancellation, and so that a non-blocking descriptor (the client's
/// own flags, which the daemon must not change: they are shared with the client) waits
/// instead of failing. A regular file is read directly.
struct ArchiveFd {
    file: std::fs::File,
    pollable: bool,
    cancelled: Arc<AtomicBool>,
}

/// How long a poll of a pipe waits before looking at the cancellation again.
const CANCEL_POLL_MS: u16 = 200;

impl ArchiveFd {
    fn new(fd: OwnedFd, cancelled: Arc<AtomicBool>) -> io::Result<Self> {
        let file = std::fs::File::from(fd);
        let kind = file.metadata()?.file_type();
        if kind.is_dir() {
            return Err(io::Error::other("the archive is a directory"));
        }
        Ok(Self {
            pollable: !kind.is_file(),
            file,
            cancelled,
        })
    }
}

impl io::Read for ArchiveFd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use nix::poll::{PollFd, PollFlags, poll};
        loop {
            if self.cancelled.load(Ordering::Relaxed) {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the client hung up",
                ));
            }
            if self.pollable {
                let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, nix::poll::PollTimeout::from(CANCEL_POLL_MS)) {
                    Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                    Ok(_) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match self.file.read(buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                read => return read,
            }
        }
    }
}

/// Body chunks read ahead of the import: hyper's reads are up to a few hundred KiB, so this
/// bounds the read-ahead to some MiB.
const BODY_QUEUE: usize = 32;

/// A blocking `Read` over a request body that a task reads ahead into a bounded queue.
///
/// hyper reads the body from the socket only when it is polled for it; read through a
/// `SyncIoBridge`, that only happens while the import thread waits in `read`, so the client's
/// transfer stopped whenever the thread was writing files. Reading ahead overlaps the
/// transfer with the extraction.
struct BodyReader {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl BodyReader {
    fn spawn(body: Body) -> Self {
        let (tx, chunks) = mpsc::channel(BODY_QUEUE);
        tokio::spawn(async move {
            let mut data = body.into_data_stream();
            while let Some(chunk) = data.next().await {
                let chunk = chunk.map_err(io::Error::other);
                let failed = chunk.is_err();
                // A send fails once the import stopped reading (it failed or finished).
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        Self {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

pub(super) async fn list(
    State(state): State<AppState>,
) -> Result<Json<Vec<ImageSummary>>, ApiError> {
    blocking(&state, strata_store::Store::list_images).map(Json)
}

pub(super) async fn inspect(
    State(state): State<AppState>,
    Params(q): Params<RefQuery>,
) -> Result<Json<ImageDetails>, ApiError> {
    blocking(&state, move |s| s.inspect_image(&q.reference)).map(Json)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Tagged {
    pub id: String,
    pub tag: String,
}

pub(super) async fn tag(
    State(state): State<AppState>,
    Params(q): Params<TagQuery>,
) -> Result<Json<Tagged>, ApiError> {
    let target: ImageRef = q
        .target
        .parse()
        .map_err(|e: strata_store::ids::IdError| ApiError::bad_request(e.to_string()))?;
    let tag = target.to_string();
    let id = blocking(&state, move |s| s.tag_image(&q.source, &target))?;
    Ok(Json(Tagged {
        id: id.to_string(),
        tag,
    }))
}

pub(super) async fn remove(
    State(state): State<AppState>,
    Params(q): Params<RefQuery>,
) -> Result<Json<RemovedImage>, ApiError> {
    blocking(&state, move |s| s.remove_image(&q.reference, q.force)).map(Json)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Mounted {
    pub path: std::path::PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Unmounted {
    pub remaining: u32,
}

pub(super) async fn mount(
    State(state): State<AppState>,
    Params(q): Params<RefQuery>,
) -> Result<Json<Mounted>, ApiError> {
    blocking(&state, move |s| s.mount_image(&q.reference)).map(|path| Json(Mounted { path }))
}

pub(super) async fn unmount(
    State(state): State<AppState>,
    Params(q): Params<RefQuery>,
) -> Result<Json<Unmounted>, ApiError> {
    blocking(&state, move |s| s.unmount_image(&q.reference, q.all))
        .map(|remaining| Json(Unmounted { remaining }))
}

/// A blocking `Write` whose bytes become an HTTP response body, in chunks.
#[derive(Debug)]
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 * 1024;

impl ChannelWriter {
    pub(crate) fn new() -> (Self, impl Stream<Item = io::Result<Bytes>> + Send + 'static) {
        let (tx, rx) = mpsc::channel(8);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        (
            Self {
                tx,
                buf: Vec::with_capacity(CHUNK),
            },
            stream.boxed(),
        )
    }

    /// Ends the body with an error, so the client sees a broken transfer, not a short file.
    pub(crate) fn fail(&mut self, message: String) {
        let _ = self.tx.blocking_send(Err(io::Error::other(message)));
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client closed the connection"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
