//! A small HTTP/1.1 client for the daemon's unix socket.

use std::io::{self, BufRead as _};
use std::os::fd::{AsRawFd as _, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::api::ErrorBody;
use crate::api::images::ImportEvent;
use strata_store::ImportedImage;

/// Why a request did not get a successful answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to stratad at {socket}: {source} (is the daemon running? set --socket or STRATA_SOCKET)"
    )]
    Connect { socket: PathBuf, source: io::Error },
    #[error("talking to stratad: {0}")]
    Http(#[from] hyper::Error),
    #[error("building request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The daemon refused the request; the message is its one-line reason.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    #[error("unexpected answer from stratad: {0}")]
    Decode(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

type Body = BoxBody<Bytes, io::Error>;

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
pub fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request on a fresh connection; returns the response once its status is 2xx.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<Response<Incoming>, ClientError> {
        self.send_with_type(method, path, body, "application/octet-stream")
            .await
    }

    /// A fresh HTTP/1.1 connection to the daemon (upgrades allowed, for exec).
    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<Body>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
        Ok(sender)
    }

    async fn send_with_type(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: &str,
    ) -> Result<Response<Incoming>, ClientError> {
        let mut sender = self.connect().await?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "stratad")
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(body)?;
        let response = sender.send_request(request).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(api_error(response).await)
    }

    /// A request without a body whose answer is JSON.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, ClientError> {
        let response = self.send(method, path, empty()).await?;
        let bytes = response.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// A request without a body; the answer's bytes as they came (for `--json`, which prints
    /// the daemon's JSON without parsing it).
    pub async fn bytes(&self, method: Method, path: &str) -> Result<Bytes, ClientError> {
        let response = self.send(method, path, empty()).await?;
        Ok(response.into_body().collect().await?.to_bytes())
    }

    /// `METHOD route?ref=REFERENCE<extra>` (the reference percent-encoded), answered with JSON.
    pub async fn on_ref(
        &self,
        method: Method,
        route: &str,
        reference: &str,
        extra: &str,
    ) -> Result<serde_json::Value, ClientError> {
        self.value(
            method,
            &format!("{route}?ref={}{extra}", encode_query(reference)),
        )
        .await
    }

    /// A request without a body whose answer is JSON, kept as a JSON value (for `--json`).
    pub async fn value(
        &self,
        method: Method,
        path: &str,
    ) -> Result<serde_json::Value, ClientError> {
        self.json(method, path).await
    }
}

/// The daemon's one-line reason from an error response.
async fn api_error(response: Response<Incoming>) -> ClientError {
    let status = response.status();
    let bytes = match response.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return ClientError::Http(e),
    };
    let message = serde_json::from_slice::<ErrorBody>(&bytes).map_or_else(
        |_| format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
        |b| b.message,
    );
    ClientError::Api { status, message }
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

impl Client {
    /// Upgrades a fresh connection (`POST path`) to `protocol` and hands the daemon `fds`
    /// (`SCM_RIGHTS`); returns the connection, in blocking mode, for the daemon's answer.
    async fn upgrade_with_fds(
        &self,
        path: &str,
        protocol: &'static str,
        fds: &[RawFd],
    ) -> Result<std::os::unix::net::UnixStream, ClientError> {
        let mut sender = self.connect().await?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("host", "stratad")
            .header(hyper::header::CONNECTION, "upgrade")
            .header(hyper::header::UPGRADE, protocol)
            .body(empty())?;
        let response = sender.send_request(request).await?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(api_error(response).await);
        }
        let upgraded = hyper::upgrade::on(response).await?;
        let parts = upgraded
            .downcast::<TokioIo<UnixStream>>()
            .map_err(|_| ClientError::Decode(format!("{protocol}: not a unix socket")))?;
        let stream = parts.io.into_inner().into_std()?;
        stream.set_nonblocking(false)?;
        crate::fdpass::send_fds(stream.as_raw_fd(), fds)?;
        Ok(stream)
    }

    /// Starts an exec: hands the daemon this process's stdin, stdout and stderr, and waits for
    /// the command's exit code.
    pub async fn exec(&self, path: &str) -> Result<i32, ClientError> {
        use crate::api::containers::{EXEC_PROTOCOL, ExecOutcome};
        let stream = self
            .upgrade_with_fds(path, EXEC_PROTOCOL, &[0, 1, 2])
            .await?;
        let outcome = tokio::task::spawn_blocking(move || -> Result<ExecOutcome, ClientError> {
            let mut line = String::new();
            std::io::BufReader::new(&stream).read_line(&mut line)?;
            serde_json::from_str(&line).map_err(|_| {
                ClientError::Decode("the daemon closed the exec without an exit code".into())
            })
        })
        .await
        .map_err(|e| ClientError::Decode(e.to_string()))??;
        match outcome {
            ExecOutcome::Exited { code } => Ok(code),
            ExecOutcome::Error { message } => Err(ClientError::Api {
                status: StatusCode::BAD_REQUEST,
                message,
            }),
        }
    }

    /// Imports the archive that `archive` reads (a file or a pipe; the daemon reads it
    /// itself). `on_progress` sees each progress event; the answer is the imported images, or
    /// the daemon's reason for refusing the archive.
    pub async fn import_fd(
        &self,
        archive: BorrowedFd<'_>,
        mut on_progress: impl FnMut(&ImportEvent) + Send + 'static,
    ) -> Result<Vec<ImportedImage>, ClientError> {
        use crate::api::images::IMPORT_FD_PROTOCOL;
        let stream = self
            .upgrade_with_fds(
                "/v1/images/import-fd",
                IMPORT_FD_PROTOCOL,
                &[archive.as_raw_fd()],
            )
            .await?;
        tokio::task::spawn_blocking(move || {
            for line in std::io::BufReader::new(&stream).lines() {
                match serde_json::from_str::<ImportEvent>(&line?) {
                    Ok(event @ ImportEvent::Progress { .. }) => on_progress(&event),
                    Ok(ImportEvent::Imported { images }) => return Ok(images),
                    Ok(ImportEvent::Error { message }) => {
                        return Err(ClientError::Api {
                            status: StatusCode::BAD_REQUEST,
                            message,
                        });
                    }
                    Err(e) => return Err(ClientError::Decode(e.to_string())),
                }
            }
            Err(ClientError::Decode(
                "the daemon closed the import without an answer".into(),
            ))
        })
        .await
        .map_err(|e| ClientError::Decode(e.to_string()))?
    }

    /// A request with a JSON body whose answer is JSON.
    pub async fn post_json(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<serde_json::Value, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        let body = http_body_util::Full::new(Bytes::from(bytes))
            .map_err(|never| match never {})
            .boxed();
        let response = self
            .send_with_type(Method::POST, path, body, "application/json")
            .await?;
        let bytes = response.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }
}
