//! The routing table: slot → upstream, owners and activity. The only source of
//! upstream addresses (SECURITY.md #8): nothing in a request chooses where it goes
//! except a slot id that must be in this table and owned by the caller's session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use http::HeaderValue;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::slot::SlotId;

/// sha256 of a session cookie value; what the DB stores and what routes compare.
pub type SessionHash = [u8; 32];

/// A session allowed to use a route, and the switch that closes its WebSockets.
pub struct Owner {
    pub session: SessionHash,
    pub closed: CancellationToken,
}

/// An assigned slot.
pub struct Route {
    pub slot: SlotId,
    pub container_id: String,
    pub upstream: SocketAddr,
    /// `token <jupyter token>`, added to every upstream request; marked sensitive
    /// so it never appears in debug output.
    pub auth_header: HeaderValue,
    /// The account holding the slot; None for ephemeral visitors.
    pub user_id: Option<i64>,
    /// Unix seconds when the slot was handed out.
    pub assigned_at: u64,
    owners: RwLock<Vec<Owner>>,
    /// Unix milliseconds of the last user activity (the culler reads this).
    last_activity: AtomicU64,
    /// Something the user should be told inside JupyterLab (a kernel killed
    /// for memory, …).
    notice: std::sync::Mutex<Option<String>>,
    /// Idle connections to the notebook server that ended browser connections
    /// left for the next ones.
    pub spares: super::upstream::Spares,
}

impl Route {
    pub fn new(
        slot: SlotId,
        container_id: String,
        upstream: SocketAddr,
        token: &str,
        user_id: Option<i64>,
        assigned_at: u64,
    ) -> Self {
        let mut auth_header =
            HeaderValue::from_str(&format!("token {token}")).expect("hex token is a valid header");
        auth_header.set_sensitive(true);
        Self {
            slot,
            container_id,
            upstream,
            auth_header,
            user_id,
            assigned_at,
            owners: RwLock::new(Vec::new()),
            last_activity: AtomicU64::new(now_millis()),
            notice: std::sync::Mutex::new(None),
            spares: Default::default(),
        }
    }

    pub fn set_notice(&self, text: String) {
        *self.notice.lock().expect("notice lock") = Some(text);
    }

    pub fn notice(&self) -> Option<String> {
        self.notice.lock().expect("notice lock").clone()
    }

    /// Allow `session` on this route (idempotent). Returns its close switch.
    pub fn add_owner(&self, session: SessionHash) -> CancellationToken {
        let mut owners = self.owners.write().expect("owners lock");
        if let Some(o) = owners.iter().find(|o| o.session == session) {
            return o.closed.clone();
        }
        let closed = CancellationToken::new();
        owners.push(Owner { session, closed: closed.clone() });
        closed
    }

    /// Revoke `session` and close its WebSockets. Returns whether owners remain.
    pub fn remove_owner(&self, session: &SessionHash) -> bool {
        let mut owners = self.owners.write().expect("owners lock");
        owners.retain(|o| {
            let keep = o.session != *session;
            if !keep {
                o.closed.cancel();
            }
            keep
        });
        !owners.is_empty()
    }

    /// The close switch of the first of `candidates` that owns this route.
    /// Constant-time per comparison: a timing side channel must not reveal
    /// how much of a guessed hash matched.
    pub fn owner_of(&self, candidates: impl IntoIterator<Item = SessionHash>) -> Option<CancellationToken> {
        let owners = self.owners.read().expect("owners lock");
        candidates
            .into_iter()
            .find_map(|c| owners.iter().find(|o| bool::from(c.ct_eq(&o.session))).map(|o| o.closed.clone()))
    }

    /// Close every session's WebSockets (recycling).
    pub fn close_all(&self) {
        for o in self.owners.read().expect("owners lock").iter() {
            o.closed.cancel();
        }
    }

    pub fn touch(&self) {
        self.last_activity.store(now_millis(), Ordering::Relaxed);
    }

    pub fn last_activity_millis(&self) -> u64 {
        self.last_activity.load(Ordering::Relaxed)
    }
}

/// slot → route, read on every proxied request.
#[derive(Default)]
pub struct Routes {
    map: RwLock<HashMap<SlotId, Arc<Route>>>,
}

impl Routes {
    pub fn get(&self, slot: &SlotId) -> Option<Arc<Route>> {
        self.map.read().expect("routes lock").get(slot).cloned()
    }

    pub fn insert(&self, route: Arc<Route>) {
        self.map.write().expect("routes lock").insert(route.slot.clone(), route);
    }

    pub fn remove(&self, slot: &SlotId) -> Option<Arc<Route>> {
        let route = self.map.write().expect("routes lock").remove(slot);
        if let Some(r) = &route {
            r.close_all();
        }
        route
    }

    pub fn len(&self) -> usize {
        self.map.read().expect("routes lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<Arc<Route>> {
        self.map.read().expect("routes lock").values().cloned().collect()
    }

    pub fn by_container(&self, container_id: &str) -> Option<Arc<Route>> {
        self.map.read().expect("routes lock").values().find(|r| r.container_id == container_id).cloned()
    }

    pub fn by_user(&self, user_id: i64) -> Option<Arc<Route>> {
        self.map.read().expect("routes lock").values().find(|r| r.user_id == Some(user_id)).cloned()
    }
}

pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_secs() -> u64 {
    now_millis() / 1000
}
