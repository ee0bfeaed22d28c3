//! `/hub/admin`: users with their servers, the pool, stopping a server, and
//! the announcement banner. Admins only: the role comes from the CLI
//! (`nbgate user make-admin`), never from a form field (SECURITY.md #5).

use std::time::Duration;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use bollard::query_parameters::StatsOptions;
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use crate::app::App;
use crate::db;
use crate::proxy::routes::now_millis;
use crate::recycle::Reason;
use crate::web::account::current_user;
use crate::web::form::HubForm;
use crate::web::pages::{redirect, render, MessagePage};
use crate::web::{forbidden_form, form_allowed};

pub struct UserLine {
    pub id: i64,
    pub name: String,
    pub admin: bool,
    pub running: bool,
    pub server: String,
    pub idle: String,
    pub memory: String,
    pub cpu: String,
    pub volume_size: String,
    pub expires: String,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    xsrf: String,
    message: Option<String>,
    warm: u32,
    assigned: usize,
    cap: u32,
    queued: usize,
    docker_up: bool,
    users: Vec<UserLine>,
    announcement: String,
}

/// The signed-in admin, or the response to give instead.
async fn require_admin(app: &App, headers: &HeaderMap) -> Result<db::users::UserRow, Response> {
    match current_user(app, headers).await {
        None => Err(redirect("/hub/login?next=/hub/admin")),
        Some((_, u)) if u.is_admin != 0 => Ok(u),
        Some(_) => Err(render(
            StatusCode::FORBIDDEN,
            &MessagePage::new("Admins only", "This page is for the organizers.").link("/hub/home", "Go home"),
        )),
    }
}

pub async fn page(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = require_admin(&app, &headers).await {
        return r;
    }
    admin_page(&app, &headers, None).await
}

async fn admin_page(app: &App, headers: &HeaderMap, message: Option<String>) -> Response {
    let users = match db::users::list(&app.db).await {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "listing users");
            return render(
                StatusCode::INTERNAL_SERVER_ERROR,
                &MessagePage::new("Something went wrong", "Could not list users."),
            );
        }
    };
    let docker = app.docker.get().await.ok();
    let lines =
        futures_util::future::join_all(users.iter().map(|u| user_line(app, docker.as_ref(), u))).await;
    let announcement =
        db::admin::setting(&app.db, db::admin::ANNOUNCEMENT).await.ok().flatten().unwrap_or_default();
    let tls = app.config.tls();
    let (id, _) = crate::web::browser_id(headers, tls);
    let page = AdminPage {
        xsrf: crate::auth::xsrf::token(&app.cookie_secret, &id),
        message,
        warm: app.pool.counts().warm,
        assigned: app.routes.len(),
        cap: app.config.max_containers,
        queued: app.binder.queue_len(),
        docker_up: app.pool.docker_up(),
        users: lines,
        announcement,
    };
    render(StatusCode::OK, &page)
}

async fn user_line(app: &App, docker: Option<&bollard::Docker>, u: &db::users::UserRow) -> UserLine {
    let route = app.routes.by_user(u.id);
    let (mut memory, mut cpu) = ("-".to_string(), "-".to_string());
    if let (Some(r), Some(d)) = (&route, docker) {
        let mut stream = d.stats(&r.container_id, Some(StatsOptions { stream: false, one_shot: false }));
        if let Ok(Some(Ok(s))) = tokio::time::timeout(Duration::from_secs(3), stream.next()).await {
            if let Some(m) = s.memory_stats.as_ref().and_then(|m| m.usage) {
                memory = format!("{:.0} MiB", m as f64 / (1 << 20) as f64);
            }
            let total = |c: &Option<bollard::models::ContainerCpuStats>| {
                c.as_ref().and_then(|c| c.cpu_usage.as_ref()).and_then(|u| u.total_usage)
            };
            let system =
                |c: &Option<bollard::models::ContainerCpuStats>| c.as_ref().and_then(|c| c.system_cpu_usage);
            if let (Some(a), Some(b), Some(sa), Some(sb)) =
                (total(&s.cpu_stats), total(&s.precpu_stats), system(&s.cpu_stats), system(&s.precpu_stats))
            {
                let cpus = s.cpu_stats.as_ref().and_then(|c| c.online_cpus).unwrap_or(1) as f64;
                if sa > sb {
                    cpu = format!("{:.0}%", (a.saturating_sub(b)) as f64 / (sa - sb) as f64 * cpus * 100.0);
                }
            }
        }
    }
    let volume_size = match docker {
        Some(d) => match crate::volumes::mountpoint(d, &u.volume).await {
            Ok(path) => tokio::task::spawn_blocking(move || dir_size(&path, 200_000))
                .await
                .ok()
                .map(|b| format!("{:.1} MB", b as f64 / 1e6))
                .unwrap_or_else(|| "-".into()),
            Err(_) => "missing".into(),
        },
        None => "-".into(),
    };
    UserLine {
        id: u.id,
        name: u.username.clone().unwrap_or_else(|| format!("({}…)", &u.name_sha256[..10])),
        admin: u.is_admin != 0,
        running: route.is_some(),
        server: route.as_ref().map(|r| format!("running ({})", r.slot)).unwrap_or_else(|| "stopped".into()),
        idle: route
            .as_ref()
            .map(|r| format!("{} min", now_millis().saturating_sub(r.last_activity_millis()) / 60_000))
            .unwrap_or_else(|| "-".into()),
        memory,
        cpu,
        volume_size,
        expires: u
            .expires_at
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "-".into()),
    }
}

/// Bytes under `root`, giving up (with what it has) after `max_entries`.
fn dir_size(root: &std::path::Path, max_entries: usize) -> u64 {
    let (mut total, mut seen, mut stack) = (0u64, 0usize, vec![root.to_path_buf()]);
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            seen += 1;
            if seen > max_entries {
                return total;
            }
            if let Ok(m) = e.metadata() {
                if m.is_dir() {
                    stack.push(e.path());
                } else {
                    total += m.len();
                }
            }
        }
    }
    total
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct StopForm {
    #[serde(rename = "_xsrf")]
    xsrf: String,
    user_id: i64,
}

pub async fn stop(State(app): State<App>, headers: HeaderMap, HubForm(form): HubForm<StopForm>) -> Response {
    if !form_allowed(&app, &headers, &form.xsrf) {
        return forbidden_form();
    }
    if let Err(r) = require_admin(&app, &headers).await {
        return r;
    }
    crate::pool::supervise::recycle_user(&app, form.user_id, &Reason::Admin).await;
    admin_page(&app, &headers, Some("Server stopped; the user's files are kept.".into())).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AnnouncementForm {
    #[serde(rename = "_xsrf")]
    xsrf: String,
    text: String,
}

pub async fn announce(
    State(app): State<App>,
    headers: HeaderMap,
    HubForm(form): HubForm<AnnouncementForm>,
) -> Response {
    if !form_allowed(&app, &headers, &form.xsrf) {
        return forbidden_form();
    }
    if let Err(r) = require_admin(&app, &headers).await {
        return r;
    }
    let text: String = form.text.trim().chars().filter(|c| !c.is_control()).take(500).collect();
    let value = (!text.is_empty()).then_some(text.as_str());
    if let Err(e) = app.set_announcement(value).await {
        tracing::error!(error = %e, "saving the announcement");
    }
    admin_page(&app, &headers, Some("Announcement saved.".into())).await
}
