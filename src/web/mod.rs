//! The `/hub/*` routes and `/`. Every state-changing form checks `_xsrf` and
//! the request's origin (SECURITY.md #2).

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::{HeaderMap, StatusCode};

use crate::app::App;
use crate::auth::{session, xsrf};

pub mod account;
mod admin;
pub mod form;
mod health;
pub mod next;
pub mod pages;
mod visit;

/// The client's socket address, added to every request by the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Largest form body accepted; anything bigger is a 413 at once.
const FORM_LIMIT: usize = 16 * 1024;

pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(visit::root))
        .route("/hub/access", get(visit::access_form).post(visit::access_submit))
        .route("/hub/health", get(health::health))
        .route("/hub/metrics", get(health::metrics))
        .route("/hub/login", get(account::login_form).post(account::login_submit))
        .route("/hub/register", get(account::register_form).post(account::register_submit))
        .route("/hub/logout", get(account::logout_get).post(account::logout_post))
        .route("/hub/home", get(account::home))
        .route("/hub/spawn", get(account::spawn))
        .route("/hub/spawn-pending", get(account::spawn_pending))
        .route("/hub/restart", post(account::restart))
        .route("/hub/password", post(account::change_password))
        .route("/hub/user-redirect/{*path}", get(account::user_redirect))
        .route("/hub/admin", get(admin::page))
        .route("/hub/admin/stop", post(admin::stop))
        .route("/hub/admin/announcement", post(admin::announce))
        .route("/hub/api/users", get(crate::api::users))
        .route("/hub/api/users/{name}/stop", post(crate::api::stop_user))
        .route("/hub/api/pool", get(crate::api::pool))
        .route("/hub/api/announcement", axum::routing::put(crate::api::announcement))
        .route("/hub/api/me/server", get(crate::api::me_server))
        .route("/hub/api/me/keepalive", post(crate::api::me_keepalive))
        .route("/hub/static/nbgate.js", get(static_js))
        .route("/hub", get(|| async { pages::redirect("/hub/home") }))
        .route("/hub/", get(|| async { pages::redirect("/hub/home") }))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .with_state(app)
}

/// The banner script added to JupyterLab's page (see `proxy::inject`).
async fn static_js() -> Response {
    (
        [
            (http::header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (http::header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../../static/nbgate.js"),
    )
        .into_response()
}

async fn not_found() -> Response {
    let page = pages::MessagePage::new("Not found", "There is nothing at this address.")
        .link("/", "Go to the start page");
    pages::render(StatusCode::NOT_FOUND, &page)
}

/// The browser id the form token is bound to: the cookie's value, or a new
/// one (then the caller sets the cookie). Second value: whether it is new.
pub fn browser_id(headers: &HeaderMap, tls: bool) -> (String, bool) {
    match session::cookie_values(headers, xsrf::browser_cookie(tls)).next() {
        Some(v) => (v.to_string(), false),
        None => (session::new_session().0, true),
    }
}

/// A POSTed form is accepted only from our own origin with a valid `_xsrf`.
pub fn form_allowed(app: &App, headers: &HeaderMap, submitted: &str) -> bool {
    let tls = app.config.tls();
    xsrf::same_origin(headers, tls)
        && session::cookie_values(headers, xsrf::browser_cookie(tls))
            .any(|id| xsrf::verify(&app.cookie_secret, id, submitted))
}

pub fn forbidden_form() -> Response {
    (
        StatusCode::FORBIDDEN,
        "403 Forbidden: this form came from another site or has expired. Go back, reload the page and try again.\n",
    )
        .into_response()
}
