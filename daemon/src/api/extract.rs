//! Request extractors whose refusals are [`ApiError`]s: a JSON body `{"message": ...}` with 400
//! (or 413 for a body over [`JSON_BODY_LIMIT`]), whatever was wrong: malformed JSON, a missing
//! or unknown field, a wrong type, a bad query string. axum's own extractors answer some of
//! these with 422 and a plain-text body.

use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

/// The largest JSON request body accepted. Archives (image import) are streamed and exempt.
pub const JSON_BODY_LIMIT: usize = 1 << 20;

/// A JSON request body.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(JsonRejection::BytesRejection(BytesRejection::FailedToBufferBody(e)))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over {JSON_BODY_LIMIT} bytes"),
                ))
            }
            Err(e) => Err(ApiError::bad_request(format!(
                "invalid request body: {}",
                e.body_text()
            ))),
        }
    }
}

/// A query string.
#[derive(Debug)]
pub(crate) struct Params<T>(pub T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|e: QueryRejection| {
                ApiError::bad_request(format!("invalid query: {}", e.body_text()))
            })
    }
}
