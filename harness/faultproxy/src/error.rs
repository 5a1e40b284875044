//! Errors at the crate boundary: [`Error`] for starting and running the server, [`ApiError`] for one
//! API call, carrying Toxiproxy's own texts and statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why the server could not start or stopped early. Messages read after "failed to".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("start the data-plane runtime")]
    Runtime(#[source] std::io::Error),
    #[error("serve the HTTP API")]
    Serve(#[source] std::io::Error),
    #[error("read the proxy config {path}")]
    ConfigRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("load the proxy config: {0}")]
    Config(#[source] ApiError),
}

/// One API call's failure, answered as `{"error": <message>, "status": <code>}` like Toxiproxy.
/// The texts of the unit variants are Toxiproxy's, so clients matching on them keep working.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("proxy not found")]
    ProxyNotFound,
    #[error("toxic not found")]
    ToxicNotFound,
    #[error("proxy already exists")]
    ProxyAlreadyExists,
    #[error("toxic already exists")]
    ToxicAlreadyExists,
    #[error("missing required field")]
    MissingField,
    #[error("stream was invalid, can be either upstream or downstream")]
    InvalidStream,
    #[error("invalid toxic type")]
    InvalidToxicType,
    #[error("bad request body: {0}")]
    BadRequestBody(String),
    /// A toxic type added to a proxy whose protocol it does not act on (e.g. `loss` on TCP).
    #[error("toxic type {type_name} does not act on a {protocol} proxy")]
    ToxicProtocol {
        type_name: &'static str,
        protocol: &'static str,
    },
    /// The listen address could not be resolved or bound; Toxiproxy answers 500 here too.
    #[error("listen {listen}: {message}")]
    Listen { listen: String, message: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::ProxyNotFound | ApiError::ToxicNotFound => StatusCode::NOT_FOUND,
            ApiError::ProxyAlreadyExists | ApiError::ToxicAlreadyExists => StatusCode::CONFLICT,
            ApiError::MissingField
            | ApiError::InvalidStream
            | ApiError::InvalidToxicType
            | ApiError::BadRequestBody(_)
            | ApiError::ToxicProtocol { .. } => StatusCode::BAD_REQUEST,
            ApiError::Listen { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.to_string(), "status": status.as_u16() });
        (status, axum::Json(body)).into_response()
    }
}
