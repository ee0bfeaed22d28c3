//! Session cookies. The cookie carries 256 random bits; the DB and the routing
//! table only ever see their sha256, so neither a DB copy nor a log line lets
//! anyone sign in.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cookie::{Cookie, SameSite};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::proxy::routes::SessionHash;

/// Cookie names. Under TLS the `__Host-` prefix makes the browser refuse the
/// cookie unless Secure, host-only and `Path=/`, which defeats cookie tossing
/// from sibling domains (SECURITY.md #3).
pub fn session_cookie(tls: bool) -> &'static str {
    if tls {
        "__Host-nbgate-session"
    } else {
        "nbgate-session"
    }
}

/// A fresh session id: the cookie value and its hash.
pub fn new_session() -> (String, SessionHash) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let value = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash(&value);
    (value, hash)
}

pub fn hash(value: &str) -> SessionHash {
    Sha256::digest(value.as_bytes()).into()
}

/// Every value of cookie `name` in the request, in order (at most 4). More than
/// one can arrive (a tossed cookie with another Path or Domain); callers try
/// each, and a value only ever grants what its own session owns. Lazy: the
/// proxy runs this on every request.
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(COOKIE)
        .into_iter()
        .filter_map(|header| header.to_str().ok())
        .flat_map(|text| text.split(';'))
        .filter_map(move |pair| match pair.trim().split_once('=') {
            Some((k, v)) if k == name && !v.is_empty() && v.len() <= 128 => Some(v),
            _ => None,
        })
        .take(4)
}

/// Hashes of the session cookies presented.
pub fn presented(headers: &HeaderMap, tls: bool) -> impl Iterator<Item = SessionHash> + '_ {
    cookie_values(headers, session_cookie(tls)).map(hash)
}

/// `Set-Cookie` for a cookie of ours: HttpOnly, SameSite=Lax, Path=/, and
/// Secure under TLS. `max_age` None deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: Option<std::time::Duration>, tls: bool) -> HeaderValue {
    let mut c = Cookie::build((name.to_string(), value.to_string()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(tls)
        .build();
    match max_age {
        Some(age) => c.set_max_age(cookie::time::Duration::seconds(age.as_secs() as i64)),
        None => c.make_removal(),
    }
    HeaderValue::from_str(&c.to_string()).expect("cookie is a valid header")
}

/// Remove our own cookies from a `Cookie` header bound upstream: the gateway's
/// session must never reach a notebook server (SECURITY.md #10).
pub fn strip_ours(headers: &mut HeaderMap) {
    if !headers.contains_key(COOKIE) {
        return;
    }
    let mut kept = String::new();
    for pair in headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')) {
        let pair = pair.trim();
        let name = pair.split('=').next().unwrap_or("");
        if pair.is_empty() || name.starts_with("nbgate-") || name.starts_with("__Host-nbgate-") {
            continue;
        }
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(pair);
    }
    headers.remove(COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept) {
            headers.insert(COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_random_and_hashed() {
        let (a, ha) = new_session();
        let (b, hb) = new_session();
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(hash(&a), ha);
        assert_eq!(a.len(), 43, "256 bits, base64url");
    }

    #[test]
    fn cookie_values_finds_every_copy() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; nbgate-session=x; b=2"));
        h.append(COOKIE, HeaderValue::from_static("nbgate-session=y"));
        assert_eq!(cookie_values(&h, "nbgate-session").collect::<Vec<_>>(), vec!["x", "y"]);
        assert!(cookie_values(&h, "__Host-nbgate-session").next().is_none());
    }

    #[test]
    fn our_cookies_never_go_upstream() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("_xsrf=j; nbgate-session=x; nbgate-access=z"));
        h.append(COOKIE, HeaderValue::from_static("__Host-nbgate-session=y; theme=dark"));
        strip_ours(&mut h);
        assert_eq!(h.get(COOKIE).unwrap(), "_xsrf=j; theme=dark");
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("nbgate-session=x"));
        strip_ours(&mut h);
        assert!(h.get(COOKIE).is_none());
    }

    #[test]
    fn set_cookie_flags() {
        let c = set_cookie("nbgate-session", "v", Some(std::time::Duration::from_secs(60)), false);
        let s = c.to_str().unwrap();
        assert!(s.contains("HttpOnly") && s.contains("SameSite=Lax") && s.contains("Path=/"), "{s}");
        assert!(!s.contains("Secure"));
        let s = set_cookie("__Host-nbgate-session", "v", None, true).to_str().unwrap().to_string();
        assert!(s.contains("Secure") && s.contains("Max-Age=0"), "{s}");
    }
}
