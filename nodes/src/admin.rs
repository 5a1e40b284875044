//! The HTTP admin API every node serves on [`crate::cluster::ADMIN_PORT`]: `GET /status` (the node's view,
//! which the harness probes) and `POST /admin/<command>` (operator commands), the latter only with
//! `Authorization: Bearer <admin token>`; a request without a valid token gets 401 and changes nothing.
//!
//! Each role builds its own [`AdminApi`]: a status function and the commands it understands.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

/// The answer of an operator command: a status code and a JSON body (`{"error": …}` on refusal).
pub type CommandResult = Result<Value, (StatusCode, String)>;
type StatusFn = Arc<dyn Fn() -> Value + Send + Sync>;
type CommandFn =
    Arc<dyn Fn(Value) -> Pin<Box<dyn Future<Output = CommandResult> + Send>> + Send + Sync>;

/// A role's admin API: what `/status` shows and which commands `/admin/<name>` runs.
#[derive(Clone)]
pub struct AdminApi {
    token: Arc<str>,
    status: StatusFn,
    commands: BTreeMap<String, CommandFn>,
}

impl AdminApi {
    /// An API whose `/status` answers `status()`; commands need `Bearer <token>`.
    pub fn new(token: &str, status: impl Fn() -> Value + Send + Sync + 'static) -> Self {
        AdminApi {
            token: Arc::from(token),
            status: Arc::new(status),
            commands: BTreeMap::new(),
        }
    }

    /// Adds `POST /admin/<name>`: the JSON body goes to `run`.
    pub fn command<F, Fut>(mut self, name: &str, run: F) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CommandResult> + Send + 'static,
    {
        self.commands
            .insert(name.to_string(), Arc::new(move |body| Box::pin(run(body))));
        self
    }

    /// The axum router serving this API.
    pub fn router(self) -> Router {
        Router::new()
            .route("/status", get(status))
            .route("/admin/{command}", post(command))
            .with_state(Arc::new(self))
    }

    /// Serves the API on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

async fn status(State(api): State<Arc<AdminApi>>) -> Json<Value> {
    Json((api.status)())
}

async fn command(
    State(api): State<Arc<AdminApi>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // A comparison that does not stop at the first differing byte.
    if !presented.is_some_and(|t| bool::from(t.as_bytes().ct_eq(api.token.as_bytes()))) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "a valid bearer token is required"})),
        )
            .into_response();
    }
    let Some(run) = api.commands.get(&name) else {
        let known: Vec<&String> = api.commands.keys().collect();
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("unknown command `{name}`; this node knows {known:?}")})),
        )
            .into_response();
    };
    match run(body.map(|Json(b)| b).unwrap_or(Value::Null)).await {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err((code, message)) => (code, Json(json!({"error": message}))).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(addr: std::net::SocketAddr, req: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn commands_need_the_token_and_status_does_not() {
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        let api = AdminApi::new("s3cret", || json!({"role": "test"})).command("poke", move |_| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(json!({"poked": true}))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(api.serve(listener, std::future::pending()));
        let status = call(
            addr,
            "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            status.starts_with("HTTP/1.1 200") && status.contains("\"role\":\"test\""),
            "{status}"
        );
        for auth in [
            "",
            "Authorization: Bearer wrong\r\n",
            "Authorization: s3cret\r\n",
        ] {
            let r = call(addr, &format!("POST /admin/poke HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\nContent-Length: 0\r\n\r\n")).await;
            assert!(r.starts_with("HTTP/1.1 401"), "{auth:?} gave {r}");
        }
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "a refused request changes nothing"
        );
        let ok = call(addr, "POST /admin/poke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        let unknown = call(addr, "POST /admin/nope HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").await;
        assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    }
}
