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
