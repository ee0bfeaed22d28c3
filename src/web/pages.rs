//! Page structs (one per template) and the one place pages become responses.

use askama::Template;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

/// A link button on a message page.
pub struct Link {
    pub href: String,
    pub label: String,
}

/// A short page that says what happened and what to do: full house, a slot that
/// is gone, an upstream failure, Docker restarting.
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub title: String,
    pub message: String,
    pub link: Option<Link>,
    /// Reload the page by itself after this many seconds.
    pub refresh: Option<u32>,
    /// Announce to screen readers as an alert rather than a status.
    pub alert: bool,
}

impl MessagePage {
    pub fn new(title: &str, message: impl Into<String>) -> Self {
        Self { title: title.into(), message: message.into(), link: None, refresh: None, alert: false }
    }
    pub fn link(mut self, href: &str, label: &str) -> Self {
        self.link = Some(Link { href: href.into(), label: label.into() });
        self
    }
    pub fn refresh(mut self, seconds: u32) -> Self {
        self.refresh = Some(seconds);
        self
    }
    pub fn alert(mut self) -> Self {
        self.alert = true;
        self
    }
}

/// The site-password form (`NBGATE_ACCESS_PASSWORD`).
#[derive(Template)]
#[template(path = "access.html")]
pub struct AccessPage {
    pub xsrf: String,
    pub next: String,
    pub error: Option<String>,
}

/// Render a page with a status; a template error is logged and answered with
/// an opaque 500 (it is a bug, never user input).
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => {
            let mut resp = (status, html).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert("x-frame-options", HeaderValue::from_static("DENY"));
            h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
            h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering a page");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// Whether an error (from SQLite, Docker or the OS) means a disk is full.
/// Matched on the text because the same condition arrives through sqlx
/// (`SQLITE_FULL`), bollard (dockerd's message) and std::io (ENOSPC).
pub fn is_disk_full(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("database or disk is full")
        || e.contains("no space left on device")
        || e.contains("disk quota exceeded")
}

/// 503: Docker is away (restarting). Retries by itself.
pub fn restarting() -> Response {
    let page = MessagePage::new(
        "Restarting",
        "The notebook servers are restarting. This page will take you in as soon as they are back.",
    )
    .refresh(5);
    let mut resp = render(StatusCode::SERVICE_UNAVAILABLE, &page);
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

/// 503: a disk is full. Retries by itself, since freeing space is enough.
pub fn disk_full(back: (&str, &str)) -> Response {
    let page = MessagePage::new(
        "The server is out of disk space",
        "Nothing you saved is lost, but nothing new can be stored right now. \
         The organizer needs to free some space; this page tries again by itself.",
    )
    .refresh(10)
    .link(back.0, back.1)
    .alert();
    let mut resp = render(StatusCode::SERVICE_UNAVAILABLE, &page);
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    resp
}

/// A request that failed on the gateway's side. A full disk is an outage the
/// organizer can fix without a restart: a 503 that says so and retries by
/// itself; anything else is a plain 500 with a way back. Never the error text.
pub fn failure(what: &str, e: impl std::fmt::Display, back: (&str, &str)) -> Response {
    let e = e.to_string();
    if is_disk_full(&e) {
        tracing::error!(error = %e, "{what}: a disk is full; free space on the host (nothing needs a restart)");
        return disk_full(back);
    }
    tracing::error!(error = %e, "{what}");
    let page =
        MessagePage::new("Something went wrong", "The gateway could not finish that. Please try again.")
            .link(back.0, back.1)
            .alert();
    render(StatusCode::INTERNAL_SERVER_ERROR, &page)
}

/// A redirect that is never cached.
pub fn redirect(location: &str) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_recognised_from_every_source() {
        assert!(is_disk_full("error returned from database: (code: 13) database or disk is full"));
        assert!(is_disk_full(
            "Docker responded with status code 500: mkdir /var/lib/docker/x: no space left on device"
        ));
        assert!(is_disk_full("No space left on device (os error 28)"));
        assert!(!is_disk_full("error returned from database: (code: 5) database is locked"));
        assert!(!is_disk_full("connection refused"));
    }

    #[test]
    fn a_full_disk_is_a_503_that_retries_and_anything_else_a_500() {
        let r = failure("test", "No space left on device (os error 28)", ("/hub/login", "Back"));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "10");
        let r = failure("test", "boom", ("/hub/login", "Back"));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
