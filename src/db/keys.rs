//! Registration keys in the DB.

use crate::db::Db;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub id: i64,
    pub name: String,
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub valid_until: Option<i64>,
    pub account_days: Option<i64>,
    pub email_domains: Option<String>,
    pub revoked: i64,
    pub created_at: i64,
}

const COLUMNS: &str =
    "id, name, max_uses, uses, valid_until, account_days, email_domains, revoked, created_at";

/// A new key's settings.
pub struct NewKey<'a> {
    pub name: &'a str,
    pub key_hash: &'a [u8],
    pub max_uses: Option<i64>,
    pub valid_until: Option<i64>,
    pub account_days: Option<i64>,
    pub email_domains: Option<&'a str>,
}

#[tracing::instrument(skip_all, fields(name = key.name))]
pub async fn insert(db: &Db, key: &NewKey<'_>, now: i64) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO registration_keys (name, key_hash, max_uses, valid_until, account_days, email_domains, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(key.name)
    .bind(key.key_hash)
    .bind(key.max_uses)
    .bind(key.valid_until)
    .bind(key.account_days)
    .bind(key.email_domains)
    .bind(now)
    .execute(db)
    .await?;
    Ok(row.last_insert_rowid())
}

#[tracing::instrument(skip(db))]
pub async fn list(db: &Db) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM registration_keys ORDER BY id")).fetch_all(db).await
}

#[tracing::instrument(skip_all)]
pub async fn find_by_hash(db: &Db, key_hash: &[u8]) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM registration_keys WHERE key_hash = ?"))
        .bind(key_hash)
        .fetch_optional(db)
        .await
}

/// Whether any key could still let someone register (for "registration closed").
#[tracing::instrument(skip(db))]
pub async fn any_usable(db: &Db, now: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS(SELECT 1 FROM registration_keys WHERE revoked = 0 \
         AND (valid_until IS NULL OR valid_until > ?) AND (max_uses IS NULL OR uses < max_uses))",
    )
    .bind(now)
    .fetch_one(db)
    .await
}

/// Whether any usable key asks for an e-mail address (the form then shows the field).
#[tracing::instrument(skip(db))]
pub async fn any_wants_email(db: &Db, now: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS(SELECT 1 FROM registration_keys WHERE revoked = 0 AND email_domains IS NOT NULL \
         AND (valid_until IS NULL OR valid_until > ?))",
    )
    .bind(now)
    .fetch_one(db)
    .await
}

#[tracing::instrument(skip(db))]
pub async fn revoke(db: &Db, name: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("UPDATE registration_keys SET revoked = 1 WHERE name = ?")
        .bind(name)
        .execute(db)
        .await?
        .rows_affected()
        == 1)
}
