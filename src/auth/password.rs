//! Usernames, passwords and bcrypt.
//!
//! bcrypt is slow on purpose, so it never runs on an async worker: it goes to
//! the blocking pool behind a semaphore sized to the cores (a login burst
//! queues instead of starving the proxy). An unknown username still pays a
//! verify against a dummy hash, so neither the answer nor its timing says
//! which names exist (SECURITY.md #13).

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use unicode_normalization::UnicodeNormalization;

/// A normalised, allow-listed username: NFKC, lowercase, then
/// `^[a-z][a-z0-9_-]{0,31}$`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Username(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsernameError {
    #[error("Choose a username.")]
    Empty,
    #[error("A username has at most 32 characters.")]
    TooLong,
    #[error("A username starts with a letter and uses only letters a–z, digits, '-' and '_'.")]
    Characters,
}

impl Username {
    pub fn parse(raw: &str) -> Result<Self, UsernameError> {
        if raw.len() > 256 {
            return Err(UsernameError::TooLong);
        }
        let normal: String = raw.nfkc().flat_map(char::to_lowercase).collect();
        if normal.is_empty() {
            return Err(UsernameError::Empty);
        }
        if normal.chars().count() > 32 {
            return Err(UsernameError::TooLong);
        }
        let mut chars = normal.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        if !first_ok || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') {
            return Err(UsernameError::Characters);
        }
        Ok(Self(normal))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Hex sha256 of the name: the volume name's middle part and the unique key.
    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a new password is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("A password has at least 8 characters.")]
    TooShort,
    #[error(
        "A password has at most 72 bytes (bcrypt's limit); it is never cut short, so choose a shorter one."
    )]
    TooLong,
    #[error("The two passwords do not match.")]
    Mismatch,
}

/// Check a new password and its confirmation. Over 72 bytes is refused, never
/// truncated: bcrypt would silently ignore the rest.
pub fn check_new_password(password: &str, confirm: &str) -> Result<(), PasswordError> {
    if password.len() > 72 {
        return Err(PasswordError::TooLong);
    }
    if password.chars().count() < 8 {
        return Err(PasswordError::TooShort);
    }
    if password != confirm {
        return Err(PasswordError::Mismatch);
    }
    Ok(())
}

/// bcrypt on the blocking pool, bounded.
pub struct Hasher {
    permits: Arc<Semaphore>,
    cost: u32,
    /// A real hash of a random password, for unknown users.
    dummy: String,
}

impl Hasher {
    pub fn new(cost: u32) -> Self {
        let dummy = bcrypt::hash(crate::slot::random_token(), cost).expect("bcrypt of a short password");
        Self { permits: Arc::new(Semaphore::new(hashes_at_once())), cost, dummy }
    }

    pub async fn hash(&self, password: &str) -> Result<String, bcrypt::BcryptError> {
        let _permit = self.permits.acquire().await.expect("never closed");
        let (password, cost) = (password.to_string(), self.cost);
        tokio::task::spawn_blocking(move || yielding(|| bcrypt::hash(password, cost)))
            .await
            .expect("bcrypt does not panic")
    }

    /// Verify against `hash`, or against the dummy when the user is unknown, so
    /// the time taken is the same.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> bool {
        if password.len() > 72 {
            // Could never have been set; still pay the same time.
            let _ = self.verify_inner(password[..72].to_string(), self.dummy.clone()).await;
            return false;
        }
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.dummy).to_string();
        self.verify_inner(password.to_string(), hash).await && known
    }

    async fn verify_inner(&self, password: String, hash: String) -> bool {
        let _permit = self.permits.acquire().await.expect("never closed");
        tokio::task::spawn_blocking(move || yielding(|| bcrypt::verify(password, &hash).unwrap_or(false)))
            .await
            .unwrap_or(false)
    }
}

/// Run `work` on this (blocking-pool) thread at nice 10. A burst of logins
/// then takes only the CPU that the proxy's threads and the notebook servers
/// in use leave over: their requests are not queued behind 60 ms hashes. The
/// thread goes back to nice 0 afterwards (as root; otherwise it stays lower,
/// which only delays other blocking work).
fn yielding<T>(work: impl FnOnce() -> T) -> T {
    // On Linux, PRIO_PROCESS with pid 0 is the calling thread.
    let _ = rustix::process::setpriority_process(None, BCRYPT_NICE);
    let out = work();
    let _ = rustix::process::setpriority_process(None, 0);
    out
}

/// Hashes run at once: the cores less one, at least one. A niced hash still
/// holds its core for a scheduler slice (~1 ms) before a woken proxy thread or
/// notebook server gets it; with every core hashing through a login storm, that
/// wait landed on each hop of a running user's requests (p50 ×1.5–1.8 on 2
/// cores, bench figure 9). One core stays free of bcrypt.
fn hashes_at_once() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    cores.saturating_sub(1).max(1)
}

/// Nice value of the threads that run bcrypt.
const BCRYPT_NICE: i32 = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_runs_at_a_lower_priority_and_the_thread_goes_back() {
        std::thread::spawn(|| {
            let during = yielding(|| rustix::process::getpriority_process(None).unwrap());
            assert_eq!(during, BCRYPT_NICE);
            let after = rustix::process::getpriority_process(None).unwrap();
            // Only root may lower a thread's nice value again.
            if crate::volumes::bind::is_root() {
                assert_eq!(after, 0);
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn names_normalise_then_allow_list() {
        for (raw, want) in
            [("Bob", "bob"), ("ｂob", "bob"), ("BOB_1", "bob_1"), ("a-b", "a-b"), ("ａdmin", "admin")]
        {
            assert_eq!(Username::parse(raw).unwrap().as_str(), want, "{raw}");
        }
        for bad in [
            "bob\u{200b}",
            "bob ",
            " bob",
            "../x",
            "a/b",
            "1bob",
            "_bob",
            "bob!",
            "bøb",
            "",
            "a\r\nb",
            "\u{1b}[31mbob",
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Username::parse(&"a".repeat(33)), Err(UsernameError::TooLong));
        assert_eq!(Username::parse(&"a".repeat(1_000_000)), Err(UsernameError::TooLong));
        assert!(Username::parse(&"a".repeat(32)).is_ok());
        assert_eq!(Username::parse("bob").unwrap().sha256_hex().len(), 64);
    }

    #[test]
    fn passwords_are_checked_not_truncated() {
        assert_eq!(check_new_password("short", "short"), Err(PasswordError::TooShort));
        assert_eq!(check_new_password(&"x".repeat(73), &"x".repeat(73)), Err(PasswordError::TooLong));
        assert_eq!(
            check_new_password("é".repeat(37).as_str(), "é".repeat(37).as_str()),
            Err(PasswordError::TooLong)
        );
        assert_eq!(check_new_password("password1", "password2"), Err(PasswordError::Mismatch));
        assert_eq!(check_new_password(&"x".repeat(72), &"x".repeat(72)), Ok(()));
    }

    #[tokio::test]
    async fn hashes_leave_a_core_free_and_wait_for_a_permit() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        assert!(hashes_at_once() >= 1);
        assert!(
            cores == 1 || hashes_at_once() < cores,
            "{} hashes at once on {cores} cores",
            hashes_at_once()
        );
        let h = Hasher::new(4);
        let held = h.permits.clone().acquire_many_owned(hashes_at_once() as u32).await.unwrap();
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(300), h.hash("correct horse")).await;
        assert!(waiting.is_err(), "a hash ran although every permit was taken");
        drop(held);
        assert!(h.hash("correct horse").await.is_ok());
    }

    #[tokio::test]
    async fn hashing_and_dummy_verify() {
        let h = Hasher::new(4);
        let hash = h.hash("correct horse").await.unwrap();
        assert!(h.verify("correct horse", Some(&hash)).await);
        assert!(!h.verify("wrong horse", Some(&hash)).await);
        assert!(!h.verify("correct horse", None).await, "unknown users never pass");
        assert!(!h.verify(&"x".repeat(80), Some(&hash)).await);
    }
}
