//! Password change: the volume name carries the bcrypt hash, so a new password
//! means a new volume. The files move with a verified copy, and the switch is
//! one DB statement; a crash at any point leaves a state where one of the two
//! passwords logs in to the same files (see [`recover`]).

use crate::app::App;
use crate::db;
use crate::db::users::UserRow;
use crate::volumes::{self, copy};

#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    #[error("hashing: {0}")]
    Hash(#[from] bcrypt::BcryptError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("copying files: {0}")]
    Copy(#[from] std::io::Error),
}

pub async fn change_password(app: &App, user: &UserRow, new_password: &str) -> Result<(), RekeyError> {
    let new_hash = app.hasher.hash(new_password).await?;
    let _guard = app.binder.lock(user.id).await;
    // Stop the server first, so nothing writes while the files move.
    crate::pool::supervise::recycle_user_locked(app, user.id, &crate::recycle::Reason::PasswordChange).await;
    let docker = app.docker.get().await?;
    move_to_new_hash(&docker, &app.db, &app.config.instance, user, &new_hash).await
}

/// Move a user's files to the volume named for `new_hash` (verified copy),
/// switch the account over, and remove the old volume. The user's server must
/// be stopped.
pub async fn move_to_new_hash(
    docker: &bollard::Docker,
    db: &crate::db::Db,
    instance: &str,
    user: &UserRow,
    new_hash: &str,
) -> Result<(), RekeyError> {
    let new_volume = volumes::volume_name_for(instance, &user.name_sha256, new_hash);
    db::users::begin_password_change(db, user.id, &new_volume).await?;
    let moved = async {
        let target = volumes::create(docker, instance, &new_volume).await?;
        let source = volumes::mountpoint(docker, &user.volume).await?;
        tokio::task::spawn_blocking(move || {
            copy::copy_tree(&source, &target)?;
            copy::verify_same(&source, &target)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok::<_, RekeyError>(())
    }
    .await;
    if let Err(e) = moved {
        let _ = volumes::remove(docker, &new_volume).await;
        let _ = db::users::clear_pending(db, user.id).await;
        return Err(e);
    }
    db::users::finish_password_change(db, user.id, new_hash, &new_volume).await?;
    tracing::info!(user = user.id, "password changed; files moved to a new volume");
    volumes::remove(docker, &user.volume).await?;
    db::users::clear_old_volume(db, user.id).await?;
    Ok(())
}

/// Finish what a crash interrupted: a copy that never switched is discarded
/// (the old password still works); an old volume left after a finished switch
/// is removed (its copy was verified before the switch).
pub async fn recover(app: &App) -> Result<(), RekeyError> {
    let docker = app.docker.get().await?;
    for user in db::users::list(&app.db).await? {
        if let Some(pending) = user.pending_volume.as_deref().filter(|p| *p != user.volume) {
            tracing::warn!(user = user.id, "discarding an unfinished password change");
            volumes::remove(&docker, pending).await?;
            db::users::clear_pending(&app.db, user.id).await?;
        }
        if let Some(old) = user.old_volume.as_deref().filter(|o| *o != user.volume) {
            volumes::remove(&docker, old).await?;
            db::users::clear_old_volume(&app.db, user.id).await?;
        }
    }
    Ok(())
}
