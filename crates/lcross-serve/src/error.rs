//! Errors: start-up errors (`ServeError`) and request errors answered in OpenAI's
//! error shape (`ApiError`): `{"error": {"message", "type", "param", "code"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A `--vector` that cannot be served by this model (or cannot be read).
    #[error("vector `{name}` ({path}): {reason}")]
    Vector { name: String, path: String, reason: String },
    /// A bad option.
    #[error("{0}")]
    Invalid(String),
    /// The address cannot be listened on (in use, not this machine's, no permission).
    #[error("cannot listen on {addr}: {source}{}", if source.kind() == std::io::ErrorKind::AddrInUse { " (another program is serving there: stop it, or pick another --port)" } else { "" })]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Model(#[from] lcross_model::ModelError),
}

/// A request error with its HTTP status, in OpenAI's wire format.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's error `type`: `invalid_request_error`, `not_found_error`,
    /// `rate_limit_error`, `server_error`.
    pub kind: &'static str,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, `context_length_exceeded`, ...).
    pub code: Option<&'static str>,
    /// Seconds the client should wait (429 / 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 400 invalid request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into(), kind: "invalid_request_error", param: None, code: None, retry_after: None }
    }

    /// 400 about one field.
    pub fn field(param: &str, message: impl Into<String>) -> Self {
        Self { param: Some(param.to_string()), ..Self::invalid(message) }
    }

    /// 422: the request was valid but its numbers overflowed while generating (a steering
    /// too strong for the model's dtype).
    pub fn non_finite(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some("steering".into()),
            code: Some("non_finite_logits"),
            retry_after: None,
        }
    }

    /// 404 with a code.
    pub fn not_found(message: impl Into<String>, code: &'static str) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.into(), kind: "not_found_error", param: None, code: Some(code), retry_after: None }
    }

    /// 413: the body is over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body is larger than the server's limit of {limit} bytes"),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
            retry_after: None,
        }
    }

    /// 408: the body did not arrive in time.
    pub fn body_timeout(after: std::time::Duration) -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!("the request body did not arrive within {} s", after.as_secs_f64()),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_timeout"),
            retry_after: None,
        }
    }

    /// 429: every slot and queue place is taken.
    pub fn busy(capacity: usize) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("the server is busy ({capacity} requests running or queued); retry later"),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
            retry_after: Some(1),
        }
    }

    /// 500 / 503.
    pub fn server(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind: "server_error", param: None, code: None, retry_after: None }
    }

    /// With a code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
