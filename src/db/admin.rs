//! API tokens, live settings, and the admin's changes to accounts.

use crate::db::Db;

#[derive(Debug, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub revoked: i64,
}

pub async fn insert_token(db: &Db, name: &str, hash: &[u8], now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO api_tokens (name, token_hash, created_at) VALUES (?, ?, ?)")
        .bind(name)
        .bind(hash)
        .bind(now)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn list_tokens(db: &Db) -> Result<Vec<TokenRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, created_at, revoked FROM api_tokens ORDER BY id").fetch_all(db).await
}

pub async fn revoke_token(db: &Db, name: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("UPDATE api_tokens SET revoked = 1 WHERE name = ?")
        .bind(name)
        .execute(db)
        .await?
        .rows_affected()
        == 1)
}

/// Whether `hash` belongs to a live token.
pub async fn token_valid(db: &Db, hash: &[u8]) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS(SELECT 1 FROM api_tokens WHERE token_hash = ? AND revoked = 0)")
        .bind(hash)
        .fetch_one(db)
        .await
}

pub async fn setting(db: &Db, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM settings WHERE key = ?").bind(key).fetch_optional(db).await
}

pub async fn set_setting(db: &Db, key: &str, value: Option<&str>) -> Result<(), sqlx::Error> {
    match value {
        Some(v) => {
            sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
                .bind(key)
                .bind(v)
                .execute(db)
                .await?
        }
        None => sqlx::query("DELETE FROM settings WHERE key = ?").bind(key).execute(db).await?,
    };
    Ok(())
}

pub async fn set_expiry(db: &Db, user_id: i64, at: Option<i64>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET expires_at = ? WHERE id = ?").bind(at).bind(user_id).execute(db).await?;
    Ok(())
}

pub async fn set_admin(db: &Db, user_id: i64, admin: bool) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET is_admin = ? WHERE id = ?")
        .bind(admin as i64)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Remove an account and its sessions (its volume is the caller's business).
pub async fn delete_user(db: &Db, user_id: i64) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = ?").bind(user_id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM users WHERE id = ?").bind(user_id).execute(&mut *tx).await?;
    tx.commit().await
}

/// End every session of a user (password reset, removal).
pub async fn end_sessions(db: &Db, user_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE user_id = ?").bind(user_id).execute(db).await?;
    Ok(())
}

pub const ANNOUNCEMENT: &str = "announcement";
