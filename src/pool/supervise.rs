//! Keeping the pool and the routing table true to Docker: refilling, the event
//! stream, reconciling after a (re)connect, and recycling.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{ContainerInspectResponse, EventMessage};
use bollard::query_parameters::{CreateContainerOptions, EventsOptions, StopContainerOptions};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Empty;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::AuthMode;
use crate::db;
use crate::docker::{self, PROBE_LABEL, SLOT_LABEL};
use crate::pool::spec::{container_name, notebook_container, Work, JUPYTER_CONTAINER_PORT, JUPYTER_PORT};
use crate::pool::Warm;
use crate::proxy::routes::{now_secs, Route, SessionHash};
use crate::recycle::Reason;
use crate::slot::{random_token, SlotId};
use crate::volumes::bind;

/// How long a new container may take until Jupyter answers.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("slot directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("container {0} exited before Jupyter answered")]
    Exited(String),
    #[error("Jupyter did not answer within {0:?}")]
    NotReady(Duration),
    #[error("container has neither a network address nor a published Jupyter port")]
    NoPort,
}

/// Containers started at once: starting JupyterLab is CPU-bound.
fn parallel_starts() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(2).clamp(2, 8)
}

/// Refill loop: keep `pool_size` warm containers, within the cap, with
/// exponential backoff while starts fail.
pub async fn refill(app: App, shutdown: CancellationToken) {
    let parallel = parallel_starts();
    loop {
        let failures = app.pool.failures();
        if failures > 0 {
            let backoff = Duration::from_millis(500 * 2u64.saturating_pow(failures.min(6)));
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => return,
            }
        }
        // Without hot-binding, accounts get fresh containers with their volume:
        // warm ones could never hold their files.
        let size =
            if app.config.auth == AuthMode::Accounts && !app.hot_bind { 0 } else { app.config.pool_size };
        let planned =
            app.pool.plan_starts(size, app.config.max_containers, app.routes.len() as u32, parallel);
        for slot in planned {
            let app = app.clone();
            tokio::spawn(async move {
                match start_one(&app, &slot, None).await {
                    Ok(warm) => {
                        tracing::debug!(slot = %warm.slot, "warm container ready");
                        app.pool.push_warm(warm);
                    }
                    Err(e) => {
                        let n = app.pool.start_failed(&slot, &e.to_string());
                        tracing::warn!(%slot, error = %e, failures = n, "starting a warm container failed");
                    }
                }
                app.pool.wake_refill.notify_one();
            });
        }
        tokio::select! {
            () = app.pool.wake_refill.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Create, start and wait for one container: a warm one for the pool, or,
/// with `volume`, one with a user's volume mounted by Docker (the cold path
/// when hot-binding is unavailable). On failure nothing is left.
pub async fn start_one(app: &App, slot: &SlotId, volume: Option<&str>) -> Result<Warm, StartError> {
    let name = container_name(&app.config.instance, slot);
    let slot_dir = app.config.slots_dir().join(slot.as_str());
    let binds = volume.is_none() && app.binds_volumes();
    let result = async {
        if binds {
            prepare_slot_dir(&slot_dir)?;
        }
        let docker = app.docker.get().await?;
        let token = random_token();
        let body = notebook_container(
            &app.config,
            slot,
            &token,
            match volume {
                Some(v) => Work::Volume(v),
                None if binds => Work::Slot(&slot_dir),
                None => Work::Ephemeral,
            },
        );
        let creating = app.pool.creating.lock().await;
        docker
            .create_container(
                Some(CreateContainerOptions { name: Some(name.clone()), ..Default::default() }),
                body,
            )
            .await?;
        docker.start_container(&name, None).await?;
        drop(creating);
        let info = docker.inspect_container(&name, None).await?;
        let container_id = info.id.clone().unwrap_or_else(|| name.clone());
        let candidates = upstream_candidates(&info, &app.config.instance);
        if candidates.is_empty() {
            return Err(StartError::NoPort);
        }
        let upstream = wait_ready(app, &docker, &container_id, &candidates, slot, &token).await?;
        Ok(Warm { slot: slot.clone(), container_id, upstream, token })
    }
    .await;
    if result.is_err() {
        if let Ok(docker) = app.docker.get().await {
            let _ = docker::force_remove(&docker, &name).await;
        }
        let _ = std::fs::remove_dir(&slot_dir);
    }
    result
}

/// The slot's mount point, owned by the notebook user so that `~/work` is
/// writable even when no volume is bound (ephemeral mode).
fn prepare_slot_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if bind::is_root() {
        nix::unistd::chown(
            dir,
            Some(nix::unistd::Uid::from_raw(1000)),
            Some(nix::unistd::Gid::from_raw(100)),
        )
        .map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// Where the gateway may reach a container's Jupyter, best first: its address
/// on the instance network (no userland docker-proxy in the path: about 30 %
/// less host CPU per request), then its port published on 127.0.0.1 (for a
/// gateway that cannot route to the bridge, e.g. in another network namespace).
fn upstream_candidates(info: &ContainerInspectResponse, instance: &str) -> Vec<SocketAddr> {
    let settings = info.network_settings.as_ref();
    let on_network = settings
        .and_then(|s| {
            s.networks.as_ref()?.get(&docker::network_name(instance))?.ip_address.as_deref()?.parse().ok()
        })
        .map(|ip: std::net::IpAddr| SocketAddr::new(ip, JUPYTER_CONTAINER_PORT));
    let published = settings.and_then(|s| {
        let binding = s.ports.as_ref()?.get(JUPYTER_PORT)?.as_ref()?.first()?;
        let port: u16 = binding.host_port.as_deref()?.parse().ok()?;
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    });
    on_network.into_iter().chain(published).collect()
}

/// The best of `candidates` where Jupyter answers, if any. A refused
/// connection means the address works and Jupyter is still starting: the
/// fallbacks after it are not tried (they would answer no sooner, and a
/// container must not settle on a worse path by a probe's timing).
async fn answering(app: &App, candidates: &[SocketAddr], slot: &SlotId, token: &str) -> Option<SocketAddr> {
    for &addr in candidates {
        match probe_status(app, addr, slot, token).await {
            Probe::Ready => return Some(addr),
            Probe::Refused => return None,
            Probe::Failed => {}
        }
    }
    None
}

fn env_value(info: &ContainerInspectResponse, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    info.config.as_ref()?.env.as_ref()?.iter().find_map(|e| e.strip_prefix(&prefix).map(str::to_string))
}

/// Poll `/api/status` with the token until Jupyter answers 200 on one of
/// `candidates`; that one is the container's upstream.
async fn wait_ready(
    app: &App,
    docker: &bollard::Docker,
    container_id: &str,
    candidates: &[SocketAddr],
    slot: &SlotId,
    token: &str,
) -> Result<SocketAddr, StartError> {
    let start = tokio::time::Instant::now();
    let mut last_inspect = start;
    loop {
        if let Some(upstream) = answering(app, candidates, slot, token).await {
            return Ok(upstream);
        }
        if start.elapsed() > READY_TIMEOUT {
            return Err(StartError::NotReady(READY_TIMEOUT));
        }
        // A container that crashed will never answer: notice it early.
        if last_inspect.elapsed() > Duration::from_secs(3) {
            last_inspect = tokio::time::Instant::now();
            let info = docker.inspect_container(container_id, None).await?;
            if info.state.and_then(|s| s.running) != Some(true) {
                return Err(StartError::Exited(container_id.chars().take(12).collect()));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one readiness probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    /// Jupyter answered 200.
    Ready,
    /// The address is reachable but nothing listens there yet.
    Refused,
    /// Anything else: no route, a timeout, another status.
    Failed,
}

/// One readiness probe: `GET /user/<slot>/api/status` → 200.
async fn probe_status(app: &App, upstream: SocketAddr, slot: &SlotId, token: &str) -> Probe {
    let uri = format!("http://{upstream}{}api/status", slot.base_url());
    let Ok(req) =
        http::Request::get(uri).header("authorization", format!("token {token}")).body(Empty::<Bytes>::new())
    else {
        return Probe::Failed;
    };
    match tokio::time::timeout(Duration::from_secs(2), app.probe_client.request(req)).await {
        Ok(Ok(resp)) if resp.status() == http::StatusCode::OK => Probe::Ready,
        Ok(Err(e)) if refused(&e) => Probe::Refused,
        _ => Probe::Failed,
    }
}

/// Whether an error is, somewhere in its chain, a refused TCP connection.
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Follow Docker: reconcile on every (re)connect, then apply die/destroy/oom
/// events until the stream breaks; reconnect with backoff.
pub async fn follow_docker(app: App, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let connected = async {
            let docker = app.docker.get().await?;
            // Subscribe before reconciling, so nothing between the two is missed.
            let filters = HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                ("label".to_string(), vec![format!("{}={}", docker::INSTANCE_LABEL, app.config.instance)]),
                ("event".to_string(), vec!["die".into(), "destroy".into(), "oom".into()]),
            ]);
            let stream = docker.events(Some(EventsOptions { filters: Some(filters), ..Default::default() }));
            reconcile(&app).await?;
            Ok::<_, bollard::errors::Error>(stream)
        }
        .await;
        let mut stream = match connected {
            Ok(s) => s,
            Err(e) => {
                if app.pool.docker_up() {
                    tracing::warn!(error = %e, "Docker is unreachable");
                }
                app.pool.set_docker_up(false);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if !app.pool.docker_up() {
            tracing::info!("Docker is reachable; pool reconciled");
        }
        app.pool.set_docker_up(true);
        app.pool.wake_refill.notify_one();
        backoff = Duration::from_millis(250);
        loop {
            let event = tokio::select! {
                e = stream.next() => e,
                () = shutdown.cancelled() => return,
            };
            match event {
                Some(Ok(msg)) => handle_event(&app, msg).await,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Docker event stream broke; reconnecting");
                    break;
                }
                None => {
                    tracing::warn!("Docker event stream ended; reconnecting");
                    break;
                }
            }
        }
        app.pool.set_docker_up(false);
    }
}

async fn handle_event(app: &App, msg: EventMessage) {
    let action = msg.action.unwrap_or_default();
    let Some(actor) = msg.actor else { return };
    let Some(id) = actor.id else { return };
    let slot = actor.attributes.as_ref().and_then(|a| a.get(SLOT_LABEL)).and_then(|s| SlotId::parse(s));
    match action.as_str() {
        "oom" => {
            tracing::warn!(container = %short(&id), "container ran out of memory");
            if let Some(route) = app.routes.by_container(&id) {
                // Usually the kernel is the one killed and Jupyter restarts it;
                // if the whole server died, the die event says so.
                route.set_notice(format!(
                    "Your server used all of its {} memory, so a process (usually the kernel) was stopped. \
                     Variables in memory are lost; your files are safe.",
                    bytesize_docker(app.config.memory_limit)
                ));
            }
        }
        "die" | "destroy" => {
            if app.pool.forget(&id) {
                tracing::info!(container = %short(&id), %action, "warm container gone; replacing it");
                if let Ok(docker) = app.docker.get().await {
                    let _ = docker::force_remove(&docker, &id).await;
                }
                if let Some(slot) = slot {
                    clean_slot_dir(app, &slot);
                }
            } else if let Some(route) = app.routes.by_container(&id) {
                let reason = why_it_stopped(app, &id, &action).await;
                tracing::info!(slot = %route.slot, reason = reason.label(), "assigned container stopped");
                recycle(app, &route.slot, &reason).await;
            }
        }
        _ => {}
    }
}

/// Read the dead container's state: out of memory, or a crash with its code.
async fn why_it_stopped(app: &App, id: &str, action: &str) -> Reason {
    // `nbgate pool drain --force` marks the slots it stops.
    if let Ok(rows) = db::slots::list(&app.db).await {
        if rows.iter().any(|r| r.container_id == id && r.recycling != 0) {
            return Reason::Drain;
        }
    }
    if action == "die" {
        if let Ok(docker) = app.docker.get().await {
            if let Ok(info) = docker.inspect_container(id, None).await {
                let state = info.state.unwrap_or_default();
                if state.oom_killed == Some(true) {
                    return Reason::OutOfMemory { limit: bytesize_docker(app.config.memory_limit) };
                }
                return Reason::Crashed { exit_code: state.exit_code.unwrap_or(-1) };
            }
        }
    }
    Reason::Gone
}

/// `512m`, `2g`: how organizers wrote the limit.
fn bytesize_docker(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes % (1 << 30) == 0 {
        format!("{}g", bytes >> 30)
    } else {
        format!("{}m", bytes / MIB)
    }
}

/// Make memory match Docker: adopt running containers of this instance (warm
/// ones back into the pool, assigned ones with their sessions), remove
/// half-made and stopped ones, drop what no longer exists.
pub async fn reconcile(app: &App) -> Result<(), bollard::errors::Error> {
    let docker = app.docker.get().await?;
    docker::ensure_network(&docker, &app.config.instance).await?;
    if app.config.firewall && bind::is_root() {
        let bridge = crate::firewall::bridge_of(&docker, &app.config.instance).await?;
        let instance = app.config.instance.clone();
        match tokio::task::spawn_blocking(move || crate::firewall::install(&instance, &bridge)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "installing firewall rules failed; notebooks are not fenced off")
            }
            Err(e) => tracing::error!(error = %e, "installing firewall rules"),
        }
    }
    if app.binds_volumes() {
        if let Err(e) = bind::ensure_shared(&app.config.slots_dir()) {
            tracing::warn!(error = %e, "slots directory is not a shared mount");
        }
    }
    if let Err(e) = crate::volumes::rekey::recover(app).await {
        tracing::error!(error = %e, "finishing interrupted password changes");
    }
    let containers = docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(docker::instance_filter(&app.config.instance)),
            ..Default::default()
        }))
        .await?;
    let db_slots: HashMap<String, db::slots::SlotRow> = match db::slots::list(&app.db).await {
        Ok(rows) => rows.into_iter().map(|r| (r.id.clone(), r)).collect(),
        Err(e) => {
            tracing::error!(error = %e, "reading slots from the database; adopting nothing");
            return Ok(());
        }
    };
    let mut owners: HashMap<String, Vec<(SessionHash, Option<i64>)>> = HashMap::new();
    match db::sessions::with_slots(&app.db, now_secs() as i64).await {
        Ok(rows) => {
            for r in rows {
                if let (Some(slot), Ok(hash)) = (r.slot_id, <SessionHash>::try_from(r.id_hash.as_slice())) {
                    owners.entry(slot).or_default().push((hash, r.user_id));
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "reading sessions from the database"),
    }

    let mut live: HashSet<String> = HashSet::new();
    for c in containers {
        let Some(id) = c.id.clone() else { continue };
        let labels = c.labels.clone().unwrap_or_default();
        if labels.contains_key(PROBE_LABEL) {
            let _ = docker::force_remove(&docker, &id).await;
            continue;
        }
        let Some(slot) = labels.get(SLOT_LABEL).and_then(|s| SlotId::parse(s)) else {
            let _ = docker::force_remove(&docker, &id).await;
            continue;
        };
        if app.pool.is_known(&slot) || app.routes.get(&slot).is_some_and(|r| r.container_id == id) {
            live.insert(id);
            continue;
        }
        let running = c.state.as_ref().map(|s| s.to_string()) == Some("running".to_string());
        let adopted = if running {
            adopt(app, &docker, &id, &slot, db_slots.get(slot.as_str()), &owners).await
        } else {
            false
        };
        if adopted {
            live.insert(id);
        } else {
            tracing::info!(%slot, container = %short(&id), "removing a stopped or half-made container");
            let _ = docker::force_remove(&docker, &id).await;
            if db_slots.contains_key(slot.as_str()) {
                let _ = db::slots::delete(&app.db, &slot).await;
            }
            clean_slot_dir(app, &slot);
        }
    }
    // What the table says exists but Docker does not have.
    for warm in app.pool.forget_all() {
        if live.contains(&warm.container_id) {
            app.pool.push_warm(warm);
        }
    }
    for route in app.routes.all() {
        if !live.contains(&route.container_id) {
            recycle(app, &route.slot, &Reason::Gone).await;
        }
    }
    for (id, row) in &db_slots {
        if !live.contains(&row.container_id) {
            let _ = db::slots::delete_by_id(&app.db, id).await;
        }
    }
    Ok(())
}

/// Adopt one running container. False if it should be removed instead.
async fn adopt(
    app: &App,
    docker: &bollard::Docker,
    id: &str,
    slot: &SlotId,
    row: Option<&db::slots::SlotRow>,
    owners: &HashMap<String, Vec<(SessionHash, Option<i64>)>>,
) -> bool {
    let Ok(info) = docker.inspect_container(id, None).await else { return false };
    let candidates = upstream_candidates(&info, &app.config.instance);
    let (Some(&first), Some(token)) = (candidates.first(), env_value(&info, "JUPYTER_TOKEN")) else {
        return false;
    };
    match row {
        Some(row) if row.recycling == 0 && row.container_id == id => {
            let Some(sessions) = owners.get(slot.as_str()).filter(|s| !s.is_empty()) else {
                // Assigned, but its sessions ended while we were away: recycle.
                let _ = db::slots::delete(&app.db, slot).await;
                return false;
            };
            let user_id = sessions[0].1;
            // A busy server may not answer right now: it keeps its best address.
            let upstream = answering(app, &candidates, slot, &token).await.unwrap_or(first);
            let route = Arc::new(Route::new(
                slot.clone(),
                id.to_string(),
                upstream,
                &token,
                user_id,
                row.assigned_at as u64,
            ));
            for (hash, _) in sessions {
                route.add_owner(*hash);
            }
            app.routes.insert(route);
            // Idempotent: the gateway may have stopped before raising it.
            promote(app, id);
            tracing::info!(%slot, "adopted an assigned container");
            true
        }
        Some(_) => false,
        None => {
            // Warm before the restart (or half-made): keep it only if Jupyter answers.
            if let Some(upstream) = answering(app, &candidates, slot, &token).await {
                app.pool.push_warm(Warm {
                    slot: slot.clone(),
                    container_id: id.to_string(),
                    upstream,
                    token,
                });
                tracing::info!(%slot, "adopted a warm container");
                true
            } else {
                false
            }
        }
    }
}

/// Recycle an assigned slot: close its connections, stop (with a grace period,
/// so Jupyter can save), unbind the volume, remove the container, refill.
/// Never touches a volume.
pub async fn recycle(app: &App, slot: &SlotId, reason: &Reason) {
    let route = app.routes.remove(slot);
    let _ = db::slots::mark_recycling(&app.db, slot).await;
    if reason.worth_telling() {
        let _ = db::sessions::note_stop(&app.db, slot.as_str(), &reason.to_string(), now_secs() as i64).await;
    }
    app.metrics.recycled(reason.label());
    let container = match &route {
        Some(r) => Some(r.container_id.clone()),
        None => db::slots::list(&app.db)
            .await
            .ok()
            .and_then(|rows| rows.into_iter().find(|r| r.id == slot.as_str()).map(|r| r.container_id)),
    };
    tracing::info!(%slot, reason = reason.label(), "recycling");
    if let (Some(id), Ok(docker)) = (container, app.docker.get().await) {
        let _ = docker
            .stop_container(&id, Some(StopContainerOptions { t: Some(10), ..Default::default() }))
            .await;
        let _ = docker::force_remove(&docker, &id).await;
    }
    clean_slot_dir(app, slot);
    if let Err(e) = db::slots::delete(&app.db, slot).await {
        tracing::error!(%slot, error = %e, "forgetting a recycled slot");
    }
    app.pool.wake_refill.notify_one();
}

/// Recycle a user's server, if any, under the user's lock (so it cannot race
/// a login binding a new one).
pub async fn recycle_user(app: &App, user_id: i64, reason: &Reason) {
    let _guard = app.binder.lock(user_id).await;
    recycle_user_locked(app, user_id, reason).await;
}

/// [`recycle_user`] for a caller that already holds the user's lock.
pub async fn recycle_user_locked(app: &App, user_id: i64, reason: &Reason) {
    if let Some(route) = app.routes.by_user(user_id) {
        recycle(app, &route.slot, reason).await;
    }
}

/// A container was handed to someone: give it a full CPU weight (warm ones
/// start with less). In the background: the login does not wait for Docker.
pub fn promote(app: &App, container_id: &str) {
    let (app, id) = (app.clone(), container_id.to_string());
    tokio::spawn(async move {
        let update = bollard::models::ContainerUpdateBody {
            cpu_shares: Some(crate::pool::spec::ASSIGNED_CPU_SHARES),
            ..Default::default()
        };
        let result = match app.docker.get().await {
            Ok(docker) => docker.update_container(&id, update).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(container = %short(&id), error = %e, "raising a server's CPU weight");
        }
    });
}

/// Unbind and remove a slot's mount point.
fn clean_slot_dir(app: &App, slot: &SlotId) {
    let dir = app.config.slots_dir().join(slot.as_str());
    if let Err(e) = bind::unbind(&dir) {
        tracing::warn!(%slot, error = %e, "unbinding a slot");
        return;
    }
    // Only an empty directory: if an unbind silently failed, a user's files
    // must never be deleted through it.
    let _ = std::fs::remove_dir(&dir);
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Remove a container that was never handed out (or failed half-way).
pub async fn discard(app: &App, warm: &Warm) {
    if let Ok(docker) = app.docker.get().await {
        let _ = docker::force_remove(&docker, &warm.container_id).await;
    }
    clean_slot_dir(app, &warm.slot);
    app.pool.wake_refill.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A started container whose Jupyter does not listen yet refuses; that is
    /// what keeps a start from trying the published port meanwhile.
    #[tokio::test]
    async fn a_closed_port_is_refused_and_other_failures_are_not() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Empty<Bytes>>();
        let uri: http::Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let err = client.get(uri).await.expect_err("nothing listens there");
        assert!(refused(&err), "{err:?}");
        let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "no route");
        assert!(!refused(&timeout));
    }
}
