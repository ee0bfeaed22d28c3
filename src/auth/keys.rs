//! Registration keys: the one in the config (`NBGATE_REGISTRATION_KEY`) and the
//! ones in the DB, each with optional uses, expiry, account lifetime and
//! approved e-mail domains (`gmail.com`, `*.edu`, `*`).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::db::{self, Db};

/// The outcome of checking a submitted key.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyCheck {
    Valid { key_id: Option<i64>, account_days: Option<i64> },
    Wrong,
    UsedUp,
    Expired,
    EmailRequired,
    EmailNotAllowed,
}

impl KeyCheck {
    /// What the register page says.
    pub fn message(&self) -> &'static str {
        match self {
            KeyCheck::Valid { .. } => "",
            KeyCheck::Wrong => "That registration key is not valid. Check it against the organizer's slide.",
            KeyCheck::UsedUp => {
                "That registration key has been used as many times as allowed. Ask the organizer for another."
            }
            KeyCheck::Expired => "That registration key has expired. Ask the organizer for a current one.",
            KeyCheck::EmailRequired => "This registration key needs your e-mail address.",
            KeyCheck::EmailNotAllowed => {
                "This registration key does not accept e-mail addresses from that domain."
            }
        }
    }
}

pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.trim().as_bytes()).into()
}

/// Check `submitted` (and the e-mail, where the key asks for one).
pub async fn check(
    db: &Db,
    config_key: Option<&str>,
    submitted: &str,
    email: Option<&str>,
    now: i64,
) -> Result<KeyCheck, sqlx::Error> {
    let hash = key_hash(submitted);
    if let Some(k) = config_key {
        // Digests compared in constant time, whatever the lengths.
        if bool::from(key_hash(k).ct_eq(&hash)) {
            return Ok(KeyCheck::Valid { key_id: None, account_days: None });
        }
    }
    let Some(row) = db::keys::find_by_hash(db, &hash).await? else { return Ok(KeyCheck::Wrong) };
    if row.revoked != 0 {
        return Ok(KeyCheck::Wrong);
    }
    if row.valid_until.is_some_and(|t| t <= now) {
        return Ok(KeyCheck::Expired);
    }
    if row.max_uses.is_some_and(|m| row.uses >= m) {
        return Ok(KeyCheck::UsedUp);
    }
    if let Some(patterns) = row.email_domains.as_deref() {
        let Some(email) = email.map(str::trim).filter(|e| !e.is_empty()) else {
            return Ok(KeyCheck::EmailRequired);
        };
        let allowed =
            email_domain(email).is_some_and(|d| patterns.split(',').any(|p| domain_matches(p.trim(), &d)));
        if !allowed {
            return Ok(KeyCheck::EmailNotAllowed);
        }
    }
    Ok(KeyCheck::Valid { key_id: Some(row.id), account_days: row.account_days })
}

/// The lowercase domain of a plausible address.
pub fn email_domain(email: &str) -> Option<String> {
    let (local, domain) = email.rsplit_once('@')?;
    let domain = domain.to_ascii_lowercase();
    let ok = !local.is_empty()
        && email.len() <= 254
        && !email.chars().any(|c| c.is_control() || c.is_whitespace())
        && domain.contains('.')
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    ok.then_some(domain)
}

/// `*` matches any domain, `*.edu` any domain under `edu`, others exactly.
pub fn domain_matches(pattern: &str, domain: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*") {
        Some("") => true,
        Some(suffix) if suffix.starts_with('.') => domain.ends_with(suffix) && domain.len() > suffix.len(),
        _ => pattern == domain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(domain_matches("gmail.com", "gmail.com"));
        assert!(!domain_matches("gmail.com", "evilgmail.com"));
        assert!(domain_matches("*.edu", "cs.mit.edu"));
        assert!(!domain_matches("*.edu", "edu"));
        assert!(!domain_matches("*.edu", "evil.education"));
        assert!(domain_matches("*", "anything.org"));
        assert_eq!(email_domain("Ann@CS.MIT.EDU").as_deref(), Some("cs.mit.edu"));
        for bad in ["ann", "@x.org", "ann@", "ann@localhost", "a b@x.org", "ann@x..org"] {
            assert_eq!(email_domain(bad), None, "{bad}");
        }
    }
}
