//! In-memory throttle for guessing a shared secret from one address: after a
//! few failures, each further try must wait, doubling up to a cap. A success
//! clears it; nobody is locked out for good.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FREE_TRIES: u32 = 5;
const MAX_WAIT: Duration = Duration::from_secs(300);
/// Most addresses remembered; the oldest are dropped past this (memory stays flat).
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct Throttle {
    entries: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    /// Time still to wait before this address may try again.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let entries = self.entries.lock().expect("throttle lock");
        let (failures, last) = *entries.get(&ip)?;
        let wait = delay(failures);
        let elapsed = last.elapsed();
        (elapsed < wait).then(|| wait - elapsed)
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut entries = self.entries.lock().expect("throttle lock");
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&ip) {
            if let Some(oldest) = entries.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) {
                entries.remove(&oldest);
            }
        }
        let e = entries.entry(ip).or_insert((0, Instant::now()));
        e.0 += 1;
        e.1 = Instant::now();
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.entries.lock().expect("throttle lock").remove(&ip);
    }
}

fn delay(failures: u32) -> Duration {
    if failures < FREE_TRIES {
        return Duration::ZERO;
    }
    (Duration::from_secs(1) * 2u32.saturating_pow((failures - FREE_TRIES).min(16))).min(MAX_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_after_free_tries_and_success_clears() {
        let t = Throttle::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..4 {
            t.failed(ip);
            assert!(t.blocked(ip).is_none());
        }
        t.failed(ip);
        assert!(t.blocked(ip).unwrap() <= Duration::from_secs(1));
        t.failed(ip);
        assert!(t.blocked(ip).unwrap() > Duration::from_secs(1));
        assert!(t.blocked([10, 0, 0, 2].into()).is_none(), "per address");
        t.succeeded(ip);
        assert!(t.blocked(ip).is_none());
        assert_eq!(delay(100), MAX_WAIT);
    }
}

/// Failed logins and wrong keys, throttled through the DB (a restart does not
/// reset them): after [`FREE_TRIES`] failures each attempt must wait, doubling
/// to at most 15 minutes; an hour without failures forgets them. The real user
/// is slowed, never locked out for good.
pub mod persistent {
    use crate::db::{self, Db};

    const MAX_WAIT_SECS: i64 = 15 * 60;
    const FORGET_AFTER_SECS: i64 = 3600;

    fn wait_secs(count: i64) -> i64 {
        if count < super::FREE_TRIES as i64 {
            return 0;
        }
        (2i64 << (count - super::FREE_TRIES as i64).min(20)).min(MAX_WAIT_SECS)
    }

    /// Seconds still to wait before `scope` may try again.
    pub async fn wait(db: &Db, scope: &str, now: i64) -> Result<Option<i64>, sqlx::Error> {
        Ok(db::failures::get(db, scope).await?.and_then(|(count, last_at)| {
            let until = last_at + wait_secs(count);
            (now - last_at < FORGET_AFTER_SECS && until > now).then_some(until - now)
        }))
    }

    pub async fn failed(db: &Db, scope: &str, now: i64) -> Result<(), sqlx::Error> {
        db::failures::record(db, scope, now, FORGET_AFTER_SECS).await
    }

    pub async fn clear(db: &Db, scope: &str) -> Result<(), sqlx::Error> {
        db::failures::clear(db, scope).await
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn waits() {
            assert_eq!(super::wait_secs(4), 0);
            assert_eq!(super::wait_secs(5), 2);
            assert_eq!(super::wait_secs(8), 16);
            assert_eq!(super::wait_secs(60), super::MAX_WAIT_SECS);
        }
    }
}
