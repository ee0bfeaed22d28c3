//! Recycling idle and too-old servers, and expired accounts.
//!
//! Activity is what a person does: proxied requests other than the polling an
//! open JupyterLab tab does by itself, WebSocket data frames (not pings), and a
//! kernel that is busy computing (read from Jupyter's `/api/kernels` on every
//! round, so a long computation nobody watches is not killed before
//! `NBGATE_MAX_AGE`). JupyterHub's idle-culler gets both of these wrong: it
//! reads Jupyter's own last-activity, which an open tab's polling keeps fresh,
//! and it kills silent busy kernels.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::proxy::routes::{now_millis, now_secs, Route};
use crate::recycle::Reason;

/// What the culler knows about one route at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    pub now_ms: u64,
    pub last_activity_ms: u64,
    pub assigned_at_s: u64,
    pub expired: bool,
}

/// What to do with a route: `None` keeps it.
pub fn decide(o: &Observation, idle_timeout: Duration, max_age: Duration) -> Option<Reason> {
    if o.expired {
        return Some(Reason::Expired);
    }
    let age = Duration::from_secs((o.now_ms / 1000).saturating_sub(o.assigned_at_s));
    if age >= max_age {
        return Some(Reason::MaxAge { hours: (max_age.as_secs() / 3600).max(1) });
    }
    let idle = Duration::from_millis(o.now_ms.saturating_sub(o.last_activity_ms));
    (idle >= idle_timeout).then(|| Reason::Idle { minutes: (idle_timeout.as_secs() / 60).max(1) })
}

/// Seconds until `decide` would recycle for idleness or age, whichever first
/// (what the warning shows). `None` when already due.
pub fn seconds_left(o: &Observation, idle_timeout: Duration, max_age: Duration) -> Option<(u64, bool)> {
    let idle_left = (o.last_activity_ms + idle_timeout.as_millis() as u64).checked_sub(o.now_ms)? / 1000;
    let age_left = (o.assigned_at_s + max_age.as_secs()).checked_sub(o.now_ms / 1000)?;
    Some(if age_left < idle_left { (age_left, true) } else { (idle_left, false) })
}

/// How often the culler looks: a tenth of the idle timeout, between 1 and 30 s.
pub fn interval(idle_timeout: Duration) -> Duration {
    (idle_timeout / 10).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

pub async fn run(app: App, shutdown: CancellationToken) {
    let every = interval(app.config.idle_timeout);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        cull_once(&app).await;
    }
}

/// Recycles run at once, up to this many: each waits seconds for Jupyter to
/// save and stop, and one at a time made idle servers outlive their timeout.
const PARALLEL_RECYCLES: usize = 4;

/// One round over every assigned server.
pub async fn cull_once(app: &App) {
    let now_s = now_secs() as i64;
    let mut recycles = tokio::task::JoinSet::new();
    for route in app.routes.all() {
        if kernels_busy(app, &route).await {
            route.touch();
        }
        let expired = match route.user_id {
            Some(uid) => {
                matches!(crate::db::users::by_id(&app.db, uid).await, Ok(Some(u)) if u.expires_at.is_some_and(|t| t <= now_s))
            }
            None => false,
        };
        let o = Observation {
            now_ms: now_millis(),
            last_activity_ms: route.last_activity_millis(),
            assigned_at_s: route.assigned_at,
            expired,
        };
        if let Some(reason) = decide(&o, app.config.idle_timeout, app.config.max_age) {
            while recycles.len() >= PARALLEL_RECYCLES {
                let _ = recycles.join_next().await;
            }
            let app = app.clone();
            recycles.spawn(async move { recycle_if_current(&app, &route, &reason).await });
        }
    }
    while recycles.join_next().await.is_some() {}
}

/// Recycle `route`, but only if it is still the one its user holds: a login
/// that bound a new server in the meantime is never touched.
pub async fn recycle_if_current(app: &App, route: &Route, reason: &Reason) {
    match route.user_id {
        Some(uid) => {
            let _guard = app.binder.lock(uid).await;
            let current = app.routes.get(&route.slot).is_some_and(|r| r.container_id == route.container_id);
            if current {
                crate::pool::supervise::recycle(app, &route.slot, reason).await;
            }
        }
        None => {
            if app.routes.get(&route.slot).is_some_and(|r| r.container_id == route.container_id) {
                crate::pool::supervise::recycle(app, &route.slot, reason).await;
            }
        }
    }
}

/// Whether any kernel of the server is computing now. `no_track_activity`
/// keeps this poll from counting as activity in Jupyter's own bookkeeping.
async fn kernels_busy(app: &App, route: &Route) -> bool {
    let uri = format!("http://{}{}api/kernels?no_track_activity=1", route.upstream, route.slot.base_url());
    let Ok(req) = http::Request::get(uri)
        .header(http::header::AUTHORIZATION, route.auth_header.clone())
        .body(Empty::<Bytes>::new())
    else {
        return false;
    };
    let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(3), app.probe_client.request(req)).await
    else {
        return false;
    };
    if !resp.status().is_success() {
        return false;
    }
    let Ok(body) = tokio::time::timeout(Duration::from_secs(3), resp.into_body().collect()).await else {
        return false;
    };
    let Ok(body) = body else { return false };
    let kernels: Vec<serde_json::Value> = serde_json::from_slice(&body.to_bytes()).unwrap_or_default();
    kernels.iter().any(|k| k["execution_state"] == "busy")
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(600);
    const AGE: Duration = Duration::from_secs(8 * 3600);

    fn obs(now_s: u64, last_s: u64, assigned_s: u64) -> Observation {
        Observation {
            now_ms: now_s * 1000,
            last_activity_ms: last_s * 1000,
            assigned_at_s: assigned_s,
            expired: false,
        }
    }

    #[test]
    fn idle_age_and_expiry() {
        assert_eq!(decide(&obs(1000, 900, 0), IDLE, AGE), None);
        assert_eq!(decide(&obs(1000, 400, 0), IDLE, AGE), Some(Reason::Idle { minutes: 10 }));
        assert_eq!(
            decide(&obs(30_000, 29_999, 0), IDLE, AGE),
            Some(Reason::MaxAge { hours: 8 }),
            "age wins over activity"
        );
        let mut o = obs(10, 10, 0);
        o.expired = true;
        assert_eq!(decide(&o, IDLE, AGE), Some(Reason::Expired));
        assert_eq!(seconds_left(&obs(1000, 900, 0), IDLE, AGE), Some((500, false)));
        assert_eq!(seconds_left(&obs(28_700, 28_700, 0), IDLE, AGE), Some((100, true)));
        assert_eq!(interval(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(interval(IDLE), Duration::from_secs(30));
    }

    /// A paused clock: activity keeps a route alive; silence recycles it.
    #[tokio::test(start_paused = true)]
    async fn activity_keeps_a_route_alive_on_a_paused_clock() {
        let route = Route::new(
            crate::slot::SlotId::random(),
            "c".into(),
            ([127, 0, 0, 1], 1).into(),
            "t",
            None,
            now_secs(),
        );
        let idle = Duration::from_secs(60);
        let start = tokio::time::Instant::now();
        let mut virtual_now = now_millis();
        let mut last = virtual_now;
        for step in 0..10 {
            tokio::time::sleep(Duration::from_secs(30)).await;
            virtual_now += 30_000;
            if step < 5 {
                last = virtual_now; // someone typing
            }
            let o = Observation {
                now_ms: virtual_now,
                last_activity_ms: last,
                assigned_at_s: route.assigned_at,
                expired: false,
            };
            let verdict = decide(&o, idle, AGE);
            if step < 6 {
                assert_eq!(verdict, None, "step {step}");
            } else {
                assert_eq!(verdict, Some(Reason::Idle { minutes: 1 }), "step {step}");
            }
        }
        assert_eq!(start.elapsed(), Duration::from_secs(300));
    }
}
