//! `/` and the site password: how a visitor gets a container.
//!
//! Ephemeral mode (tmpnb, 2i2c ephemeral hubs): `/` hands the visitor a warm
//! container bound to a new anonymous session and redirects into it. With
//! `NBGATE_ACCESS_PASSWORD`, one form is asked once per browser, first.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::auth::{session, xsrf};
use crate::config::AuthMode;
use crate::db;
use crate::proxy::routes::{now_secs, Route, SessionHash};
use crate::web::form::HubForm;
use crate::web::next::safe_next;
use crate::web::pages::{redirect, render, AccessPage, MessagePage};
use crate::web::Peer;

/// How long a visit waits for a warm container (the pool refilling after a
/// burst) before answering with a page that keeps trying.
const VISIT_WAIT: Duration = Duration::from_secs(30);

pub async fn root(State(app): State<App>, headers: HeaderMap) -> Response {
    if !access_granted(&app, &headers) {
        return redirect("/hub/access?next=/");
    }
    match app.config.auth {
        AuthMode::Accounts => redirect("/hub/home"),
        AuthMode::Ephemeral => visit(&app, &headers).await,
    }
}

async fn visit(app: &App, headers: &HeaderMap) -> Response {
    let tls = app.config.tls();
    let now = now_secs() as i64;
    // A visitor who already has a live container goes back to it.
    let mut existing: Option<SessionHash> = None;
    for hash in session::presented(headers, tls) {
        match db::sessions::find(&app.db, &hash, now).await {
            Ok(Some(row)) => {
                if let Some(route) = row
                    .slot_id
                    .as_deref()
                    .and_then(crate::slot::SlotId::parse)
                    .and_then(|s| app.routes.get(&s))
                {
                    if route.owner_of([hash]).is_some() {
                        return redirect(&landing(app, &route));
                    }
                }
                existing = Some(hash);
                break;
            }
            Ok(None) => {}
            Err(e) => return internal(e),
        }
    }
    if !app.pool.docker_up_within(Duration::from_secs(5)).await {
        return crate::web::pages::restarting();
    }
    let full = app.pool.full(app.config.max_containers, app.routes.len() as u32);
    let warm = if full { None } else { app.pool.acquire(VISIT_WAIT, VISIT_WAIT).await };
    let Some(taken) = warm else {
        if !app.pool.docker_up() {
            return crate::web::pages::restarting();
        }
        if app.pool.blocked_by_full_disk() {
            return crate::web::pages::disk_full(("/", "Try again"));
        }
        if !app.pool.full(app.config.max_containers, app.routes.len() as u32) {
            // Not full, just starting: say so, and keep trying.
            let page = MessagePage::new(
                "Starting a notebook server for you…",
                "Servers are starting for everyone who just arrived. This page takes you in as soon as yours is ready.",
            )
            .refresh(2);
            return with_retry_after(render(StatusCode::OK, &page), 2);
        }
        app.metrics.visits_full.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let page = MessagePage::new(
            "No free notebook server right now",
            "Every notebook server is in use. One frees up when someone leaves or goes idle; \
             this page keeps trying and takes you in as soon as one is free.",
        )
        .refresh(5);
        return with_retry_after(render(StatusCode::OK, &page), 5);
    };

    let (cookie_value, hash) = match existing {
        Some(h) => (None, h),
        None => {
            let (v, h) = session::new_session();
            (Some(v), h)
        }
    };
    let expires = now + app.config.max_age.as_secs() as i64;
    let warm = &taken.warm;
    if let Err(e) =
        db::sessions::assign_slot(&app.db, &hash, None, warm.slot.as_str(), &warm.container_id, now, expires)
            .await
    {
        // Never handed out: it can go back to the pool.
        app.pool.push_warm(warm.clone());
        return internal(e);
    }
    let route = Arc::new(Route::new(
        warm.slot.clone(),
        warm.container_id.clone(),
        warm.upstream,
        &warm.token,
        None,
        now as u64,
    ));
    route.add_owner(hash);
    app.routes.insert(route.clone());
    crate::pool::supervise::promote(app, &route.container_id);
    // Now the route counts against the cap instead of the taken container.
    drop(taken);
    app.metrics.visits_assigned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(slot = %route.slot, "visitor assigned a warm container");
    let mut resp = redirect(&landing(app, &route));
    if let Some(v) = cookie_value {
        resp.headers_mut().append(
            header::SET_COOKIE,
            session::set_cookie(session::session_cookie(tls), &v, Some(app.config.max_age), tls),
        );
    }
    resp
}

/// `/user/<slot>/lab` (the configured default URL).
fn landing(app: &App, route: &Route) -> String {
    format!("/user/{}{}", route.slot, app.config.default_url)
}

fn with_retry_after(mut resp: Response, seconds: u32) -> Response {
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    resp
}

fn internal(e: impl std::fmt::Display) -> Response {
    crate::web::pages::failure("visit failed", e, ("/", "Try again"))
}

// ---- site password ----

fn access_cookie(tls: bool) -> &'static str {
    if tls {
        "__Host-nbgate-access"
    } else {
        "nbgate-access"
    }
}

/// The access cookie's value: bound to the current password, so changing the
/// password locks out every browser that knew the old one.
fn access_value(app: &App, password: &str) -> String {
    xsrf::token(&app.cookie_secret, &format!("access:{}", hex::encode(Sha256::digest(password.as_bytes()))))
}

pub fn access_granted(app: &App, headers: &HeaderMap) -> bool {
    let Some(password) = &app.config.access_password else { return true };
    let want = access_value(app, password.expose());
    session::cookie_values(headers, access_cookie(app.config.tls()))
        .any(|v| bool::from(v.as_bytes().ct_eq(want.as_bytes())))
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn access_form(State(app): State<App>, headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    let next = q.next.as_deref().and_then(safe_next).unwrap_or_else(|| "/".into());
    if app.config.access_password.is_none() || access_granted(&app, &headers) {
        return redirect(&next);
    }
    access_page(&app, &headers, next, None, StatusCode::OK)
}

fn access_page(
    app: &App,
    headers: &HeaderMap,
    next: String,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let tls = app.config.tls();
    let (browser_id, fresh) = crate::web::browser_id(headers, tls);
    let page = AccessPage { xsrf: xsrf::token(&app.cookie_secret, &browser_id), next, error };
    let mut resp = render(status, &page);
    if fresh {
        resp.headers_mut().append(
            header::SET_COOKIE,
            session::set_cookie(
                xsrf::browser_cookie(tls),
                &browser_id,
                Some(Duration::from_secs(30 * 86400)),
                tls,
            ),
        );
    }
    resp
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AccessForm {
    #[serde(rename = "_xsrf")]
    xsrf: String,
    password: String,
    next: String,
}

pub async fn access_submit(
    State(app): State<App>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    HubForm(form): HubForm<AccessForm>,
) -> Response {
    let Some(password) = app.config.access_password.clone() else { return redirect("/") };
    let tls = app.config.tls();
    if !crate::web::form_allowed(&app, &headers, &form.xsrf) {
        return crate::web::forbidden_form();
    }
    let next = safe_next(&form.next).unwrap_or_else(|| "/".into());
    if let Some(wait) = app.access_throttle.blocked(peer.ip()) {
        let msg = format!(
            "Too many wrong passwords from your address. Try again in {} seconds.",
            wait.as_secs().max(1)
        );
        return access_page(&app, &headers, next, Some(msg), StatusCode::TOO_MANY_REQUESTS);
    }
    // Compare digests: constant time whatever the lengths.
    let ok = bool::from(
        Sha256::digest(form.password.as_bytes()).ct_eq(&Sha256::digest(password.expose().as_bytes())),
    );
    if !ok {
        app.access_throttle.failed(peer.ip());
        return access_page(
            &app,
            &headers,
            next,
            Some("That is not the site password.".into()),
            StatusCode::UNAUTHORIZED,
        );
    }
    app.access_throttle.succeeded(peer.ip());
    let mut resp = redirect(&next);
    resp.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(
            access_cookie(tls),
            &access_value(&app, password.expose()),
            Some(Duration::from_secs(7 * 86400)),
            tls,
        ),
    );
    resp
}
