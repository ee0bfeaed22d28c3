//! Cross-site request protection for the gateway's own forms and for proxied
//! requests.
//!
//! Forms carry `_xsrf` = HMAC(secret, browser id), where the browser id is a
//! random cookie; a POST is accepted only with a matching token *and* a
//! same-origin `Origin` (or, without one, `Sec-Fetch-Site`/`Referer`).
//! JupyterLab's own check is off behind the token header (DESIGN.md "Verified"
//! 5), so the proxy applies the same origin rule to WebSocket upgrades and
//! state-changing methods.

use hmac::{Hmac, Mac};
use http::header::{HOST, ORIGIN, REFERER};
use http::{HeaderMap, Method};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Cookie holding the random browser id the form token is bound to.
pub fn browser_cookie(tls: bool) -> &'static str {
    if tls {
        "__Host-nbgate-xsrf"
    } else {
        "nbgate-xsrf"
    }
}

/// The form token for a browser id.
pub fn token(secret: &[u8], browser_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"xsrf:");
    mac.update(browser_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time check of a submitted token.
pub fn verify(secret: &[u8], browser_id: &str, submitted: &str) -> bool {
    let want = token(secret, browser_id);
    !browser_id.is_empty() && bool::from(want.as_bytes().ct_eq(submitted.as_bytes()))
}

/// Whether a request comes from the gateway's own pages. Browsers send
/// `Origin` on every POST and WebSocket upgrade; with neither `Origin` nor the
/// fetch metadata nor a `Referer`, the client is not a browser, and cookies
/// alone decide.
pub fn same_origin(headers: &HeaderMap, tls: bool) -> bool {
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let ours = format!("{}://{}", if tls { "https" } else { "http" }, host);
    if let Some(origin) = headers.get(ORIGIN) {
        return origin.to_str().is_ok_and(|o| o.eq_ignore_ascii_case(&ours));
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin") | Ok("none"));
    }
    if let Some(referer) = headers.get(REFERER) {
        let Ok(r) = referer.to_str() else { return false };
        return r.len() > ours.len()
            && r[..ours.len()].eq_ignore_ascii_case(&ours)
            && r.as_bytes()[ours.len()] == b'/';
    }
    true
}

/// Methods that change state and so need the origin check.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origin_rules() {
        let host = ("host", "gw.example:8000");
        assert!(same_origin(&headers(&[host, ("origin", "http://gw.example:8000")]), false));
        assert!(!same_origin(&headers(&[host, ("origin", "http://gw.example:8000")]), true));
        for bad in
            ["https://evil.example", "null", "http://gw.example:8000.evil.example", "http://gw.example"]
        {
            let h = headers(&[host, ("origin", bad)]);
            assert!(!same_origin(&h, false), "{bad}");
        }
        assert!(!same_origin(&headers(&[host, ("sec-fetch-site", "cross-site")]), false));
        assert!(!same_origin(&headers(&[host, ("sec-fetch-site", "same-site")]), false));
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "same-origin")]), false));
        assert!(same_origin(&headers(&[host, ("referer", "http://gw.example:8000/hub/login")]), false));
        assert!(!same_origin(&headers(&[host, ("referer", "http://gw.example:8000.evil/x")]), false));
        assert!(same_origin(&headers(&[host]), false), "non-browser clients");
        assert!(!same_origin(&headers(&[("origin", "http://gw.example:8000")]), false), "no Host");
    }

    #[test]
    fn tokens_bind_to_the_browser() {
        let t = token(b"secret", "browser-1");
        assert!(verify(b"secret", "browser-1", &t));
        assert!(!verify(b"secret", "browser-2", &t));
        assert!(!verify(b"other", "browser-1", &t));
        assert!(!verify(b"secret", "", &token(b"secret", "")));
    }
}
