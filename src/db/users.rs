//! Accounts.

use crate::db::Db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub name_sha256: String,
    pub username: Option<String>,
    pub password_hash: String,
    pub volume: String,
    pub email: Option<String>,
    pub is_admin: i64,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_login_at: Option<i64>,
    pub pending_volume: Option<String>,
    pub old_volume: Option<String>,
}

const COLUMNS: &str =
    "id, name_sha256, username, password_hash, volume, email, is_admin, created_at, expires_at, \
                       last_login_at, pending_volume, old_volume";

/// A registration: the account, and the key's use, in one transaction. The
/// UNIQUE constraint on the name's hash decides races between registrations
/// of one name.
pub struct NewUser<'a> {
    pub name_sha256: &'a str,
    pub username: &'a str,
    pub password_hash: &'a str,
    pub volume: &'a str,
    pub email: Option<&'a str>,
    pub key_id: Option<i64>,
    pub expires_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("that username is taken")]
    Taken,
    #[error("the registration key has been used up")]
    KeyUsedUp,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Insert the user and count the key's use; `create_volume` runs inside the
/// transaction, so a failure there leaves no row, and a failure to commit is
/// reported so the caller can remove the volume.
pub async fn register<F, Fut, E>(
    db: &Db,
    user: &NewUser<'_>,
    now: i64,
    create_volume: F,
) -> Result<i64, RegisterError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut tx = db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO users (name_sha256, username, password_hash, volume, email, key_id, created_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(user.name_sha256)
    .bind(user.username)
    .bind(user.password_hash)
    .bind(user.volume)
    .bind(user.email)
    .bind(user.key_id)
    .bind(now)
    .bind(user.expires_at)
    .execute(&mut *tx)
    .await;
    let id = match inserted {
        Ok(r) => r.last_insert_rowid(),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(RegisterError::Taken),
        Err(e) => return Err(e.into()),
    };
    if let Some(key_id) = user.key_id {
        let counted = sqlx::query(
            "UPDATE registration_keys SET uses = uses + 1 WHERE id = ? AND revoked = 0 \
             AND (max_uses IS NULL OR uses < max_uses)",
        )
        .bind(key_id)
        .execute(&mut *tx)
        .await?;
        if counted.rows_affected() != 1 {
            return Err(RegisterError::KeyUsedUp);
        }
    }
    create_volume()
        .await
        .map_err(|e| RegisterError::Db(sqlx::Error::Protocol(format!("creating the volume: {e}"))))?;
    tx.commit().await?;
    Ok(id)
}

#[tracing::instrument(skip(db))]
pub async fn by_name_hash(db: &Db, name_sha256: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE name_sha256 = ?"))
        .bind(name_sha256)
        .fetch_optional(db)
        .await
}

#[tracing::instrument(skip(db))]
pub async fn by_id(db: &Db, id: i64) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = ?")).bind(id).fetch_optional(db).await
}

#[tracing::instrument(skip(db))]
pub async fn list(db: &Db) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users ORDER BY id")).fetch_all(db).await
}

/// After a login: remember the name (a rebuilt row learns it here) and the time.
#[tracing::instrument(skip(db))]
pub async fn logged_in(db: &Db, id: i64, username: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET username = ?, last_login_at = ? WHERE id = ?")
        .bind(username)
        .bind(now)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Step 1 of a password change: record the new volume before filling it.
#[tracing::instrument(skip(db))]
pub async fn begin_password_change(db: &Db, id: i64, new_volume: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET pending_volume = ? WHERE id = ?")
        .bind(new_volume)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Step 2, after a verified copy: switch hash and volume in one statement.
#[tracing::instrument(skip_all)]
pub async fn finish_password_change(
    db: &Db,
    id: i64,
    new_hash: &str,
    new_volume: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET old_volume = volume, volume = ?, password_hash = ?, pending_volume = NULL WHERE id = ?",
    )
    .bind(new_volume)
    .bind(new_hash)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

#[tracing::instrument(skip(db))]
pub async fn clear_pending(db: &Db, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET pending_volume = NULL WHERE id = ?").bind(id).execute(db).await?;
    Ok(())
}

#[tracing::instrument(skip(db))]
pub async fn clear_old_volume(db: &Db, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET old_volume = NULL WHERE id = ?").bind(id).execute(db).await?;
    Ok(())
}

/// Rows for a rebuilt index: the name's hash, the password hash and the volume.
#[tracing::instrument(skip_all)]
pub async fn insert_rebuilt(
    db: &Db,
    name_sha256: &str,
    password_hash: &str,
    volume: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "INSERT OR IGNORE INTO users (name_sha256, password_hash, volume, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(name_sha256)
    .bind(password_hash)
    .bind(volume)
    .bind(now)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}
