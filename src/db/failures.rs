//! Failed attempts per scope (account, address), kept in the DB so a restart
//! does not reset throttling.

use crate::db::Db;

#[tracing::instrument(skip(db))]
pub async fn get(db: &Db, scope: &str) -> Result<Option<(i64, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT count, last_at FROM failures WHERE scope = ?").bind(scope).fetch_optional(db).await
}

/// Count one more failure. A scope quiet for `forget_after` seconds starts over.
#[tracing::instrument(skip(db))]
pub async fn record(db: &Db, scope: &str, now: i64, forget_after: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO failures (scope, count, last_at) VALUES (?, 1, ?) ON CONFLICT(scope) DO UPDATE SET \
         count = CASE WHEN last_at < ? THEN 1 ELSE count + 1 END, last_at = excluded.last_at",
    )
    .bind(scope)
    .bind(now)
    .bind(now - forget_after)
    .execute(db)
    .await?;
    Ok(())
}

#[tracing::instrument(skip(db))]
pub async fn clear(db: &Db, scope: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM failures WHERE scope = ?").bind(scope).execute(db).await?;
    Ok(())
}
