//! The Toxiproxy 2.x HTTP API over the [`Registry`]: same paths, JSON shapes and statuses.
//!
//! Bodies are taken as bytes and parsed by `model`, not by axum's `Json` extractor, so a bad body
//! gets Toxiproxy's `{"error","status"}` answer rather than axum's plain-text rejection.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::error::ApiError;
use crate::model::{ProxyConfig, ProxyPatch, Toxic};
use crate::registry::Registry;

type Shared = State<Arc<Registry>>;
type ApiResult = Result<Response, ApiError>;

/// The version `GET /version` reports, in the JSON shape of Toxiproxy 2.7+.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/reset", post(reset))
        .route("/populate", post(populate))
        .route("/proxies", get(list_proxies).post(create_proxy))
        .route(
            "/proxies/{proxy}",
            get(get_proxy).post(update_proxy).delete(delete_proxy),
        )
        .route(
            "/proxies/{proxy}/toxics",
            get(list_toxics).post(create_toxic),
        )
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            get(get_toxic).post(update_toxic).delete(delete_toxic),
        )
        .with_state(registry)
}

async fn version() -> Response {
    Json(serde_json::json!({ "version": VERSION })).into_response()
}

async fn reset(State(registry): Shared) -> ApiResult {
    registry.reset().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn populate(State(registry): Shared, body: Bytes) -> ApiResult {
    let configs = ProxyConfig::parse_list(&body)?;
    let proxies = registry.populate(configs).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "proxies": proxies })),
    )
        .into_response())
}

async fn list_proxies(State(registry): Shared) -> ApiResult {
    Ok(Json(registry.list()).into_response())
}

async fn create_proxy(State(registry): Shared, body: Bytes) -> ApiResult {
    let config = ProxyConfig::parse(&body)?;
    let view = registry.create(config).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn get_proxy(State(registry): Shared, Path(proxy): Path<String>) -> ApiResult {
    Ok(Json(registry.get(&proxy)?).into_response())
}

async fn update_proxy(
    State(registry): Shared,
    Path(proxy): Path<String>,
    body: Bytes,
) -> ApiResult {
    // Toxiproxy looks the proxy up before reading the body: 404 wins over 400.
    registry.get(&proxy)?;
    let patch = ProxyPatch::parse(&body)?;
    Ok(Json(registry.update(&proxy, patch).await?).into_response())
}

async fn delete_proxy(State(registry): Shared, Path(proxy): Path<String>) -> ApiResult {
    registry.delete(&proxy).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_toxics(State(registry): Shared, Path(proxy): Path<String>) -> ApiResult {
    Ok(Json(registry.toxics(&proxy)?).into_response())
}

async fn create_toxic(
    State(registry): Shared,
    Path(proxy): Path<String>,
    body: Bytes,
) -> ApiResult {
    registry.get(&proxy)?;
    let toxic = Toxic::parse_new(&body)?;
    Ok(Json(registry.add_toxic(&proxy, toxic)?).into_response())
}

async fn get_toxic(
    State(registry): Shared,
    Path((proxy, toxic)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(registry.toxic(&proxy, &toxic)?).into_response())
}

async fn update_toxic(
    State(registry): Shared,
    Path((proxy, toxic)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    Ok(Json(registry.update_toxic(&proxy, &toxic, &body)?).into_response())
}

async fn delete_toxic(
    State(registry): Shared,
    Path((proxy, toxic)): Path<(String, String)>,
) -> ApiResult {
    registry.remove_toxic(&proxy, &toxic)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
