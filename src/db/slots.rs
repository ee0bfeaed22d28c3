//! Slot assignments: one row per assigned (or recycling) container.

use crate::db::Db;
use crate::slot::SlotId;

#[derive(Debug, sqlx::FromRow)]
pub struct SlotRow {
    pub id: String,
    pub container_id: String,
    pub assigned_at: i64,
    pub recycling: i64,
}

#[tracing::instrument(skip(db))]
pub async fn list(db: &Db) -> Result<Vec<SlotRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, container_id, assigned_at, recycling FROM slots").fetch_all(db).await
}

/// Mark a slot as being recycled, so a restart mid-recycle never hands it out.
#[tracing::instrument(skip(db))]
pub async fn mark_recycling(db: &Db, slot: &SlotId) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE slots SET recycling = 1 WHERE id = ?").bind(slot.as_str()).execute(db).await?;
    Ok(())
}

/// Forget a slot; sessions that held it keep living without a slot.
#[tracing::instrument(skip(db))]
pub async fn delete(db: &Db, slot: &SlotId) -> Result<(), sqlx::Error> {
    delete_by_id(db, slot.as_str()).await
}

/// [`delete`] for an id read back from the table (not necessarily a valid `SlotId`).
#[tracing::instrument(skip(db))]
pub async fn delete_by_id(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM slots WHERE id = ?").bind(id).execute(db).await?;
    Ok(())
}
