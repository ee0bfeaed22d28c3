//! `/user/<slot>/…`: the owner check, the origin check, then HTTP forwarded with
//! streamed bodies, or a WebSocket spliced byte for byte. Everything that can
//! refuse a request runs before any upstream connection is made.

pub mod express;
pub mod first;
mod framing;
mod handshake;
mod prefixed;
pub mod routes;
mod splice;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::auth::{session, xsrf};
use crate::config::AuthMode;
use crate::slot::SlotId;
use crate::web::pages::{redirect, render, MessagePage};
use handshake::Answer;
use prefixed::Prefixed;
use routes::Route;
use upstream::Upstream;

/// What the proxy keeps for one browser connection.
pub struct Browser {
    /// Its connection to the notebook server.
    upstream: Upstream,
    /// `X-Forwarded-For`: the peer address, formatted once.
    forwarded_for: HeaderValue,
}

impl Browser {
    pub fn new(peer: SocketAddr) -> Self {
        Self { upstream: Upstream::default(), forwarded_for: forwarded_for(peer) }
    }
}

fn forwarded_for(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_string()).expect("an IP address is a valid header")
}

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Where a `/user/` request may go. Decided before any upstream connection is
/// made, the same way for hyper's requests and for `first`'s.
enum Admission {
    /// Forward it, for the session that owns the route (`closed` is its switch).
    Forward {
        route: Arc<Route>,
        closed: CancellationToken,
        upgrade: bool,
        /// JupyterLab's own page, which gets the banner script.
        lab_page: bool,
    },
    /// `/user/<slot>` without the slash.
    AddSlash(SlotId),
    NotFound,
    BadPath,
    Gone,
    NotYours,
    CrossOrigin,
}

fn admit<B>(app: &App, req: &Request<B>) -> Admission {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/user/") else {
        return Admission::NotFound;
    };
    let (slot_str, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(slot) = SlotId::parse(slot_str) else {
        return Admission::NotFound;
    };
    if tail.is_empty() && !path.ends_with('/') {
        return Admission::AddSlash(slot);
    }
    if !clean_path(tail) {
        return Admission::BadPath;
    }
    let tls = app.config.tls();
    let Some(route) = app.routes.get(&slot) else {
        return Admission::Gone;
    };
    let Some(closed) = route.owner_of(session::presented(req.headers(), tls)) else {
        return Admission::NotYours;
    };
    let upgrade = is_websocket_upgrade(req.headers());
    if (upgrade || xsrf::is_unsafe(req.method())) && !xsrf::same_origin(req.headers(), tls) {
        return Admission::CrossOrigin;
    }
    if !is_background_poll(req.method(), tail) {
        route.touch();
    }
    let lab_page = req.method() == http::Method::GET && (tail == "lab" || tail.starts_with("lab/"));
    Admission::Forward { route, closed, upgrade, lab_page }
}

/// Handle a request whose path starts with `/user/`, from `browser`'s connection.
pub async fn handle(app: &App, browser: &Browser, req: Request<Incoming>) -> Response {
    let (route, closed, upgrade, lab_page) = match admit(app, &req) {
        Admission::Forward { route, closed, upgrade, lab_page } => (route, closed, upgrade, lab_page),
        Admission::AddSlash(slot) => return redirect(&format!("/user/{slot}/")),
        Admission::NotFound => return not_found(app, &req),
        Admission::BadPath => {
            return (
                StatusCode::BAD_REQUEST,
                "400 Bad Request: dot segments and encoded slashes are not allowed\n",
            )
                .into_response()
        }
        Admission::Gone => return gone(app, &req).await,
        Admission::NotYours => return not_yours(app, &req),
        Admission::CrossOrigin => {
            tracing::warn!(path = req.uri().path(), method = %req.method(), "cross-origin request refused");
            return (StatusCode::FORBIDDEN, "403 Forbidden: cross-origin request\n").into_response();
        }
    };
    if upgrade {
        return websocket(app, browser, req, route, closed).await;
    }
    let (parts, body) = req.into_parts();
    relay(app, browser, parts, Some(body), &route, lab_page).await
}

/// Forward an admitted request (`body` None: it has none) and give back the
/// answer, with HTML pages and redirects scrubbed (`rewrite_page`). hyper's
/// requests and `express`'s both come here.
async fn relay(
    app: &App,
    browser: &Browser,
    parts: http::request::Parts,
    body: Option<Incoming>,
    route: &Route,
    lab_page: bool,
) -> Response {
    let resp = forward(app, browser, parts, body, route).await;
    let is_html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html || resp.headers().contains_key(header::LOCATION) {
        rewrite_page(resp, route, lab_page).await
    } else {
        resp
    }
}

/// Forward one HTTP request, streaming both bodies.
async fn forward(
    app: &App,
    browser: &Browser,
    mut parts: http::request::Parts,
    body: Option<Incoming>,
    route: &Route,
) -> Response {
    let Some(uri) = upstream_uri(&parts.uri) else {
        return (StatusCode::BAD_REQUEST, "400 Bad Request\n").into_response();
    };
    parts.uri = uri;
    prepare_upstream_headers(&mut parts.headers, route, &browser.forwarded_for, app.config.tls(), false);
    let sent = match body {
        Some(body) => {
            browser.upstream.send(route.upstream, &route.spares, Request::from_parts(parts, body)).await
        }
        None => {
            browser.upstream.send_plain(route.upstream, &route.spares, Request::from_parts(parts, ())).await
        }
    };
    match sent {
        Ok(resp) => {
            app.metrics.proxied_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let body = crate::metrics::Counted::new(body, app.metrics.proxied_bytes.clone());
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            tracing::warn!(slot = %route.slot, error = %e, "upstream request failed");
            bad_gateway(app)
        }
    }
}

/// Forward a WebSocket upgrade that came through hyper (one that was not its
/// connection's first request); on 101 from upstream, answer 101 and splice.
async fn websocket(
    app: &App,
    browser: &Browser,
    mut req: Request<Incoming>,
    route: Arc<Route>,
    closed: CancellationToken,
) -> Response {
    if has_body(req.headers()) {
        return (StatusCode::BAD_REQUEST, "400 Bad Request: a WebSocket upgrade has no body\n")
            .into_response();
    }
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let (headers, upstream) = match switch_upstream(app, &browser.forwarded_for, parts, &route).await {
        Ok(switched) => switched,
        Err(refusal) => return refusal,
    };
    let metrics = app.metrics.clone();
    tokio::spawn(async move {
        let client = match client_upgrade.await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade did not complete");
                return;
            }
        };
        let _open = metrics.websocket_opened();
        splice::splice(TokioIo::new(client), upstream, &route, closed).await;
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = headers;
    resp
}

/// Ask the notebook server to switch to a WebSocket: its 101 headers and
/// connection, or the answer the browser gets instead.
async fn switch_upstream(
    app: &App,
    forwarded_for: &HeaderValue,
    mut parts: http::request::Parts,
    route: &Route,
) -> Result<(HeaderMap, Prefixed<TcpStream>), Response> {
    let Some(uri) = upstream_uri(&parts.uri) else {
        return Err((StatusCode::BAD_REQUEST, "400 Bad Request\n").into_response());
    };
    parts.uri = uri;
    prepare_upstream_headers(&mut parts.headers, route, forwarded_for, app.config.tls(), true);
    match upstream::upgrade(route.upstream, Request::from_parts(parts, ())).await {
        Ok(Answer::Switched { headers, stream }) => Ok((headers, stream)),
        Ok(Answer::Refused(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Err(Response::from_parts(parts, Body::from(body)))
        }
        Err(e) => {
            tracing::warn!(slot = %route.slot, error = %e, "upstream WebSocket failed");
            Err(bad_gateway(app))
        }
    }
}

/// A request body announced by its framing (a WebSocket's GET has none).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) != Some(0))
}

/// Jupyter writes the token it was authenticated with into its HTML pages
/// (page config) and sometimes into redirects; the browser must never see it
/// (SECURITY.md #10), so those small responses are scrubbed. JupyterLab's own
/// page also gets nbgate's banner script (idle warnings, "keep my server",
/// memory notices). Only HTML pages and redirects are buffered.
async fn rewrite_page(resp: Response, route: &Route, lab_page: bool) -> Response {
    use http_body_util::BodyExt;
    let token = route.auth_header.to_str().unwrap_or("").trim_start_matches("token ").to_string();
    let (mut parts, body) = resp.into_parts();
    if let Some(loc) = parts.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
        if !token.is_empty() && loc.contains(&token) {
            let cleaned = loc.replace(&format!("token={token}"), "").replace(&token, "");
            match HeaderValue::from_str(&cleaned) {
                Ok(v) => parts.headers.insert(header::LOCATION, v),
                Err(_) => parts.headers.remove(header::LOCATION),
            };
        }
    }
    if parts.status != StatusCode::OK || parts.headers.contains_key(header::CONTENT_ENCODING) {
        return Response::from_parts(parts, body);
    }
    let Ok(collected) = http_body_util::Limited::new(body, 4 << 20).collect().await else {
        return bad_gateway_plain();
    };
    let mut html = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    if !token.is_empty() {
        html = html.replace(&token, "");
    }
    if lab_page {
        const TAG: &str = r#"<script src="/hub/static/nbgate.js" defer></script>"#;
        html = match html.rfind("</head>") {
            Some(i) => format!("{}{TAG}{}", &html[..i], &html[i..]),
            None => format!("{html}{TAG}"),
        };
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(html))
}

fn bad_gateway_plain() -> Response {
    (StatusCode::BAD_GATEWAY, "502 Bad Gateway: the notebook server's page did not arrive whole\n")
        .into_response()
}

/// `<path>?<query without token=>`, in origin form (the connection already
/// goes to the route's upstream). Without a query the request's own URI is
/// reused, which costs no copy.
fn upstream_uri(original: &Uri) -> Option<Uri> {
    let path = original.path();
    let Some(query) = original.query() else {
        if original.scheme().is_none() && original.authority().is_none() {
            return Some(original.clone());
        }
        return Uri::builder().path_and_query(path).build().ok();
    };
    let pq = match strip_token_param(query) {
        q if q.is_empty() => path.to_string(),
        q => format!("{path}?{q}"),
    };
    Uri::builder().path_and_query(pq).build().ok()
}

/// A browser's `?token=` is ignored: only the gateway authenticates upstream
/// (SECURITY.md #10), and a wrong token in the URL must not override the header.
fn strip_token_param(query: &str) -> String {
    query.split('&').filter(|p| *p != "token" && !p.starts_with("token=")).collect::<Vec<_>>().join("&")
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

fn prepare_upstream_headers(
    headers: &mut HeaderMap,
    route: &Route,
    forwarded_for: &HeaderValue,
    tls: bool,
    upgrade: bool,
) {
    // One growth at most (hyper's maps come without room; see `handshake::ROOM`).
    headers.reserve(handshake::ROOM);
    let upgrade_value = if upgrade { headers.get(header::UPGRADE).cloned() } else { None };
    strip_hop_by_hop(headers);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade_value.unwrap_or(HeaderValue::from_static("websocket")));
    }
    session::strip_ours(headers);
    headers.insert(header::AUTHORIZATION, route.auth_header.clone());
    // Our own view of the client; anything the client claimed is replaced.
    headers.insert(X_FORWARDED_FOR, forwarded_for.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(if tls { "https" } else { "http" }));
    if any_of(headers, &CLIENT_CLAIMS) {
        for name in &CLIENT_CLAIMS {
            headers.remove(name);
        }
    }
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// What a client may claim about itself that only the gateway can know.
const CLIENT_CLAIMS: [HeaderName; 3] = [X_FORWARDED_HOST, X_REAL_IP, FORWARDED];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Connection is among them: a message without any names none either.
    if !any_of(headers, &HOP_BY_HOP) {
        return;
    }
    // Headers named by Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Whether any header in `names` is present. Most messages carry none of the
/// ones the proxy removes, and one pass over the names present (no hashing) is
/// cheaper than a lookup per name: this runs twice per proxied request.
fn any_of(headers: &HeaderMap, names: &[HeaderName]) -> bool {
    headers.keys().any(|k| names.contains(k))
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, header::CONNECTION, "upgrade") && has_token(headers, header::UPGRADE, "websocket")
}

/// Whether a comma-separated header (any of its lines) lists `token`, in any case.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Segments after the slot: no `.`/`..` (also percent-encoded), no empty
/// segments, no encoded `/` or `\\` (SECURITY.md #8). No allocation: every
/// proxied request passes here.
pub fn clean_path(tail: &str) -> bool {
    let bytes = tail.as_bytes();
    let encoded_slash = |i: usize| {
        bytes
            .get(i + 1..i + 3)
            .is_some_and(|h| h.eq_ignore_ascii_case(b"2f") || h.eq_ignore_ascii_case(b"5c"))
    };
    if bytes.iter().enumerate().any(|(i, &b)| b == b'\\' || (b == b'%' && encoded_slash(i))) {
        return false;
    }
    let mut segments = tail.split('/').peekable();
    while let Some(segment) = segments.next() {
        // An empty segment is allowed only last (a trailing slash).
        if is_dot_segment(segment) || (segment.is_empty() && segments.peek().is_some()) {
            return false;
        }
    }
    true
}

/// `.` or `..`, with any dot written as `%2e` in either case.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"%2e") {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// Requests an open JupyterLab tab makes by itself; they do not keep a
/// container alive (the culler would never recycle an idle open tab).
/// `path` is the URI path after the slot: it never holds the query.
fn is_background_poll(method: &http::Method, path: &str) -> bool {
    if method != http::Method::GET {
        return false;
    }
    matches!(
        path,
        "api/kernels"
            | "api/sessions"
            | "api/terminals"
            | "api/kernelspecs"
            | "api/status"
            | "api/me"
            | "lab/api/workspaces"
            | "api/contents"
    ) || path.starts_with("api/metrics")
        || (path.starts_with("api/contents/") && !path.contains("checkpoints"))
        || path.starts_with("api/kernels/") && !path.contains("/channels")
}

fn wants_html(req: &Request<Incoming>) -> bool {
    req.method() == http::Method::GET
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

fn home_href(app: &App) -> &'static str {
    match app.config.auth {
        AuthMode::Ephemeral => "/",
        AuthMode::Accounts => "/hub/home",
    }
}

/// Not the caller's slot (or no session): browsers go to sign in, others get 403.
fn not_yours(app: &App, req: &Request<Incoming>) -> Response {
    if wants_html(req) {
        return match app.config.auth {
            AuthMode::Ephemeral => redirect("/"),
            AuthMode::Accounts => {
                let next = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
                redirect(&format!("/hub/login?next={}", urlencode(next)))
            }
        };
    }
    (StatusCode::FORBIDDEN, "403 Forbidden: this server belongs to another session\n").into_response()
}

/// A slot id that is well formed but not (or no longer) assigned. The page
/// says why the server stopped when the DB knows (idle, out of memory, …).
async fn gone(app: &App, req: &Request<Incoming>) -> Response {
    if !wants_html(req) {
        return (StatusCode::NOT_FOUND, "404 Not Found: this server has stopped\n").into_response();
    }
    let message = crate::api::stop_message(app, req.headers()).await.unwrap_or_else(|| {
        "The notebook server at this address is no longer running. It may have been stopped after a \
         period of inactivity, or when you logged out."
            .into()
    });
    let restart = match app.config.auth {
        AuthMode::Ephemeral => "/",
        AuthMode::Accounts => "/hub/spawn",
    };
    let page = MessagePage::new("This server has stopped", message).link(restart, "Start a new server");
    render(StatusCode::NOT_FOUND, &page)
}

fn not_found(app: &App, req: &Request<Incoming>) -> Response {
    if !wants_html(req) {
        return (StatusCode::NOT_FOUND, "404 Not Found\n").into_response();
    }
    let page = MessagePage::new("Not found", "There is no notebook server at this address.")
        .link(home_href(app), "Go to the start page");
    render(StatusCode::NOT_FOUND, &page)
}

fn bad_gateway(app: &App) -> Response {
    let page = MessagePage::new(
        "The notebook server did not answer",
        "Your notebook server is not responding right now. Your files in ~/work are safe. \
         Try again in a moment.",
    )
    .link(home_href(app), "Back to the start page")
    .alert();
    render(StatusCode::BAD_GATEWAY, &page)
}

/// Percent-encode a `next` value for a query string.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_traversal_are_refused() {
        for ok in [
            "",
            "lab",
            "api/status",
            "api/contents/a%20b.ipynb",
            "files/x/",
            "lab/tree/n.ipynb?x=1",
            "a%2",
            "a%",
        ] {
            assert!(clean_path(ok), "{ok}");
        }
        for bad in [
            "..", "../x", "a/../b", "%2e%2e/x", ".%2E/x", "a/%2E", "a//b", "a%2Fb", "a%5cb", "a\\b", "./a",
            "a%2f", "%5C", "/a",
        ] {
            assert!(!clean_path(bad), "{bad}");
        }
    }

    #[test]
    fn token_query_is_dropped() {
        assert_eq!(strip_token_param("token=abc"), "");
        assert_eq!(strip_token_param("a=1&token=abc&b=2"), "a=1&b=2");
        assert_eq!(strip_token_param("tokens=1&token"), "tokens=1");
        let uri: Uri = "/user/x/lab?token=t&reset".parse().unwrap();
        assert_eq!(upstream_uri(&uri).unwrap(), "/user/x/lab?reset");
        let uri: Uri = "/user/x/api/status".parse().unwrap();
        assert_eq!(upstream_uri(&uri).unwrap(), "/user/x/api/status");
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
        // Without Connection, the others still go.
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), [header::ACCEPT]);
    }

    #[test]
    fn upstream_headers_carry_the_gateways_view_only() {
        let route = Route::new(
            SlotId::parse("0123456789abcdef").unwrap(),
            "c".into(),
            "127.0.0.1:1".parse().unwrap(),
            "tok",
            None,
            0,
        );
        let xff = HeaderValue::from_static("10.0.0.9");
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("gw:8000"));
        h.insert(header::COOKIE, HeaderValue::from_static("nbgate-session=s; _xsrf=x"));
        for (name, value) in
            [("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]
        {
            h.insert(name, HeaderValue::from_static(value));
        }
        prepare_upstream_headers(&mut h, &route, &xff, false, false);
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(h[X_FORWARDED_HOST], "gw:8000");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[header::AUTHORIZATION], "token tok");
        assert_eq!(h[header::COOKIE], "_xsrf=x");
        assert!(!h.contains_key(X_REAL_IP) && !h.contains_key(FORWARDED));
        // A client's own X-Forwarded-Host goes when it sent no Host.
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil"));
        prepare_upstream_headers(&mut h, &route, &xff, true, false);
        assert!(!h.contains_key(X_FORWARDED_HOST));
        assert_eq!(h[X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn polling_is_not_activity() {
        use http::Method;
        assert!(is_background_poll(&Method::GET, "api/kernels"));
        assert!(is_background_poll(&Method::GET, "api/contents/work"));
        assert!(!is_background_poll(&Method::POST, "api/kernels"));
        assert!(!is_background_poll(&Method::GET, "api/kernels/abc/channels"));
        assert!(!is_background_poll(&Method::GET, "lab"));
        assert!(!is_background_poll(&Method::PUT, "api/contents/x.ipynb"));
    }
}
