//! Admin commands run on the host: registration keys and the volume index.

use std::process::ExitCode;

use anyhow::{bail, Context};
use rand::RngCore;

use crate::auth::keys::key_hash;
use crate::cli::{KeyAction, PoolAction, VolumeAction};
use crate::config::Config;
use crate::db;
use crate::proxy::routes::now_secs;

pub async fn key(config: &Config, action: KeyAction) -> anyhow::Result<ExitCode> {
    let (pool, _) = db::open(&config.database_url).await?;
    let now = now_secs() as i64;
    match action {
        KeyAction::Add { name, key, max_uses, valid_until, account_days, email_domains } => {
            if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
                bail!("--name: 1 to 64 printable characters");
            }
            let key = match key {
                Some(k) if k.trim().len() >= 4 => k.trim().to_string(),
                Some(_) => bail!("--key: at least 4 characters"),
                None => {
                    let mut b = [0u8; 9];
                    rand::rng().fill_bytes(&mut b);
                    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b)
                }
            };
            let valid_until = valid_until.as_deref().map(|v| parse_when(v, now)).transpose()?;
            let domains = email_domains.map(|d| {
                d.split(',')
                    .map(|p| p.trim().to_ascii_lowercase())
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
            });
            if let Some(ds) = &domains {
                if ds.is_empty() || ds.iter().any(|d| !valid_pattern(d)) {
                    bail!("--email-domains: comma-separated domains such as gmail.com, *.edu or *");
                }
            }
            let joined = domains.map(|d| d.join(","));
            let hash = key_hash(&key);
            let new = db::keys::NewKey {
                name: &name,
                key_hash: &hash,
                max_uses: max_uses.map(i64::from),
                valid_until,
                account_days: account_days.map(i64::from),
                email_domains: joined.as_deref(),
            };
            match db::keys::insert(&pool, &new, now).await {
                Ok(_) => println!("added key {name}: {key}\n(shown once; only its hash is stored)"),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    bail!("a key with that name or that value exists already")
                }
                Err(e) => return Err(e.into()),
            }
        }
        KeyAction::List => {
            println!(
                "{:<24} {:>6} {:>8} {:<20} {:>5} {:<20} state",
                "name", "uses", "max", "valid until", "days", "e-mail domains"
            );
            for k in db::keys::list(&pool).await? {
                let state = if k.revoked != 0 {
                    "revoked"
                } else if k.valid_until.is_some_and(|t| t <= now) {
                    "expired"
                } else if k.max_uses.is_some_and(|m| k.uses >= m) {
                    "used up"
                } else {
                    "active"
                };
                println!(
                    "{:<24} {:>6} {:>8} {:<20} {:>5} {:<20} {state}",
                    k.name,
                    k.uses,
                    k.max_uses.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                    k.valid_until
                        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "-".into()),
                    k.account_days.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                    k.email_domains.unwrap_or_else(|| "-".into()),
                );
            }
        }
        KeyAction::Revoke { name } => {
            if !db::keys::revoke(&pool, &name).await? {
                bail!("no key named {name:?}");
            }
            println!("revoked {name}");
        }
    }
    pool.close().await;
    Ok(ExitCode::SUCCESS)
}

fn valid_pattern(p: &str) -> bool {
    let body = p.strip_prefix("*.").unwrap_or(p);
    p == "*"
        || (!body.is_empty()
            && body
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')))
}

/// `2026-12-31` (end of that day, UTC), an RFC 3339 time, or `7d`/`12h` from now.
fn parse_when(v: &str, now: i64) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(t.timestamp());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(23, 59, 59).expect("valid time").and_utc().timestamp());
    }
    let d = humantime::parse_duration(v).with_context(|| {
        format!("--valid-until: expected a date (2026-12-31), a time or a duration (7d), got {v:?}")
    })?;
    Ok(now + d.as_secs() as i64)
}

pub async fn volume(config: &Config, action: VolumeAction) -> anyhow::Result<ExitCode> {
    match action {
        VolumeAction::RebuildIndex => rebuild_index(config).await,
        VolumeAction::Backup { dest, user } => {
            crate::volumes::admin::backup(config, &dest, user.as_deref()).await
        }
        VolumeAction::Verify { src } => crate::volumes::admin::verify(&src).await,
        VolumeAction::Restore { src, user } => {
            crate::volumes::admin::restore(config, &src, user.as_deref()).await
        }
    }
}

/// Recreate user rows from volume names. Each row knows the name's hash and
/// the password hash; the username itself is learnt at the next login. Where
/// one name has several volumes (an interrupted password change), the newest
/// wins and the others are reported.
async fn rebuild_index(config: &Config) -> anyhow::Result<ExitCode> {
    let (pool, _) = db::open(&config.database_url).await?;
    let docker = crate::docker::connect().await.context("connecting to Docker")?;
    let mut volumes = crate::volumes::list(&docker, &config.instance).await?;
    // Newest first, so the newest volume of a name is the one kept.
    volumes.sort_by(|a, b| b.1.cmp(&a.1));
    let now = now_secs() as i64;
    let (mut added, mut skipped) = (0, 0);
    for (name, _) in volumes {
        let Some((sha, hash)) = crate::volumes::parse_volume_name(&config.instance, &name) else { continue };
        if db::users::insert_rebuilt(&pool, &sha, &hash, &name, now).await? {
            added += 1;
        } else {
            skipped += 1;
            println!("kept the existing entry for {}…; also found {name}", &sha[..12]);
        }
    }
    println!("rebuilt {added} user(s) from volumes; {skipped} volume(s) already indexed or older duplicates");
    pool.close().await;
    Ok(ExitCode::SUCCESS)
}

/// This instance's notebook containers, split by what the DB says of them.
struct PoolView {
    warm: Vec<(String, String)>,
    assigned: Vec<(String, String)>,
    other: Vec<(String, String)>,
}

async fn pool_view(config: &Config, docker: &bollard::Docker, pool: &db::Db) -> anyhow::Result<PoolView> {
    let assigned_ids: std::collections::HashSet<String> =
        db::slots::list(pool).await?.into_iter().map(|r| r.container_id).collect();
    let list = docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(crate::docker::instance_filter(&config.instance)),
            ..Default::default()
        }))
        .await?;
    let mut view = PoolView { warm: vec![], assigned: vec![], other: vec![] };
    for c in list {
        let id = c.id.unwrap_or_default();
        let slot = c.labels.unwrap_or_default().get(crate::docker::SLOT_LABEL).cloned();
        let running = c.state.map(|s| s.to_string()) == Some("running".into());
        let entry = (id.clone(), slot.clone().unwrap_or_else(|| "-".into()));
        if assigned_ids.contains(&id) {
            view.assigned.push(entry);
        } else if running && slot.is_some() {
            view.warm.push(entry);
        } else {
            view.other.push(entry);
        }
    }
    Ok(view)
}

pub async fn pool(config: &Config, action: PoolAction) -> anyhow::Result<ExitCode> {
    let (pool, _) = db::open(&config.database_url).await?;
    let docker = crate::docker::connect().await.context("connecting to Docker")?;
    let view = pool_view(config, &docker, &pool).await?;
    match action {
        PoolAction::Status => {
            println!(
                "instance {}: {} warm, {} assigned, {} other (cap {}, pool size {})",
                config.instance,
                view.warm.len(),
                view.assigned.len(),
                view.other.len(),
                config.max_containers,
                config.pool_size
            );
            for (kind, list) in [("warm", &view.warm), ("assigned", &view.assigned), ("other", &view.other)] {
                for (id, slot) in list {
                    println!("  {kind:<9} {} slot {slot}", &id[..id.len().min(12)]);
                }
            }
        }
        PoolAction::Drain { force } => {
            for (id, _) in &view.warm {
                crate::docker::force_remove(&docker, id).await?;
            }
            println!(
                "removed {} warm container(s); the gateway starts new ones from {}",
                view.warm.len(),
                config.image
            );
            if force {
                for (id, slot) in &view.assigned {
                    sqlx::query("UPDATE slots SET recycling = 1 WHERE container_id = ?")
                        .bind(id)
                        .execute(&pool)
                        .await?;
                    let stop =
                        bollard::query_parameters::StopContainerOptions { t: Some(10), ..Default::default() };
                    let _ = docker.stop_container(id, Some(stop)).await;
                    println!("  stopped the server in slot {slot}");
                }
                println!("stopped {} assigned server(s); their users' files are kept", view.assigned.len());
            } else if !view.assigned.is_empty() {
                println!(
                    "{} assigned server(s) finish their sessions (use --force to stop them now)",
                    view.assigned.len()
                );
            }
        }
        PoolAction::Refill { timeout } => {
            let limit =
                humantime::parse_duration(&timeout).context("--timeout: a duration such as 90s or 5m")?;
            let url = format!("http://{}/hub/health", config.bind);
            let deadline = std::time::Instant::now() + limit;
            loop {
                let warm = health_warm(&url).await;
                match warm {
                    Some(w) if w >= config.pool_size => {
                        println!("pool full: {w} warm");
                        break;
                    }
                    Some(w) => println!("{w}/{} warm…", config.pool_size),
                    None => println!("the gateway at {url} does not answer yet…"),
                }
                if std::time::Instant::now() > deadline {
                    bail!("the pool did not fill within {timeout}");
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    }
    pool.close().await;
    Ok(ExitCode::SUCCESS)
}

/// `pool.warm` from the gateway's health endpoint.
async fn health_warm(url: &str) -> Option<u32> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(3), client.get(url.parse().ok()?))
        .await
        .ok()?
        .ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v["pool"]["warm"].as_u64().map(|n| n as u32)
}

fn fmt_time(t: Option<i64>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}

async fn find_user(pool: &db::Db, name: &str) -> anyhow::Result<db::users::UserRow> {
    let name = crate::auth::password::Username::parse(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    db::users::by_name_hash(pool, &name.sha256_hex()).await?.with_context(|| format!("no user {name}"))
}

/// Stop the server a user's volume is bound into; the gateway recycles it.
async fn stop_user_server(docker: &bollard::Docker, pool: &db::Db, user_id: i64) -> anyhow::Result<bool> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT s.container_id FROM slots s JOIN sessions x ON x.slot_id = s.id WHERE x.user_id = ? LIMIT 1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    let Some(id) = id else { return Ok(false) };
    sqlx::query("UPDATE slots SET recycling = 1 WHERE container_id = ?").bind(&id).execute(pool).await?;
    let stop = bollard::query_parameters::StopContainerOptions { t: Some(10), ..Default::default() };
    let _ = docker.stop_container(&id, Some(stop)).await;
    crate::docker::force_remove(docker, &id).await?;
    Ok(true)
}

pub async fn user(config: &Config, action: crate::cli::UserAction) -> anyhow::Result<ExitCode> {
    use crate::cli::UserAction;
    let (pool, _) = db::open(&config.database_url).await?;
    let now = now_secs() as i64;
    match action {
        UserAction::List => {
            let running: std::collections::HashSet<i64> = sqlx::query_scalar::<_, i64>(
                "SELECT DISTINCT user_id FROM sessions WHERE slot_id IS NOT NULL AND user_id IS NOT NULL",
            )
            .fetch_all(&pool)
            .await?
            .into_iter()
            .collect();
            println!(
                "{:<24} {:<6} {:<8} {:<17} {:<17} {:<17}",
                "user", "admin", "server", "created", "last login", "expires"
            );
            for u in db::users::list(&pool).await? {
                println!(
                    "{:<24} {:<6} {:<8} {:<17} {:<17} {:<17}",
                    u.username.clone().unwrap_or_else(|| format!("({}…)", &u.name_sha256[..10])),
                    if u.is_admin != 0 { "yes" } else { "" },
                    if running.contains(&u.id) { "running" } else { "stopped" },
                    fmt_time(Some(u.created_at)),
                    fmt_time(u.last_login_at),
                    fmt_time(u.expires_at),
                );
            }
        }
        UserAction::Show { name } => {
            let u = find_user(&pool, &name).await?;
            println!("user        {}", u.username.as_deref().unwrap_or("(unknown until next login)"));
            println!("admin       {}", u.is_admin != 0);
            println!("volume      {}", u.volume);
            println!("email       {}", u.email.as_deref().unwrap_or("-"));
            println!("created     {}", fmt_time(Some(u.created_at)));
            println!("last login  {}", fmt_time(u.last_login_at));
            println!("expires     {}", fmt_time(u.expires_at));
        }
        UserAction::Expire { name, at } => {
            let u = find_user(&pool, &name).await?;
            let when = match at.as_str() {
                "never" => None,
                "now" => Some(now),
                other => Some(parse_when(other, now)?),
            };
            db::admin::set_expiry(&pool, u.id, when).await?;
            println!("{name}: expires {}", fmt_time(when));
            if when.is_some_and(|t| t <= now) {
                let docker = crate::docker::connect().await.context("connecting to Docker")?;
                if stop_user_server(&docker, &pool, u.id).await? {
                    println!("{name}: server stopped; files kept");
                }
            }
        }
        UserAction::Remove { name, delete_volume, yes } => {
            let u = find_user(&pool, &name).await?;
            if delete_volume && !yes {
                use std::io::{BufRead, IsTerminal};
                if !std::io::stdin().is_terminal() {
                    bail!("--delete-volume deletes {name}'s files: confirm with --yes");
                }
                eprint!("Delete {name}'s files in volume {}? Type the username to confirm: ", u.volume);
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                if line.trim() != u.username.as_deref().unwrap_or(&name) {
                    bail!("not confirmed; nothing removed");
                }
            }
            let docker = crate::docker::connect().await.context("connecting to Docker")?;
            stop_user_server(&docker, &pool, u.id).await?;
            db::admin::delete_user(&pool, u.id).await?;
            if delete_volume {
                crate::volumes::remove(&docker, &u.volume).await?;
                println!("removed {name} and deleted volume {}", u.volume);
            } else {
                println!(
                    "removed {name}; volume {} kept (`nbgate volume rebuild-index` brings the account back)",
                    u.volume
                );
            }
        }
        UserAction::ResetPassword { name, password } => {
            let u = find_user(&pool, &name).await?;
            let password = match password {
                Some(p) => p,
                None => {
                    let mut b = [0u8; 12];
                    rand::rng().fill_bytes(&mut b);
                    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b)
                }
            };
            crate::auth::password::check_new_password(&password, &password)
                .map_err(|e| anyhow::anyhow!("--password: {e}"))?;
            let cost = config.bcrypt_cost;
            let pw = password.clone();
            let hash = tokio::task::spawn_blocking(move || bcrypt::hash(pw, cost)).await??;
            let docker = crate::docker::connect().await.context("connecting to Docker")?;
            stop_user_server(&docker, &pool, u.id).await?;
            crate::volumes::rekey::move_to_new_hash(&docker, &pool, &config.instance, &u, &hash).await?;
            db::admin::end_sessions(&pool, u.id).await?;
            println!("{name}: new password {password}\n(files moved with it; sessions ended)");
        }
        UserAction::MakeAdmin { name, revoke } => {
            let u = find_user(&pool, &name).await?;
            db::admin::set_admin(&pool, u.id, !revoke).await?;
            println!("{name}: admin {}", if revoke { "revoked" } else { "granted" });
        }
    }
    pool.close().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn token(config: &Config, action: crate::cli::TokenAction) -> anyhow::Result<ExitCode> {
    use crate::cli::TokenAction;
    let (pool, _) = db::open(&config.database_url).await?;
    match action {
        TokenAction::Create { name } => {
            if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                bail!("token name: 1 to 64 printable characters");
            }
            let token = crate::slot::random_token();
            match db::admin::insert_token(&pool, &name, &key_hash(&token), now_secs() as i64).await {
                Ok(()) => {
                    println!("token {name}: {token}\n(shown once; use it as `Authorization: token {token}`)")
                }
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    bail!("a token named {name} exists")
                }
                Err(e) => return Err(e.into()),
            }
        }
        TokenAction::List => {
            for t in db::admin::list_tokens(&pool).await? {
                println!(
                    "{:<24} created {}  {}",
                    t.name,
                    fmt_time(Some(t.created_at)),
                    if t.revoked != 0 { "revoked" } else { "active" }
                );
            }
        }
        TokenAction::Revoke { name } => {
            if !db::admin::revoke_token(&pool, &name).await? {
                bail!("no token named {name:?}");
            }
            println!("revoked {name}");
        }
    }
    pool.close().await;
    Ok(ExitCode::SUCCESS)
}
