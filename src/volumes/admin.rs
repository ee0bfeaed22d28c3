//! `nbgate volume backup|verify|restore`: the Docker and database side around
//! the archive core in [`super::backup`].
//!
//! Consistency: while a user's volume is archived, the container it is bound
//! into (if any) is paused (`docker pause` freezes its processes), so no file
//! changes half-way; the pause lasts as long as that one volume's archive.
//! Restore never writes into a live volume: it fills a fresh volume, checks
//! it, stops the user's server, and swaps the two volumes' data directories
//! with rename(2); the previous contents stay in the fresh volume, whose name
//! is printed, until the admin removes it.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use bollard::Docker;

use crate::auth::password::Username;
use crate::config::Config;
use crate::db;
use crate::volumes::{self, backup};

/// Progress on a terminal: `\r<volume> 42% (12.3 MB)`; silent otherwise.
fn progress_printer(volume: &str, total: u64) -> impl FnMut(u64) {
    let tty = std::io::stderr().is_terminal();
    let name = volume.chars().take(40).collect::<String>();
    let mut last = Instant::now();
    move |done: u64| {
        if tty && (last.elapsed().as_millis() > 200 || done >= total) {
            last = Instant::now();
            let pct = (done * 100).checked_div(total).unwrap_or(100);
            eprint!("\r{name} {pct:>3}% ({:.1} MB)   ", done as f64 / 1e6);
            let _ = std::io::stderr().flush();
        }
    }
}

/// The volumes to act on: one user's, or every volume of this instance that
/// follows the naming scheme.
async fn volumes_for(
    config: &Config,
    docker: &Docker,
    pool: &db::Db,
    user: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    if let Some(name) = user {
        let name = Username::parse(name).map_err(|e| anyhow::anyhow!("--user: {e}"))?;
        let row = db::users::by_name_hash(pool, &name.sha256_hex())
            .await?
            .with_context(|| format!("no user {name}"))?;
        return Ok(vec![row.volume]);
    }
    let mut names: Vec<String> = volumes::list(docker, &config.instance)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| volumes::parse_volume_name(&config.instance, n).is_some())
        .collect();
    names.sort();
    Ok(names)
}

/// The running container a volume is bound into, from the DB's view.
async fn container_of(pool: &db::Db, volume: &str) -> anyhow::Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT s.container_id FROM slots s JOIN sessions x ON x.slot_id = s.id JOIN users u ON u.id = x.user_id \
         WHERE u.volume = ? LIMIT 1",
    )
    .bind(volume)
    .fetch_optional(pool)
    .await?)
}

pub async fn backup(config: &Config, dest: &Path, user: Option<&str>) -> anyhow::Result<ExitCode> {
    let (pool, _) = db::open(&config.database_url).await?;
    let docker = crate::docker::connect().await.context("connecting to Docker")?;
    std::fs::create_dir_all(dest).with_context(|| format!("--dest {}", dest.display()))?;
    let mut entries = Vec::new();
    let started = Instant::now();
    let mut total_bytes = 0u64;
    for volume in volumes_for(config, &docker, &pool, user).await? {
        let src = volumes::mountpoint(&docker, &volume).await?;
        let container = container_of(&pool, &volume).await?;
        let paused = match &container {
            Some(id) => docker.pause_container(id).await.is_ok(),
            None => false,
        };
        let pause_started = Instant::now();
        let (dir, name) = (dest.to_path_buf(), volume.clone());
        let result = tokio::task::spawn_blocking(move || {
            let total = backup::content_bytes(&src)?;
            let mut progress = progress_printer(&name, total);
            backup::write_archive(&src, &dir, &name, &mut progress)
        })
        .await?;
        if paused {
            if let Some(id) = &container {
                docker.unpause_container(id).await.with_context(|| format!("unpausing {id}"))?;
            }
            eprintln!("\n{volume}: its server was paused for {:.2} s", pause_started.elapsed().as_secs_f64());
        }
        let entry = result.with_context(|| format!("backing up {volume}"))?;
        total_bytes += entry.record.content_bytes;
        println!(
            "{volume}: {} files, {:.1} MB",
            entry.record.entries.len(),
            entry.record.content_bytes as f64 / 1e6
        );
        entries.push(entry);
    }
    let manifest = backup::Manifest::new(entries);
    manifest.save(dest)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "backed up {} volume(s), {:.1} MB in {secs:.1} s ({:.1} MB/s) to {}",
        manifest.volumes.len(),
        total_bytes as f64 / 1e6,
        total_bytes as f64 / 1e6 / secs.max(0.001),
        dest.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(src: &Path) -> anyhow::Result<ExitCode> {
    let manifest = backup::Manifest::load(src)?;
    let mut failed = 0;
    for entry in &manifest.volumes {
        let (dir, e) = (src.to_path_buf(), entry.clone());
        match tokio::task::spawn_blocking(move || backup::verify_archive(&dir, &e)).await? {
            Ok(()) => println!("ok    {}", entry.volume),
            Err(err) => {
                failed += 1;
                println!("FAIL: {} — {err}", entry.volume);
            }
        }
    }
    println!("{} archive(s), {failed} failed", manifest.volumes.len());
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub async fn restore(config: &Config, src: &Path, user: Option<&str>) -> anyhow::Result<ExitCode> {
    let (pool, _) = db::open(&config.database_url).await?;
    let docker = crate::docker::connect().await.context("connecting to Docker")?;
    let manifest = backup::Manifest::load(src)?;
    let wanted_sha = match user {
        Some(name) => Some(Username::parse(name).map_err(|e| anyhow::anyhow!("--user: {e}"))?.sha256_hex()),
        None => None,
    };
    let mut restored = 0;
    let started = Instant::now();
    let mut bytes = 0u64;
    for entry in &manifest.volumes {
        let Some((sha, hash)) = volumes::parse_volume_name(&config.instance, &entry.volume) else {
            println!("skipped {}: not a volume of instance {}", entry.volume, config.instance);
            continue;
        };
        if wanted_sha.as_ref().is_some_and(|w| *w != sha) {
            continue;
        }
        let (dir, e) = (src.to_path_buf(), entry.clone());
        tokio::task::spawn_blocking(move || backup::verify_archive(&dir, &e))
            .await?
            .with_context(|| format!("{} does not match its manifest; nothing restored", entry.volume))?;
        // The live volume: the user's current one if the DB knows them.
        let user_row = db::users::by_name_hash(&pool, &sha).await?;
        let target = user_row.as_ref().map(|u| u.volume.clone()).unwrap_or_else(|| entry.volume.clone());
        let fresh = format!("{}-restore-{}", config.instance, &crate::slot::random_token()[..12]);
        let fresh_dir = volumes::create(&docker, &config.instance, &fresh).await?;
        let archive = backup::archive_path(src, entry)?;
        let into = fresh_dir.clone();
        let name = entry.volume.clone();
        let total = entry.record.content_bytes;
        let stats = tokio::task::spawn_blocking(move || {
            let mut progress = progress_printer(&name, total);
            backup::restore_archive(&archive, &into, &mut progress)
        })
        .await?;
        if let Err(e) = stats {
            let _ = volumes::remove(&docker, &fresh).await;
            bail!("restoring {}: {e}; the live volume is untouched", entry.volume);
        }
        let live_exists = docker.inspect_volume(&target).await.is_ok();
        if live_exists {
            stop_servers_of(&docker, &pool, &target).await?;
        } else {
            volumes::create(&docker, &config.instance, &target).await?;
        }
        let live_dir = volumes::mountpoint(&docker, &target).await?;
        swap_dirs(&live_dir, &fresh_dir).with_context(|| format!("swapping {target} with {fresh}"))?;
        if live_exists {
            println!("\n{target}: restored; the previous contents are kept in volume {fresh} (docker volume rm {fresh} when satisfied)");
        } else {
            volumes::remove(&docker, &fresh).await?;
            println!("\n{target}: restored into a new volume");
        }
        if user_row.is_none() {
            db::users::insert_rebuilt(&pool, &sha, &hash, &target, crate::proxy::routes::now_secs() as i64)
                .await?;
        }
        bytes += entry.record.content_bytes;
        restored += 1;
    }
    if restored == 0 {
        bail!("nothing to restore{}", user.map(|u| format!(" for user {u}")).unwrap_or_default());
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "restored {restored} volume(s), {:.1} MB in {secs:.1} s ({:.1} MB/s)",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs.max(0.001)
    );
    Ok(ExitCode::SUCCESS)
}

/// Stop the servers that have `volume` bound: the running gateway sees them
/// stop and recycles them (reason: an organizer's update); files are kept.
async fn stop_servers_of(docker: &Docker, pool: &db::Db, volume: &str) -> anyhow::Result<()> {
    if let Some(id) = container_of(pool, volume).await? {
        sqlx::query("UPDATE slots SET recycling = 1 WHERE container_id = ?").bind(&id).execute(pool).await?;
        let stop = bollard::query_parameters::StopContainerOptions { t: Some(10), ..Default::default() };
        let _ = docker.stop_container(&id, Some(stop)).await;
        crate::docker::force_remove(docker, &id).await?;
    }
    Ok(())
}

/// Exchange two directories on one filesystem with three renames.
fn swap_dirs(a: &Path, b: &Path) -> std::io::Result<()> {
    let parked: PathBuf = a.with_file_name("_data.swap");
    std::fs::rename(a, &parked)?;
    if let Err(e) = std::fs::rename(b, a) {
        std::fs::rename(&parked, a)?;
        return Err(e);
    }
    std::fs::rename(&parked, b)
}
