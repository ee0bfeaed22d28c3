//! `GET /hub/health`: liveness for load balancers and organizers.

use axum::extract::State;
use axum::Json;
use http::StatusCode;
use serde::Serialize;

use crate::app::App;

#[derive(Serialize)]
pub struct Health {
    /// `ok`, or `degraded` while Docker does not answer or a full disk stops starts.
    pub status: &'static str,
    pub docker: DockerState,
    pub pool: PoolCounts,
}

#[derive(Serialize)]
pub struct DockerState {
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, Default)]
pub struct PoolCounts {
    pub warm: u32,
    pub assigned: u32,
    pub cap: u32,
    /// Why the last container start failed, until one succeeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_error: Option<String>,
}

pub async fn health(State(app): State<App>) -> (StatusCode, Json<Health>) {
    let docker = match app.docker.ping().await {
        Ok(()) => DockerState { reachable: true, error: None },
        Err(e) => DockerState { reachable: false, error: Some(e.to_string()) },
    };
    let counts = app.pool.counts();
    let pool = PoolCounts {
        warm: counts.warm,
        assigned: app.routes.len() as u32,
        cap: app.config.max_containers,
        start_error: app.pool.start_error(),
    };
    // A full disk stops every new server until someone frees space: as
    // urgent for an organizer as Docker being away.
    let (code, status) = if docker.reachable && !app.pool.blocked_by_full_disk() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "degraded")
    };
    (code, Json(Health { status, docker, pool }))
}

/// `GET /hub/metrics`: Prometheus text.
pub async fn metrics(State(app): State<App>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let counts = app.pool.counts();
    let gauges = crate::metrics::PoolGauges {
        warm: counts.warm as u64,
        assigned: app.routes.len() as u64,
        cap: app.config.max_containers as u64,
        queued: app.binder.queue_len() as u64,
        docker_up: app.pool.docker_up(),
    };
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.metrics.render(&gauges))
        .into_response()
}
