//! The admin HTTP listener (`[admin] listen`): Prometheus metrics, liveness, readiness
//! and an address-map reload.
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | the broker's metrics, Prometheus text format 0.0.4 |
//! | `GET /healthz` | `200 ok` while the process runs |
//! | `GET /readyz` | `200` when every configured adapter is connected or listening, else `503` with the ones that are not (JSON) |
//! | `POST /reload` | reads the configuration file again and replaces the address map, like SIGHUP: `200` with the reload counts, or `422` problem JSON when the file is rejected (the current map stays) |
//!
//! The listener has no authentication: bind it to loopback or a private network.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use cpim_broker::BrokerHandle;

use crate::serve::{self, ReloadStatus};

/// What the admin routes work on.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The running broker.
    pub broker: BrokerHandle,
    /// The configured adapters' names (readiness).
    pub adapters: Vec<String>,
    /// The configuration file (reload).
    pub config: PathBuf,
    /// Reload outcomes, shared with the SIGHUP handler.
    pub reloads: watch::Sender<ReloadStatus>,
    /// One reload at a time.
    pub reloading: Arc<Mutex<()>>,
}

/// The admin listener's limits: a scraper, a load balancer's health checks and an
/// operator need few connections; these keep it answering under a flood (issue 13).
pub const ADMIN_LIMITS: cpim_webhook::listener::HttpLimits = cpim_webhook::listener::HttpLimits {
    max_connections: 32,
    max_per_ip: 8,
    header_timeout: std::time::Duration::from_secs(10),
    idle_timeout: std::time::Duration::from_secs(60),
};

/// Binds `listen` and serves the admin routes until `shutdown` becomes true.
pub async fn start(
    listen: SocketAddr,
    state: AdminState,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let listener = cpim_webhook::listener::LimitedListener::new(listener, ADMIN_LIMITS, "admin");
    let app = router(state);
    let task = tokio::spawn(async move {
        let stop = async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(%error, "admin listener failed");
        }
    });
    tracing::info!(%bound, "admin HTTP listening");
    Ok((bound, task))
}

/// The routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/reload", post(reload))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.broker.metrics().render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let metrics = state.broker.metrics();
    let not_ready: Vec<&String> = state
        .adapters
        .iter()
        .filter(|a| !metrics.adapter(a).is_connected())
        .collect();
    let body = serde_json::json!({
        "ready": not_ready.is_empty(),
        "adapters": state.adapters,
        "not_ready": not_ready,
    });
    let status = if not_ready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn reload(State(state): State<AdminState>) -> Response {
    let _one = state.reloading.lock().await;
    match serve::reload_recorded(&state.config, &state.broker, &state.reloads, "admin").await {
        Ok(counts) => (
            StatusCode::OK,
            Json(serde_json::json!({
                "status": "reloaded",
                "applied": counts.applied,
                "rejected": counts.rejected,
            })),
        )
            .into_response(),
        Err(detail) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            [(header::CONTENT_TYPE, "application/problem+json")],
            serde_json::json!({
                "type": "about:blank",
                "title": "reload rejected",
                "status": 422,
                "detail": detail.to_string(),
            })
            .to_string(),
        )
            .into_response(),
    }
}
