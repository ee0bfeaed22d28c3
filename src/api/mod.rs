//! `/hub/api/*`: JSON for scripts. `me/*` is for the signed-in browser (the
//! banner inside JupyterLab); it authenticates by the session cookie and
//! checks the origin of every POST.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{HeaderMap, StatusCode};
use serde::Serialize;

use crate::app::App;
use crate::auth::{session, xsrf};
use crate::culler::{seconds_left, Observation};
use crate::proxy::routes::{now_millis, now_secs, Route};

/// The route the request's session holds, if any.
pub async fn my_route(app: &App, headers: &HeaderMap) -> Option<Arc<Route>> {
    let now = now_secs() as i64;
    for hash in session::presented(headers, app.config.tls()) {
        let Ok(Some(row)) = crate::db::sessions::find(&app.db, &hash, now).await else { continue };
        let route =
            row.slot_id.as_deref().and_then(crate::slot::SlotId::parse).and_then(|s| app.routes.get(&s));
        if let Some(route) = route.filter(|r| r.owner_of([hash]).is_some()) {
            return Some(route);
        }
    }
    None
}

/// "Your server stopped at 14:02 after 10 minutes idle. …" for the request's
/// session, if its server stopped for a reason worth telling.
pub async fn stop_message(app: &App, headers: &HeaderMap) -> Option<String> {
    for hash in session::presented(headers, app.config.tls()) {
        if let Ok(Some((reason, at))) = crate::db::sessions::stop_note(&app.db, &hash).await {
            let files = match app.config.auth {
                crate::config::AuthMode::Accounts => " Your files in ~/work are safe.",
                crate::config::AuthMode::Ephemeral => "",
            };
            return Some(format!("{}{files}", crate::recycle::sentence(&reason, at)));
        }
    }
    None
}

#[derive(Serialize)]
pub struct ServerStatus {
    pub running: bool,
    pub seconds_left: Option<u64>,
    /// Time to tell the user.
    pub warning: bool,
    /// The stop ahead is the max-age limit (no "keep" possible).
    pub max_age: bool,
    pub notice: Option<String>,
}

/// How long before a stop the user is warned: five minutes, or half the idle
/// timeout when that is shorter.
pub fn warn_before(idle_timeout: Duration) -> Duration {
    (idle_timeout / 2).min(Duration::from_secs(300))
}

pub fn status_of(app: &App, route: &Route) -> ServerStatus {
    let o = Observation {
        now_ms: now_millis(),
        last_activity_ms: route.last_activity_millis(),
        assigned_at_s: route.assigned_at,
        expired: false,
    };
    let left = seconds_left(&o, app.config.idle_timeout, app.config.max_age);
    let warn = warn_before(app.config.idle_timeout).as_secs();
    ServerStatus {
        running: true,
        seconds_left: left.map(|(s, _)| s),
        warning: left.is_none_or(|(s, _)| s <= warn),
        max_age: left.is_some_and(|(_, age)| age),
        notice: route.notice(),
    }
}

pub async fn me_server(State(app): State<App>, headers: HeaderMap) -> Response {
    match my_route(&app, &headers).await {
        Some(route) => Json(status_of(&app, &route)).into_response(),
        None => Json(ServerStatus {
            running: false,
            seconds_left: None,
            warning: false,
            max_age: false,
            notice: None,
        })
        .into_response(),
    }
}

/// "Keep my server": counts as activity.
pub async fn me_keepalive(State(app): State<App>, headers: HeaderMap) -> Response {
    if !xsrf::same_origin(&headers, app.config.tls()) {
        return (StatusCode::FORBIDDEN, "cross-origin request\n").into_response();
    }
    match my_route(&app, &headers).await {
        Some(route) => {
            route.touch();
            StatusCode::NO_CONTENT.into_response()
        }
        None => (StatusCode::NOT_FOUND, "no running server\n").into_response(),
    }
}

// ---- admin API: `Authorization: token <api token>` ----

/// Whether the request carries a live API token (`nbgate token create`).
async fn token_ok(app: &App, headers: &HeaderMap) -> bool {
    let Some(token) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("token ").or_else(|| v.strip_prefix("Bearer ")))
    else {
        return false;
    };
    let hash = crate::auth::keys::key_hash(token);
    crate::db::admin::token_valid(&app.db, &hash).await.unwrap_or(false)
}

fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, Json(serde_json::json!({"error": "a valid API token is required"})))
        .into_response()
}

#[derive(Serialize)]
pub struct UserInfo {
    pub name: Option<String>,
    pub admin: bool,
    pub running: bool,
    pub slot: Option<String>,
    pub idle_seconds: Option<u64>,
    pub expires_at: Option<i64>,
    pub volume: String,
}

pub async fn users(State(app): State<App>, headers: HeaderMap) -> Response {
    if !token_ok(&app, &headers).await {
        return forbidden();
    }
    let Ok(rows) = crate::db::users::list(&app.db).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({"error": "database"})))
            .into_response();
    };
    let out: Vec<UserInfo> = rows
        .into_iter()
        .map(|u| {
            let route = app.routes.by_user(u.id);
            UserInfo {
                name: u.username,
                admin: u.is_admin != 0,
                running: route.is_some(),
                slot: route.as_ref().map(|r| r.slot.to_string()),
                idle_seconds: route
                    .as_ref()
                    .map(|r| now_millis().saturating_sub(r.last_activity_millis()) / 1000),
                expires_at: u.expires_at,
                volume: u.volume,
            }
        })
        .collect();
    Json(out).into_response()
}

pub async fn pool(State(app): State<App>, headers: HeaderMap) -> Response {
    if !token_ok(&app, &headers).await {
        return forbidden();
    }
    Json(serde_json::json!({
        "warm": app.pool.counts().warm,
        "assigned": app.routes.len(),
        "cap": app.config.max_containers,
        "queued": app.binder.queue_len(),
        "docker": app.pool.docker_up(),
    }))
    .into_response()
}

pub async fn stop_user(
    State(app): State<App>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    if !token_ok(&app, &headers).await {
        return forbidden();
    }
    let Ok(name) = crate::auth::password::Username::parse(&name) else {
        return (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "no such user"}))).into_response();
    };
    match crate::db::users::by_name_hash(&app.db, &name.sha256_hex()).await {
        Ok(Some(u)) => {
            crate::pool::supervise::recycle_user(&app, u.id, &crate::recycle::Reason::Admin).await;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "no such user"}))).into_response(),
    }
}

#[derive(serde::Deserialize)]
pub struct Announcement {
    pub text: Option<String>,
}

pub async fn announcement(State(app): State<App>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !token_ok(&app, &headers).await {
        return forbidden();
    }
    let Ok(a) = serde_json::from_slice::<Announcement>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "expected {\"text\": \"…\"} or {\"text\": null}"})),
        )
            .into_response();
    };
    let text: Option<String> = a
        .text
        .map(|t| t.trim().chars().filter(|c| !c.is_control()).take(500).collect())
        .filter(|t: &String| !t.is_empty());
    match app.set_announcement(text.as_deref()).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({"error": "database"})))
            .into_response(),
    }
}
