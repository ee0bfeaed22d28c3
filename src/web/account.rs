//! Accounts: register, log in, log out, home, password change, spawning and
//! `/hub/user-redirect`. Every POST checks `_xsrf` and the origin first; a
//! failed attempt re-renders the form with a clear message and a 4xx, and
//! creates nothing.

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Extension;
use http::{header, HeaderMap, StatusCode, Uri};
use serde::Deserialize;

use crate::app::App;
use crate::auth::keys::{self, KeyCheck};
use crate::auth::password::{check_new_password, Username};
use crate::auth::throttle::persistent as throttle;
use crate::auth::{session, xsrf};
use crate::db;
use crate::db::users::{NewUser, RegisterError, UserRow};
use crate::pool::binder::{ensure_server, ServerState};
use crate::proxy::routes::{now_secs, SessionHash};
use crate::web::form::HubForm;
use crate::web::next::safe_next;
use crate::web::pages::{redirect, render, MessagePage};
use crate::web::{browser_id, forbidden_form, form_allowed, Peer};

/// How long a login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(14 * 86400);

// ---- pages ----

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    announcement: Option<String>,
    xsrf: String,
    next: String,
    username: String,
    error: Option<String>,
    login_message: Option<String>,
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    xsrf: String,
    username: String,
    email: String,
    ask_email: bool,
    closed: bool,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    announcement: Option<String>,
    xsrf: String,
    username: String,
    server_url: Option<String>,
    message: Option<String>,
    error: Option<String>,
}

/// Render a form page with the browser-id cookie it is bound to.
fn form_page(
    app: &App,
    headers: &HeaderMap,
    status: StatusCode,
    make: impl FnOnce(String) -> Response,
) -> Response {
    let tls = app.config.tls();
    let (id, fresh) = browser_id(headers, tls);
    let mut resp = make(xsrf::token(&app.cookie_secret, &id));
    *resp.status_mut() = status;
    if fresh {
        resp.headers_mut().append(
            header::SET_COOKIE,
            session::set_cookie(xsrf::browser_cookie(tls), &id, Some(Duration::from_secs(30 * 86400)), tls),
        );
    }
    resp
}

fn login_page(
    app: &App,
    headers: &HeaderMap,
    status: StatusCode,
    username: &str,
    next: &str,
    error: Option<String>,
) -> Response {
    form_page(app, headers, status, |xsrf| {
        render(
            status,
            &LoginPage {
                announcement: app.announcement(),
                xsrf,
                next: next.to_string(),
                username: username.to_string(),
                error,
                login_message: app.config.login_message.clone(),
            },
        )
    })
}

async fn register_page(
    app: &App,
    headers: &HeaderMap,
    status: StatusCode,
    username: &str,
    email: &str,
    error: Option<String>,
) -> Response {
    let now = now_secs() as i64;
    let db_open = db::keys::any_usable(&app.db, now).await.unwrap_or(false);
    let closed = app.config.registration_key.is_none() && !db_open;
    let ask_email = db::keys::any_wants_email(&app.db, now).await.unwrap_or(false);
    form_page(app, headers, status, |xsrf| {
        render(
            status,
            &RegisterPage {
                xsrf,
                username: username.to_string(),
                email: email.to_string(),
                ask_email,
                closed,
                error,
            },
        )
    })
}

// ---- who is signed in ----

/// The signed-in user of this request, if any: (session hash, account).
pub async fn current_user(app: &App, headers: &HeaderMap) -> Option<(SessionHash, UserRow)> {
    let now = now_secs() as i64;
    for hash in session::presented(headers, app.config.tls()) {
        let Ok(Some(row)) = db::sessions::find(&app.db, &hash, now).await else { continue };
        let Some(user_id) = row.user_id else { continue };
        if let Ok(Some(user)) = db::users::by_id(&app.db, user_id).await {
            return Some((hash, user));
        }
    }
    None
}

fn expired(user: &UserRow, now: i64) -> bool {
    user.expires_at.is_some_and(|t| t <= now)
}

fn expired_message(user: &UserRow) -> String {
    let when = user
        .expires_at
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    format!("Your account expired on {when}. Your files are kept; ask the organizer to extend it.")
}

// ---- login ----

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn login_form(State(app): State<App>, headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    let next = q.next.as_deref().and_then(safe_next).unwrap_or_default();
    if let Some((_, user)) = current_user(&app, &headers).await {
        if !expired(&user, now_secs() as i64) {
            return redirect(if next.is_empty() { "/hub/home" } else { &next });
        }
    }
    login_page(&app, &headers, StatusCode::OK, "", &next, None)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    #[serde(rename = "_xsrf")]
    xsrf: String,
    username: String,
    password: String,
    next: String,
}

pub async fn login_submit(
    State(app): State<App>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    HubForm(form): HubForm<LoginForm>,
) -> Response {
    let started = std::time::Instant::now();
    let resp = login_inner(&app, peer, &headers, form).await;
    app.metrics.login_seconds.observe(started.elapsed());
    resp
}

async fn login_inner(
    app: &App,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    form: LoginForm,
) -> Response {
    let (app, headers) = (app.clone(), headers.clone());
    if !form_allowed(&app, &headers, &form.xsrf) {
        return forbidden_form();
    }
    let next = safe_next(&form.next).unwrap_or_default();
    let shown_name: String = form.username.chars().take(32).filter(|c| !c.is_control()).collect();
    let now = now_secs() as i64;
    let name = Username::parse(&form.username);
    // Throttle by the name as typed (normalised when valid), so unknown and
    // known names behave alike.
    let name_key = match &name {
        Ok(n) => n.sha256_hex(),
        Err(_) => hex::encode(<sha2::Sha256 as sha2::Digest>::digest(shown_name.as_bytes())),
    };
    let scopes = [format!("user:{name_key}"), format!("ip:{}", peer.ip())];
    for scope in &scopes {
        match throttle::wait(&app.db, scope, now).await {
            Ok(Some(wait)) => {
                let msg = format!("Too many failed attempts. Try again in {wait} seconds.");
                return login_page(
                    &app,
                    &headers,
                    StatusCode::TOO_MANY_REQUESTS,
                    &shown_name,
                    &next,
                    Some(msg),
                );
            }
            Ok(None) => {}
            Err(e) => return internal(e),
        }
    }
    let user = match &name {
        Ok(n) => match db::users::by_name_hash(&app.db, &n.sha256_hex()).await {
            Ok(u) => u,
            Err(e) => return internal(e),
        },
        Err(_) => None,
    };
    let ok = app.hasher.verify(&form.password, user.as_ref().map(|u| u.password_hash.as_str())).await;
    let (Some(user), Ok(name), true) = (user, name, ok) else {
        for scope in &scopes {
            let _ = throttle::failed(&app.db, scope, now).await;
        }
        app.metrics.login_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return login_page(
            &app,
            &headers,
            StatusCode::UNAUTHORIZED,
            &shown_name,
            &next,
            Some("Wrong username or password.".into()),
        );
    };
    let _ = throttle::clear(&app.db, &scopes[0]).await;
    if expired(&user, now) {
        crate::pool::supervise::recycle_user(&app, user.id, &crate::recycle::Reason::Expired).await;
        return login_page(
            &app,
            &headers,
            StatusCode::FORBIDDEN,
            &shown_name,
            &next,
            Some(expired_message(&user)),
        );
    }
    if let Err(e) = db::users::logged_in(&app.db, user.id, name.as_str(), now).await {
        return internal(e);
    }
    app.metrics.logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    start_session(&app, &headers, &user, &next).await
}

/// A new session (a fresh id at every login), a server, and the redirect.
async fn start_session(app: &App, headers: &HeaderMap, user: &UserRow, next: &str) -> Response {
    let tls = app.config.tls();
    let now = now_secs() as i64;
    let (value, hash) = session::new_session();
    if let Err(e) =
        db::sessions::create(&app.db, &hash, user.id, now, now + SESSION_LIFETIME.as_secs() as i64).await
    {
        return internal(e);
    }
    // The session this browser had before is ended: no fixation.
    for old in session::presented(headers, tls) {
        end_session(app, &old).await;
    }
    let mut resp = spawn_response(app, user, hash, next).await;
    resp.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(session::session_cookie(tls), &value, Some(SESSION_LIFETIME), tls),
    );
    resp
}

fn pending_url(next: &str) -> String {
    if next.is_empty() {
        "/hub/spawn-pending".into()
    } else {
        format!("/hub/spawn-pending?next={}", crate::proxy::urlencode(next))
    }
}

/// Ensure the server, then go where the user was headed.
async fn spawn_response(app: &App, user: &UserRow, session: SessionHash, next: &str) -> Response {
    spawn_or_wait(app, user, session, next, false).await
}

async fn spawn_or_wait(
    app: &App,
    user: &UserRow,
    session: SessionHash,
    next: &str,
    on_pending_page: bool,
) -> Response {
    match ensure_server(app, user, session).await {
        ServerState::Ready(route) => redirect(&destination(app, route.slot.as_str(), next)),
        ServerState::Starting => redirect(&pending_url(next)),
        ServerState::Failed(why) => {
            let page =
                MessagePage::new("Your server did not start", why).link("/hub/spawn", "Try again").alert();
            render(StatusCode::SERVICE_UNAVAILABLE, &page)
        }
        // Queued: wait on the pending page, whose refresh keeps the place in line.
        ServerState::Queued(position) if on_pending_page => queue_page(position),
        ServerState::Queued(_) => redirect(&pending_url(next)),
        ServerState::DiskFull => crate::web::pages::disk_full(("/hub/home", "Back to your page")),
        ServerState::DockerDown => crate::web::pages::restarting(),
    }
}

/// `/user/<slot>/…` for `next` (a stale slot in it is replaced by the current
/// one), `/hub/user-redirect/<path>` resolved, or the default URL.
fn destination(app: &App, slot: &str, next: &str) -> String {
    if let Some(rest) = next.strip_prefix("/hub/user-redirect/") {
        return format!("/user/{slot}/{rest}");
    }
    if let Some(rest) = next.strip_prefix("/user/") {
        let tail = rest.split_once('/').map(|(_, t)| t).unwrap_or("");
        return format!("/user/{slot}/{tail}");
    }
    if next.starts_with('/') {
        return next.to_string();
    }
    format!("/user/{slot}{}", app.config.default_url)
}

/// The line for a server: position, and a page that moves on by itself.
fn queue_page(position: usize) -> Response {
    let ahead = match position {
        1 => "You are next in line.".to_string(),
        n => format!("You are number {n} in line."),
    };
    let page = MessagePage::new(
        "Waiting for a free notebook server",
        format!(
            "{ahead} Every server is in use right now; one frees up when someone leaves or goes idle. \
             Keep this page open: it moves on by itself, and your files are safe."
        ),
    )
    .refresh(3);
    let mut resp = render(StatusCode::OK, &page);
    resp.headers_mut().insert(header::RETRY_AFTER, http::HeaderValue::from_static("3"));
    resp
}

fn internal(e: impl std::fmt::Display) -> Response {
    crate::web::pages::failure("account request failed", e, ("/hub/login", "Back to log in"))
}

// ---- register ----

pub async fn register_form(State(app): State<App>, headers: HeaderMap) -> Response {
    register_page(&app, &headers, StatusCode::OK, "", "", None).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RegisterForm {
    #[serde(rename = "_xsrf")]
    xsrf: String,
    username: String,
    password: String,
    password_confirm: String,
    registration_key: String,
    email: String,
}

pub async fn register_submit(
    State(app): State<App>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    HubForm(form): HubForm<RegisterForm>,
) -> Response {
    if !form_allowed(&app, &headers, &form.xsrf) {
        return forbidden_form();
    }
    let now = now_secs() as i64;
    let shown: String = form.username.chars().take(32).filter(|c| !c.is_control()).collect();
    let email: String = form.email.trim().chars().take(254).collect();
    let fail = |status: StatusCode, msg: String| {
        let (app, headers, shown, email) = (app.clone(), headers.clone(), shown.clone(), email.clone());
        async move { register_page(&app, &headers, status, &shown, &email, Some(msg)).await }
    };
    let key_scope = format!("key-ip:{}", peer.ip());
    match throttle::wait(&app.db, &key_scope, now).await {
        Ok(Some(wait)) => {
            return fail(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many wrong keys. Try again in {wait} seconds."),
            )
            .await
        }
        Ok(None) => {}
        Err(e) => return internal(e),
    }
    let name = match Username::parse(&form.username) {
        Ok(n) => n,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e.to_string()).await,
    };
    if let Err(e) = check_new_password(&form.password, &form.password_confirm) {
        return fail(StatusCode::BAD_REQUEST, e.to_string()).await;
    }
    let config_key = app.config.registration_key.as_ref().map(|k| k.expose());
    let email_opt = (!email.is_empty()).then_some(email.as_str());
    let (key_id, account_days) =
        match keys::check(&app.db, config_key, &form.registration_key, email_opt, now).await {
            Ok(KeyCheck::Valid { key_id, account_days }) => (key_id, account_days),
            Ok(other) => {
                if other == KeyCheck::Wrong {
                    let _ = throttle::failed(&app.db, &key_scope, now).await;
                }
                let status = if other == KeyCheck::EmailRequired {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::FORBIDDEN
                };
                return fail(status, other.message().to_string()).await;
            }
            Err(e) => return internal(e),
        };
    let _ = throttle::clear(&app.db, &key_scope).await;
    let hash = match app.hasher.hash(&form.password).await {
        Ok(h) => h,
        Err(e) => return internal(e),
    };
    let volume = crate::volumes::volume_name(&app.config.instance, &name, &hash);
    let docker = match app.docker.get().await {
        Ok(d) => d,
        Err(_) => {
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "The notebook servers are restarting; try again in a moment.".into(),
            )
            .await
        }
    };
    let name_sha = name.sha256_hex();
    let new_user = NewUser {
        name_sha256: &name_sha,
        username: name.as_str(),
        password_hash: &hash,
        volume: &volume,
        email: email_opt,
        key_id,
        expires_at: account_days.map(|d| now + d * 86400),
    };
    let instance = app.config.instance.clone();
    let created = db::users::register(&app.db, &new_user, now, || async {
        crate::volumes::create(&docker, &instance, &volume).await.map(|_| ())
    })
    .await;
    let user_id = match created {
        Ok(id) => id,
        Err(RegisterError::Taken) => {
            return fail(StatusCode::CONFLICT, "That username is taken. Choose another.".into()).await;
        }
        Err(RegisterError::KeyUsedUp) => {
            return fail(StatusCode::FORBIDDEN, KeyCheck::UsedUp.message().into()).await
        }
        Err(RegisterError::Db(e)) => {
            // The commit may have failed after the volume was made.
            let _ = crate::volumes::remove(&docker, &volume).await;
            return internal(e);
        }
    };
    app.metrics.registrations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(user = user_id, "registered");
    let user = match db::users::by_id(&app.db, user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => return internal("the new account vanished"),
        Err(e) => return internal(e),
    };
    start_session(&app, &headers, &user, "").await
}

// ---- logout ----

pub async fn logout_get(State(app): State<App>, headers: HeaderMap) -> Response {
    // A cross-site link must not end a session (and recycle a server) by itself.
    if !xsrf::same_origin(&headers, app.config.tls())
        || headers.get("sec-fetch-site").is_some_and(|v| v == "cross-site" || v == "same-site")
    {
        return form_page(&app, &headers, StatusCode::OK, |xsrf| {
            render(StatusCode::OK, &LogoutConfirm { xsrf })
        });
    }
    logout(&app, &headers).await
}

#[derive(Template)]
#[template(path = "logout.html")]
struct LogoutConfirm {
    xsrf: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct XsrfForm {
    #[serde(rename = "_xsrf")]
    xsrf: String,
}

pub async fn logout_post(
    State(app): State<App>,
    headers: HeaderMap,
    HubForm(form): HubForm<XsrfForm>,
) -> Response {
    if !form_allowed(&app, &headers, &form.xsrf) {
        return forbidden_form();
    }
    logout(&app, &headers).await
}

/// Delete the session server-side, close its WebSockets, and by default
/// recycle the user's server.
async fn logout(app: &App, headers: &HeaderMap) -> Response {
    let tls = app.config.tls();
    let user = current_user(app, headers).await;
    for hash in session::presented(headers, tls) {
        end_session(app, &hash).await;
    }
    if let (Some((_, u)), true) = (&user, app.config.stop_on_logout) {
        // Stopping takes a second or two (Jupyter saves and exits): the person
        // leaving need not wait. The user's lock, taken here, orders the
        // recycle before any next login of theirs.
        let guard = app.binder.lock(u.id).await;
        let (app, user_id) = (app.clone(), u.id);
        tokio::spawn(async move {
            let _guard = guard;
            crate::pool::supervise::recycle_user_locked(&app, user_id, &crate::recycle::Reason::Logout).await;
        });
    }
    let mut resp = redirect("/hub/login");
    resp.headers_mut()
        .append(header::SET_COOKIE, session::set_cookie(session::session_cookie(tls), "", None, tls));
    resp
}

/// End a session everywhere: its row, and its place on any route (which
/// closes its WebSockets).
async fn end_session(app: &App, hash: &SessionHash) {
    if let Err(e) = db::sessions::delete(&app.db, hash).await {
        tracing::error!(error = %e, "deleting a session");
    }
    for route in app.routes.all() {
        route.remove_owner(hash);
    }
}

// ---- home, spawn, pending ----

pub async fn home(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some((_, user)) = current_user(&app, &headers).await else {
        return redirect("/hub/login?next=/hub/home");
    };
    let note = if app.routes.by_user(user.id).is_none() {
        crate::api::stop_message(&app, &headers).await
    } else {
        None
    };
    home_page(&app, &headers, &user, StatusCode::OK, note, None)
}

fn home_page(
    app: &App,
    headers: &HeaderMap,
    user: &UserRow,
    status: StatusCode,
    message: Option<String>,
    error: Option<String>,
) -> Response {
    let server_url =
        app.routes.by_user(user.id).map(|r| format!("/user/{}{}", r.slot, app.config.default_url));
    let username = user.username.clone().unwrap_or_default();
    form_page(app, headers, status, |xsrf| {
        render(
            status,
            &HomePage { announcement: app.announcement(), xsrf, username, server_url, message, error },
        )
    })
}

pub async fn spawn(State(app): State<App>, headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    let next = q.next.as_deref().and_then(safe_next).unwrap_or_default();
    let Some((hash, user)) = current_user(&app, &headers).await else {
        return redirect("/hub/login?next=/hub/home");
    };
    if expired(&user, now_secs() as i64) {
        let page = MessagePage::new("Account expired", expired_message(&user)).alert();
        return render(StatusCode::FORBIDDEN, &page);
    }
    spawn_response(&app, &user, hash, &next).await
}

pub async fn spawn_pending(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = q.next.as_deref().and_then(safe_next).unwrap_or_default();
    let Some((hash, user)) = current_user(&app, &headers).await else {
        return redirect("/hub/login?next=/hub/home");
    };
    if app.routes.by_user(user.id).is_none() && app.binder.is_starting(user.id) {
        let page = MessagePage::new(
            "Starting your server…",
            "Your JupyterLab is starting with your files. This takes a few seconds; the page moves on by itself.",
        )
        .refresh(1);
        return render(StatusCode::ACCEPTED, &page);
    }
    spawn_or_wait(&app, &user, hash, &next, true).await
}

pub async fn restart(
    State(app): State<App>,
    headers: HeaderMap,
    HubForm(form): HubForm<XsrfForm>,
) -> Response {
    if !form_allowed(&app, &headers, &form.xsrf) {
        return forbidden_form();
    }
    let Some((hash, user)) = current_user(&app, &headers).await else {
        return redirect("/hub/login?next=/hub/home");
    };
    crate::pool::supervise::recycle_user(&app, user.id, &crate::recycle::Reason::Restart).await;
    spawn_response(&app, &user, hash, "").await
}

// ---- password change ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PasswordForm {
    #[serde(rename = "_xsrf")]
    xsrf: String,
    old_password: String,
    new_password: String,
    new_password_confirm: String,
}

pub async fn change_password(
    State(app): State<App>,
    headers: HeaderMap,
    HubForm(form): HubForm<PasswordForm>,
) -> Response {
    if !form_allowed(&app, &headers, &form.xsrf) {
        return forbidden_form();
    }
    let Some((_, user)) = current_user(&app, &headers).await else {
        return redirect("/hub/login?next=/hub/home");
    };
    if !app.hasher.verify(&form.old_password, Some(&user.password_hash)).await {
        return home_page(
            &app,
            &headers,
            &user,
            StatusCode::UNAUTHORIZED,
            None,
            Some("The current password is wrong.".into()),
        );
    }
    if let Err(e) = check_new_password(&form.new_password, &form.new_password_confirm) {
        return home_page(&app, &headers, &user, StatusCode::BAD_REQUEST, None, Some(e.to_string()));
    }
    match crate::volumes::rekey::change_password(&app, &user, &form.new_password).await {
        Ok(()) => {
            let user = db::users::by_id(&app.db, user.id).await.ok().flatten().unwrap_or(user);
            home_page(
                &app,
                &headers,
                &user,
                StatusCode::OK,
                Some("Your password is changed and your files moved with it. Start your server again to continue.".into()),
                None,
            )
        }
        Err(e) => {
            tracing::error!(user = user.id, error = %e, "password change failed");
            home_page(
                &app,
                &headers,
                &user,
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                Some(
                    "The password could not be changed; your old password and your files are unchanged."
                        .into(),
                ),
            )
        }
    }
}

// ---- user-redirect ----

pub async fn user_redirect(
    State(app): State<App>,
    headers: HeaderMap,
    uri: Uri,
    Path(rest): Path<String>,
) -> Response {
    let _ = rest;
    let target = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let Some(target) = safe_next(&target) else {
        return redirect("/hub/home");
    };
    let tail = target.trim_start_matches("/hub/user-redirect/");
    if !crate::proxy::clean_path(tail.split('?').next().unwrap_or("")) {
        let page = MessagePage::new("Bad link", "That link points outside your server.")
            .link("/hub/home", "Go home");
        return render(StatusCode::BAD_REQUEST, &page);
    }
    let Some((hash, user)) = current_user(&app, &headers).await else {
        return redirect(&format!("/hub/login?next={}", crate::proxy::urlencode(&target)));
    };
    if expired(&user, now_secs() as i64) {
        let page = MessagePage::new("Account expired", expired_message(&user)).alert();
        return render(StatusCode::FORBIDDEN, &page);
    }
    spawn_response(&app, &user, hash, &target).await
}
