//! Giving a signed-in user a server: a warm container with the user's volume
//! bound into it (hot path), or, where hot-binding is impossible, a fresh
//! container with the volume mounted (cold path, a progress page meanwhile).
//! A per-user lock orders binding against recycling, and a user never holds
//! two containers: every session of the user shares the one slot.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

use crate::app::App;
use crate::db;
use crate::db::users::UserRow;
use crate::pool::Taken;
use crate::proxy::routes::{now_secs, Route, SessionHash};
use crate::volumes::{self, bind};

/// How long a background start waits for a warm container.
/// A login waits in line for a warm container while the pool keeps producing
/// them (slow starts on a busy host are not a failure), unless none has become
/// ready for `WARM_STALL`, and at most `WARM_LIMIT`.
const WARM_STALL: Duration = Duration::from_secs(120);
const WARM_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Where a user's server stands.
pub enum ServerState {
    Ready(Arc<Route>),
    /// Being started in the background; the pending page polls.
    Starting,
    /// The last start failed; why, for the user.
    Failed(String),
    /// No room now: waiting in line at this position (1 = next).
    Queued(usize),
    /// Docker does not answer.
    DockerDown,
    /// Starts fail because a disk is full (the organizer must free space).
    DiskFull,
}

/// Per-user locks and background starts.
#[derive(Default)]
pub struct Binder {
    locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    starting: Mutex<HashSet<i64>>,
    failed: Mutex<HashMap<i64, String>>,
    /// Users waiting for room, first come first served, with when they last
    /// asked (the queue page asks every few seconds; who stops asking left).
    queue: Mutex<VecDeque<(i64, Instant)>>,
}

/// A queued user who has not asked again for this long has left the line.
const QUEUE_STALE: Duration = Duration::from_secs(30);

impl Binder {
    /// The user's lock: binding, recycling and password changes of one user
    /// never interleave.
    pub async fn lock(&self, user_id: i64) -> OwnedMutexGuard<()> {
        let lock = self.locks.lock().expect("binder lock").entry(user_id).or_default().clone();
        lock.lock_owned().await
    }

    pub fn is_starting(&self, user_id: i64) -> bool {
        self.starting.lock().expect("binder lock").contains(&user_id)
    }

    /// Let `user` in if their place in line fits in `available` servers;
    /// otherwise (re)join the line and get the position.
    pub fn admit(&self, user: i64, available: u32, now: Instant) -> Result<(), usize> {
        let mut q = self.queue.lock().expect("binder lock");
        q.retain(|(u, seen)| *u == user || now.duration_since(*seen) < QUEUE_STALE);
        let i = match q.iter().position(|(u, _)| *u == user) {
            Some(i) => {
                q[i].1 = now;
                i
            }
            None if q.is_empty() && available > 0 => return Ok(()),
            None => {
                q.push_back((user, now));
                q.len() - 1
            }
        };
        if (i as u32) < available {
            q.remove(i);
            Ok(())
        } else {
            Err(i + 1)
        }
    }

    pub fn queue_len(&self) -> usize {
        self.queue.lock().expect("binder lock").len()
    }
}

/// Make sure `user` has a server and `session` may use it.
pub async fn ensure_server(app: &App, user: &UserRow, session: SessionHash) -> ServerState {
    let started = Instant::now();
    let had_one = app.routes.by_user(user.id).is_some();
    let state = ensure_server_inner(app, user, session).await;
    if !had_one && matches!(state, ServerState::Ready(_)) {
        app.metrics.spawn_seconds.observe(started.elapsed());
    }
    state
}

async fn ensure_server_inner(app: &App, user: &UserRow, session: SessionHash) -> ServerState {
    let _guard = app.binder.lock(user.id).await;
    if let Some(route) = app.routes.by_user(user.id) {
        // A login is activity: the culler must not recycle the server the
        // user has just been sent to.
        route.touch();
        route.add_owner(session);
        if let Err(e) = db::sessions::set_slot(&app.db, &session, route.slot.as_str()).await {
            tracing::error!(error = %e, "recording a session's slot");
        }
        return ServerState::Ready(route);
    }
    if app.binder.is_starting(user.id) {
        return ServerState::Starting;
    }
    if let Some(why) = app.binder.failed.lock().expect("binder lock").remove(&user.id) {
        return ServerState::Failed(why);
    }
    if !app.pool.docker_up_within(Duration::from_secs(5)).await {
        return ServerState::DockerDown;
    }
    if app.pool.blocked_by_full_disk() {
        return ServerState::DiskFull;
    }
    // Servers starting in the background for other users are spoken for.
    let starting = app.binder.starting.lock().expect("binder lock").len() as u32;
    let available =
        app.config.max_containers.saturating_sub(app.routes.len() as u32 + app.pool.taken() + starting);
    if let Err(position) = app.binder.admit(user.id, available, Instant::now()) {
        return ServerState::Queued(position);
    }
    if app.hot_bind {
        if let Some(taken) = app.pool.take() {
            return match bind_into(app, taken, user, session).await {
                Ok(route) => ServerState::Ready(route),
                Err(e) => {
                    tracing::error!(user = user.id, error = %e, "binding a volume failed");
                    ServerState::Failed(
                        "Your files could not be attached to a server. Please try again.".into(),
                    )
                }
            };
        }
    }

    app.binder.starting.lock().expect("binder lock").insert(user.id);
    let (app2, user2) = (app.clone(), user.clone());
    tokio::spawn(async move { start_in_background(app2, user2, session).await });
    ServerState::Starting
}

async fn start_in_background(app: App, user: UserRow, session: SessionHash) {
    let started = Instant::now();
    let result = if app.hot_bind && app.config.pool_size > 0 {
        match app.pool.acquire(WARM_STALL, WARM_LIMIT).await {
            Some(taken) => {
                let _guard = app.binder.lock(user.id).await;
                bind_into(&app, taken, &user, session).await.map(|_| ())
            }
            None => Err("no server became free in time".to_string()),
        }
    } else {
        cold_start(&app, &user, session).await
    };
    app.binder.starting.lock().expect("binder lock").remove(&user.id);
    if result.is_ok() {
        app.metrics.spawn_seconds.observe(started.elapsed());
    }
    if let Err(e) = result {
        tracing::warn!(user = user.id, error = %e, "starting a server failed");
        let why = if crate::web::pages::is_disk_full(&e) {
            "The server is out of disk space, so no notebook server can start. Your files are safe; \
             the organizer needs to free some space."
        } else {
            "Your server could not be started. Please try again in a moment."
        };
        app.binder.failed.lock().expect("binder lock").insert(user.id, why.into());
    }
}

/// Hot path: bind the user's volume onto the warm container's slot.
async fn bind_into(
    app: &App,
    taken: Taken<'_>,
    user: &UserRow,
    session: SessionHash,
) -> Result<Arc<Route>, String> {
    let warm = taken.warm.clone();
    let target = app.config.slots_dir().join(warm.slot.as_str());
    let bound = async {
        let docker = app.docker.get().await.map_err(|e| e.to_string())?;
        let source = volumes::mountpoint(&docker, &user.volume).await.map_err(|e| e.to_string())?;
        let target = target.clone();
        tokio::task::spawn_blocking(move || bind::bind(&source, &target))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("mount: {e}"))
    }
    .await;
    if let Err(e) = bound {
        // Never handed out, but it may be half-bound: do not reuse it.
        drop(taken);
        crate::pool::supervise::discard(app, &warm).await;
        return Err(e);
    }
    let route = assign(app, &warm, user, session).await;
    drop(taken);
    route
}

/// Cold path: a new container with the volume mounted by Docker.
async fn cold_start(app: &App, user: &UserRow, session: SessionHash) -> Result<(), String> {
    let slot = app
        .pool
        .reserve(app.config.max_containers, app.routes.len() as u32)
        .ok_or_else(|| "the cap is reached".to_string())?;
    let started = crate::pool::supervise::start_one(app, &slot, Some(&user.volume)).await;
    app.pool.release(&slot);
    let warm = started.map_err(|e| e.to_string())?;
    let _guard = app.binder.lock(user.id).await;
    assign(app, &warm, user, session).await.map(|_| ())
}

/// Record the assignment and open the route.
async fn assign(
    app: &App,
    warm: &crate::pool::Warm,
    user: &UserRow,
    session: SessionHash,
) -> Result<Arc<Route>, String> {
    let now = now_secs() as i64;
    let expires = now + crate::web::account::SESSION_LIFETIME.as_secs() as i64;
    if let Err(e) = db::sessions::assign_slot(
        &app.db,
        &session,
        Some(user.id),
        warm.slot.as_str(),
        &warm.container_id,
        now,
        expires,
    )
    .await
    {
        crate::pool::supervise::discard(app, warm).await;
        return Err(e.to_string());
    }
    let route = Arc::new(Route::new(
        warm.slot.clone(),
        warm.container_id.clone(),
        warm.upstream,
        &warm.token,
        Some(user.id),
        now as u64,
    ));
    route.add_owner(session);
    app.routes.insert(route.clone());
    crate::pool::supervise::promote(app, &warm.container_id);
    tracing::info!(slot = %route.slot, user = user.id, "server assigned");
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_first_come_first_served() {
        let b = Binder::default();
        let t0 = Instant::now();
        assert_eq!(b.admit(1, 1, t0), Ok(()), "room and nobody waiting: straight in");
        assert_eq!(b.admit(2, 0, t0), Err(1));
        assert_eq!(b.admit(3, 0, t0), Err(2));
        assert_eq!(b.admit(4, 0, t0), Err(3));
        // One server frees up: only the first in line gets it, not a newcomer.
        assert_eq!(b.admit(5, 1, t0), Err(4));
        assert_eq!(b.admit(3, 1, t0), Err(2));
        assert_eq!(b.admit(2, 1, t0), Ok(()));
        assert_eq!(b.admit(3, 1, t0), Ok(()));
        assert_eq!(b.admit(4, 0, t0), Err(1));
        // Who stops asking leaves the line.
        let later = t0 + QUEUE_STALE + Duration::from_secs(1);
        assert_eq!(b.admit(5, 0, later), Err(1), "4 left; 5 moves up");
        assert_eq!(b.queue_len(), 1);
    }
}
