//! `next=` targets: only a same-origin path survives (SECURITY.md #1).

/// `Some(path)` if `next` is a local path with exactly one leading `/`, checked
/// both as given and percent-decoded (browsers treat `\` like `/`, and
/// `/%2F/evil.com` may be decoded by someone on the way).
pub fn safe_next(next: &str) -> Option<String> {
    // Browsers drop tabs and newlines inside URLs: `/\t/evil.com` is `//evil.com`.
    fn local(p: &str) -> bool {
        let p: String = p.chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')).collect();
        p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && !p.chars().any(char::is_control)
    }
    if next.len() > 2048 || next.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    let once = percent_decode(next)?;
    let twice = percent_decode(&once)?;
    (local(next) && local(&once) && local(&twice)).then(|| next.to_string())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths() {
        for ok in ["/", "/hub/home", "/user/0123456789abcdef/lab?x=1", "/user/a/lab/tree/b%20c.ipynb"] {
            assert_eq!(safe_next(ok).as_deref(), Some(ok), "{ok}");
        }
        for bad in [
            "//evil.com",
            "///evil.com",
            "\\\\evil.com",
            "/\\evil.com",
            "https:evil.com",
            "https://evil.com",
            "%2F%2Fevil.com",
            "/%2F/evil.com",
            "/%2f%2fevil.com",
            "/%09/evil.com",
            "/%5cevil.com",
            "/%252F/evil.com",
            "https://OURHOST//evil.com",
            "evil.com",
            "",
            "/\t/evil.com",
            "/%zz",
        ] {
            assert_eq!(safe_next(bad), None, "{bad}");
        }
    }
}
