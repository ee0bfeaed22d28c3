//! The warm pool: containers started ahead of time, with Jupyter answering, so
//! a visit or login only has to hand one out.
//!
//! In memory: the warm queue, which containers are starting, and whether Docker
//! answers. Assigned containers are in the routing table (`proxy::routes`) and
//! the DB; a container is used by one user once and never returns to the pool.

pub mod binder;
pub mod spec;
pub mod supervise;

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::slot::SlotId;

/// A started container, Jupyter answering, not yet handed out.
#[derive(Clone, Debug)]
pub struct Warm {
    pub slot: SlotId,
    pub container_id: String,
    pub upstream: SocketAddr,
    pub token: String,
}

#[derive(Default)]
struct State {
    warm: VecDeque<Warm>,
    /// Slots being created or started; reconcile leaves them alone.
    starting: HashSet<SlotId>,
    docker_up: bool,
    /// Consecutive failed starts; drives backoff.
    failures: u32,
    /// Why the last start failed, until one succeeds.
    start_error: Option<String>,
    /// Taken from the pool but not yet in the routing table: still counts
    /// against the cap, or a refill in between could overshoot it.
    taken: u32,
    /// Tickets of those waiting for a warm container, first come first served.
    line: VecDeque<u64>,
    next_ticket: u64,
    /// When the last warm container became ready: waiting is worth it while
    /// the pool keeps producing.
    produced_at: Option<tokio::time::Instant>,
}

impl State {
    fn blocked_by_full_disk(&self) -> bool {
        self.warm.is_empty() && self.start_error.as_deref().is_some_and(crate::web::pages::is_disk_full)
    }

    fn take_warm(&mut self) -> Option<Warm> {
        let warm = self.warm.pop_front()?;
        self.taken += 1;
        Some(warm)
    }
}

/// Numbers for /hub/health and metrics.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Counts {
    pub warm: u32,
    pub starting: u32,
}

#[derive(Default)]
pub struct Pool {
    state: Mutex<State>,
    /// Wakes the refill loop (a slot was taken, a container died, …).
    pub(crate) wake_refill: Notify,
    /// Wakes those waiting in line: a container became warm, someone left
    /// the line, a start failed, or Docker went away.
    line_moved: Notify,
    /// Held while Docker creates and starts a container: one at a time. Parallel
    /// creates (network namespace, veth, mounts, all done by dockerd and the
    /// kernel outside any container's CPU weight) stall the servers people use
    /// on a busy host; JupyterLab's own start-up still runs in parallel.
    pub(crate) creating: tokio::sync::Mutex<()>,
}

impl Pool {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("pool lock")
    }

    pub fn counts(&self) -> Counts {
        let s = self.state();
        Counts { warm: s.warm.len() as u32, starting: s.starting.len() as u32 }
    }

    pub fn docker_up(&self) -> bool {
        self.state().docker_up
    }

    /// Whether Docker answers, waiting up to `wait` for it (the gateway may
    /// have just started and not reconciled yet).
    pub async fn docker_up_within(&self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while !self.docker_up() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    pub(crate) fn set_docker_up(&self, up: bool) {
        self.state().docker_up = up;
        if !up {
            // Nobody waiting for a warm container will get one now: let them
            // answer "restarting" instead of waiting out their deadline.
            self.line_moved.notify_waiters();
        }
    }

    /// Take the oldest warm container, if any and nobody is waiting for one
    /// (they came first). It counts against the cap until the returned guard
    /// is dropped: drop it after the route is in the table.
    pub fn take(&self) -> Option<Taken<'_>> {
        let mut s = self.state();
        if !s.line.is_empty() {
            return None;
        }
        let warm = s.take_warm()?;
        Some(Taken { pool: self, warm })
    }

    /// Wait in line for a warm container: first come, first served. Gives up
    /// when none has become ready for `stall` (the pool is stuck), after
    /// `limit` in all, or at once if Docker is (or goes) away or starts fail
    /// on a full disk.
    pub async fn acquire(&self, stall: Duration, limit: Duration) -> Option<Taken<'_>> {
        let start = tokio::time::Instant::now();
        let place = {
            let mut s = self.state();
            s.next_ticket += 1;
            let ticket = s.next_ticket;
            s.line.push_back(ticket);
            Place { pool: self, ticket }
        };
        loop {
            // Register interest before checking, so a change in between is not missed.
            let changed = self.line_moved.notified();
            let deadline = {
                let mut s = self.state();
                if s.line.front() == Some(&place.ticket) {
                    if let Some(warm) = s.take_warm() {
                        drop(s);
                        return Some(Taken { pool: self, warm });
                    }
                }
                if !s.docker_up || s.blocked_by_full_disk() {
                    return None;
                }
                let progress = s.produced_at.map_or(start, |p| p.max(start));
                (progress + stall).min(start + limit)
            };
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }

    pub(crate) fn push_warm(&self, warm: Warm) {
        {
            let mut s = self.state();
            s.starting.remove(&warm.slot);
            s.failures = 0;
            s.start_error = None;
            s.produced_at = Some(tokio::time::Instant::now());
            s.warm.push_back(warm);
        }
        self.line_moved.notify_waiters();
    }

    /// Forget a warm container (it died or was removed). True if it was warm.
    pub(crate) fn forget(&self, container_id: &str) -> bool {
        let mut s = self.state();
        let before = s.warm.len();
        s.warm.retain(|w| w.container_id != container_id);
        let removed = s.warm.len() != before;
        drop(s);
        if removed {
            self.wake_refill.notify_one();
        }
        removed
    }

    /// Drop every warm entry (Docker restarted: they are gone).
    pub(crate) fn forget_all(&self) -> Vec<Warm> {
        self.state().warm.drain(..).collect()
    }

    pub(crate) fn is_known(&self, slot: &SlotId) -> bool {
        let s = self.state();
        s.starting.contains(slot) || s.warm.iter().any(|w| &w.slot == slot)
    }

    /// How many starts to launch now: fill to `pool_size` within `cap`
    /// (counting `assigned`) and at most `parallel` at once. Reserves them.
    pub(crate) fn plan_starts(&self, pool_size: u32, cap: u32, assigned: u32, parallel: u32) -> Vec<SlotId> {
        let mut s = self.state();
        if !s.docker_up {
            return Vec::new();
        }
        let warm = s.warm.len() as u32;
        let starting = s.starting.len() as u32;
        let want = pool_size.saturating_sub(warm + starting);
        let room = cap.saturating_sub(warm + starting + assigned + s.taken);
        let slots = parallel.saturating_sub(starting);
        let n = want.min(room).min(slots);
        (0..n)
            .map(|_| {
                let slot = SlotId::random();
                s.starting.insert(slot.clone());
                slot
            })
            .collect()
    }

    /// Reserve room for one container started for a user (not the pool), if
    /// the cap allows. Release it with [`Pool::release`].
    pub(crate) fn reserve(&self, cap: u32, assigned: u32) -> Option<SlotId> {
        let mut s = self.state();
        let used = s.warm.len() as u32 + s.starting.len() as u32 + assigned + s.taken;
        if used >= cap {
            return None;
        }
        let slot = SlotId::random();
        s.starting.insert(slot.clone());
        Some(slot)
    }

    pub(crate) fn release(&self, slot: &SlotId) {
        self.state().starting.remove(slot);
        self.wake_refill.notify_one();
    }

    /// Containers taken from the pool and not yet routed.
    pub fn taken(&self) -> u32 {
        self.state().taken
    }

    /// No room at all: nothing warm, nothing starting, the cap reached.
    pub fn full(&self, cap: u32, assigned: u32) -> bool {
        let s = self.state();
        s.warm.is_empty() && s.starting.is_empty() && assigned + s.taken >= cap
    }

    pub(crate) fn start_failed(&self, slot: &SlotId, error: &str) -> u32 {
        let mut s = self.state();
        s.starting.remove(slot);
        s.failures += 1;
        s.start_error = Some(error.to_string());
        let n = s.failures;
        drop(s);
        // Waiters re-check: a full disk will not be fixed by waiting.
        self.line_moved.notify_waiters();
        n
    }

    /// Why starts are failing, if the last one did.
    pub fn start_error(&self) -> Option<String> {
        self.state().start_error.clone()
    }

    /// Nothing warm and starts fail because a disk is full: waiting will not
    /// help until the organizer frees space, so say so instead of "starting".
    pub fn blocked_by_full_disk(&self) -> bool {
        self.state().blocked_by_full_disk()
    }

    /// How many wait in line for a warm container.
    pub fn waiting(&self) -> usize {
        self.state().line.len()
    }

    pub(crate) fn failures(&self) -> u32 {
        self.state().failures
    }
}

/// A place in the line for warm containers; leaving it (served, gave up or
/// cancelled) lets the next one in line look.
struct Place<'a> {
    pool: &'a Pool,
    ticket: u64,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.pool.state().line.retain(|t| *t != self.ticket);
        self.pool.line_moved.notify_waiters();
    }
}

/// A warm container on its way to a user; see [`Pool::take`].
pub struct Taken<'a> {
    pool: &'a Pool,
    pub warm: Warm,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.pool.state().taken -= 1;
        self.pool.wake_refill.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warm(n: u8) -> Warm {
        Warm {
            slot: SlotId::random(),
            container_id: format!("c{n}"),
            upstream: ([127, 0, 0, 1], 1000 + n as u16).into(),
            token: "t".into(),
        }
    }

    #[test]
    fn plans_fill_to_size_within_cap_and_parallelism() {
        let pool = Pool::new();
        assert!(pool.plan_starts(4, 10, 0, 2).is_empty(), "nothing while Docker is down");
        pool.set_docker_up(true);
        assert_eq!(pool.plan_starts(4, 10, 0, 2).len(), 2, "bounded by parallelism");
        assert_eq!(pool.plan_starts(4, 10, 0, 2).len(), 0, "two already starting");
        assert_eq!(pool.counts().starting, 2);

        let pool = Pool::new();
        pool.set_docker_up(true);
        assert_eq!(pool.plan_starts(4, 5, 4, 8).len(), 1, "cap counts assigned containers");
        assert_eq!(pool.plan_starts(4, 5, 4, 8).len(), 0);
    }

    #[test]
    fn warm_is_fifo_and_forget_removes() {
        let pool = Pool::new();
        pool.push_warm(warm(1));
        pool.push_warm(warm(2));
        pool.push_warm(warm(3));
        assert!(pool.forget("c2"));
        assert!(!pool.forget("c2"));
        assert_eq!(pool.take().unwrap().warm.container_id, "c1");
        assert_eq!(pool.take().unwrap().warm.container_id, "c3");
        assert!(pool.take().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_a_warm_container() {
        let pool = std::sync::Arc::new(Pool::new());
        pool.set_docker_up(true);
        let p = pool.clone();
        let waiter = tokio::spawn(async move {
            p.acquire(Duration::from_secs(10), Duration::from_secs(10)).await.map(|t| t.warm.clone())
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        pool.push_warm(warm(7));
        assert_eq!(waiter.await.unwrap().unwrap().container_id, "c7");
        assert!(
            pool.acquire(Duration::from_secs(5), Duration::from_secs(5)).await.is_none(),
            "times out when none comes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_arrival_order_and_nobody_jumps_the_line() {
        let pool = std::sync::Arc::new(Pool::new());
        pool.set_docker_up(true);
        let mut waiters = Vec::new();
        for n in 0..3 {
            let p = pool.clone();
            waiters.push(tokio::spawn(async move {
                let t = p.acquire(Duration::from_secs(60), Duration::from_secs(60)).await;
                (n, t.map(|t| t.warm.container_id.clone()))
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // One who gives up leaves the line without holding anyone up.
        let p = pool.clone();
        let quitter = tokio::spawn(async move {
            p.acquire(Duration::from_secs(60), Duration::from_secs(60)).await.is_some()
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        quitter.abort();
        assert_eq!(pool.waiting(), 4);
        let _ = quitter.await;
        assert_eq!(pool.waiting(), 3);
        for i in 1..=3u8 {
            pool.push_warm(warm(i));
            // A login that finds a warm container must not take it from those waiting.
            assert!(pool.take().is_none(), "jumped the line");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (i, w) in waiters.into_iter().enumerate() {
            let (n, id) = w.await.unwrap();
            assert_eq!((n, id.as_deref()), (i, Some(format!("c{}", i + 1).as_str())));
        }
        assert_eq!(pool.waiting(), 0);
        pool.push_warm(warm(9));
        assert!(pool.take().is_some(), "with nobody waiting, take works");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_lasts_while_the_pool_produces() {
        let pool = std::sync::Arc::new(Pool::new());
        pool.set_docker_up(true);
        let first = {
            let p = pool.clone();
            tokio::spawn(async move {
                p.acquire(Duration::from_secs(10), Duration::from_secs(3600)).await.is_some()
            })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        let second = {
            let p = pool.clone();
            tokio::spawn(async move {
                p.acquire(Duration::from_secs(10), Duration::from_secs(3600)).await.is_some()
            })
        };
        // One container every 8 s: the second waits 16 s, longer than the
        // 10 s stall allowance, and is still served.
        for i in 1..=2 {
            tokio::time::sleep(Duration::from_secs(8)).await;
            pool.push_warm(warm(i));
        }
        assert!(first.await.unwrap());
        assert!(second.await.unwrap());
        // Nothing produced for the stall time: give up.
        let started = tokio::time::Instant::now();
        assert!(pool.acquire(Duration::from_secs(10), Duration::from_secs(3600)).await.is_none());
        assert!(started.elapsed() <= Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_give_up_at_once_when_docker_goes_away() {
        let pool = std::sync::Arc::new(Pool::new());
        pool.set_docker_up(true);
        let p = pool.clone();
        let started = tokio::time::Instant::now();
        let waiter = tokio::spawn(async move {
            p.acquire(Duration::from_secs(30), Duration::from_secs(30)).await.is_some()
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        pool.set_docker_up(false);
        assert!(!waiter.await.unwrap());
        assert!(started.elapsed() < Duration::from_secs(2), "waited {:?}", started.elapsed());
        let started = tokio::time::Instant::now();
        assert!(pool.acquire(Duration::from_secs(30), Duration::from_secs(30)).await.is_none());
        assert_eq!(started.elapsed(), Duration::ZERO, "no waiting while Docker is down");
    }

    #[test]
    fn a_taken_container_counts_against_the_cap_until_routed() {
        let pool = Pool::new();
        pool.set_docker_up(true);
        pool.push_warm(warm(1));
        let taken = pool.take().unwrap();
        assert!(pool.plan_starts(1, 1, 0, 4).is_empty(), "taken but not yet assigned still fills the cap");
        drop(taken);
        assert!(pool.plan_starts(1, 1, 1, 4).is_empty(), "now the route counts");
        assert_eq!(pool.plan_starts(1, 2, 1, 4).len(), 1);
    }

    #[test]
    fn failures_count_until_a_success() {
        let pool = Pool::new();
        pool.set_docker_up(true);
        let planned = pool.plan_starts(2, 2, 0, 2);
        assert_eq!(pool.start_failed(&planned[0], "connection refused"), 1);
        assert!(!pool.blocked_by_full_disk());
        assert_eq!(pool.start_failed(&planned[1], "mkdir /var/lib/docker/x: no space left on device"), 2);
        assert!(pool.blocked_by_full_disk(), "the last failure decides");
        let mut w = warm(1);
        w.slot = SlotId::random();
        pool.push_warm(w);
        assert_eq!(pool.failures(), 0);
        assert_eq!(pool.start_error(), None);
        assert!(!pool.blocked_by_full_disk());
    }
}
