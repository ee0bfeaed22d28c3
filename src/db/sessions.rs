//! Browser sessions, stored by the sha256 of the cookie value.

use sqlx::{Sqlite, Transaction};

use crate::db::Db;
use crate::proxy::routes::SessionHash;

#[derive(Debug, sqlx::FromRow)]
pub struct SessionRow {
    pub id_hash: Vec<u8>,
    pub user_id: Option<i64>,
    pub slot_id: Option<String>,
    pub expires_at: i64,
}

#[tracing::instrument(skip_all)]
pub async fn find(db: &Db, hash: &SessionHash, now: i64) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id_hash, user_id, slot_id, expires_at FROM sessions WHERE id_hash = ? AND expires_at > ?",
    )
    .bind(&hash[..])
    .bind(now)
    .fetch_optional(db)
    .await
}

/// Unexpired sessions holding a slot (to rebuild routes at start).
#[tracing::instrument(skip(db))]
pub async fn with_slots(db: &Db, now: i64) -> Result<Vec<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id_hash, user_id, slot_id, expires_at FROM sessions WHERE slot_id IS NOT NULL AND expires_at > ?",
    )
    .bind(now)
    .fetch_all(db)
    .await
}

/// Hand a slot to a session (creating the session if new), in one transaction
/// with the slot row: both are written or neither.
#[tracing::instrument(skip_all, fields(slot = slot_id))]
pub async fn assign_slot(
    db: &Db,
    hash: &SessionHash,
    user_id: Option<i64>,
    slot_id: &str,
    container_id: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    let mut tx: Transaction<'_, Sqlite> = db.begin().await?;
    sqlx::query("INSERT INTO slots (id, container_id, assigned_at) VALUES (?, ?, ?)")
        .bind(slot_id)
        .bind(container_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO sessions (id_hash, user_id, slot_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT(id_hash) DO UPDATE SET slot_id = excluded.slot_id, stop_reason = NULL, stopped_at = NULL",
    )
    .bind(&hash[..])
    .bind(user_id)
    .bind(slot_id)
    .bind(now)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[tracing::instrument(skip_all)]
pub async fn delete(db: &Db, hash: &SessionHash) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = ?").bind(&hash[..]).execute(db).await?;
    Ok(())
}

#[tracing::instrument(skip(db))]
pub async fn delete_expired(db: &Db, now: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= ?").bind(now).execute(db).await?.rows_affected())
}

/// A signed-in session, not yet holding a slot.
#[tracing::instrument(skip_all)]
pub async fn create(
    db: &Db,
    hash: &SessionHash,
    user_id: i64,
    now: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO sessions (id_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)")
        .bind(&hash[..])
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(db)
        .await?;
    Ok(())
}

/// Point a session at an existing slot (a second browser of the same user).
#[tracing::instrument(skip_all)]
pub async fn set_slot(db: &Db, hash: &SessionHash, slot_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET slot_id = ? WHERE id_hash = ?")
        .bind(slot_id)
        .bind(&hash[..])
        .execute(db)
        .await?;
    Ok(())
}

/// Record why the server of every session holding `slot` stopped.
#[tracing::instrument(skip(db))]
pub async fn note_stop(db: &Db, slot_id: &str, reason: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET stop_reason = ?, stopped_at = ? WHERE slot_id = ?")
        .bind(reason)
        .bind(now)
        .bind(slot_id)
        .execute(db)
        .await?;
    Ok(())
}

/// The last stop reason of a session, if one is waiting to be shown.
#[tracing::instrument(skip_all)]
pub async fn stop_note(db: &Db, hash: &SessionHash) -> Result<Option<(String, i64)>, sqlx::Error> {
    let row: Option<(Option<String>, Option<i64>)> =
        sqlx::query_as("SELECT stop_reason, stopped_at FROM sessions WHERE id_hash = ?")
            .bind(&hash[..])
            .fetch_optional(db)
            .await?;
    Ok(row.and_then(|(r, t)| Some((r?, t?))))
}
