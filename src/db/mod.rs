//! The database: SQLite (WAL) through sqlx, migrations embedded from `migrations/`.
//!
//! Opening is careful because the DB is the index of users and volumes: a file
//! that is corrupt, unreadable, or written by a newer nbgate stops the gateway
//! with a clear message and is never modified. Before a migration is applied to a
//! DB that already has data, an online copy is taken with `VACUUM INTO`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

pub mod admin;
pub mod failures;
pub mod keys;
pub mod sessions;
pub mod slots;
pub mod users;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The connection pool; cheap to clone.
pub type Db = SqlitePool;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("NBGATE_DATABASE_URL: {0}")]
    BadUrl(String),
    #[error("database {path} is corrupt or not an nbgate database ({detail}); nbgate left it untouched. Restore it from {backups} or from a backup, or move it aside to start empty")]
    Corrupt { path: PathBuf, detail: String, backups: PathBuf },
    #[error("database {path} has schema version {found}, newer than this nbgate knows ({known}); nbgate left it untouched. Run the newer nbgate, or restore a backup from {backups}")]
    NewerSchema { path: PathBuf, found: i64, known: i64, backups: PathBuf },
    #[error("database {path} cannot be opened: {source}")]
    Unreadable { path: PathBuf, source: sqlx::Error },
    #[error("could not back up {path} before migrating: {source}")]
    Backup { path: PathBuf, source: sqlx::Error },
    #[error("migrating {path}: {source}")]
    Migrate { path: PathBuf, source: sqlx::migrate::MigrateError },
}

/// What [`open`] did, for `nbgate check` and the start-up log.
#[derive(Debug, Default)]
pub struct Opened {
    pub created: bool,
    pub applied: Vec<i64>,
    pub backup: Option<PathBuf>,
}

/// Open (creating if absent), check, back up if needed, and migrate.
pub async fn open(url: &str) -> Result<(Db, Opened), OpenError> {
    let options = SqliteConnectOptions::from_str(url).map_err(|e| OpenError::BadUrl(e.to_string()))?;
    let path = options.get_filename().to_owned();
    let backups = backups_dir(&path);
    let mut opened = Opened::default();

    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let mut applied = Vec::new();
    if path.exists() {
        applied = inspect(&options, &path, &backups).await?;
        if let Some(&found) = applied.iter().max() {
            if found > known || applied.iter().any(|v| !MIGRATOR.iter().any(|m| m.version == *v)) {
                return Err(OpenError::NewerSchema { path, found, known, backups });
            }
        }
    } else {
        opened.created = true;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| OpenError::Unreadable { path: path.clone(), source: sqlx::Error::Io(e) })?;
        }
    }

    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(
            options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true),
        )
        .await
        .map_err(|source| OpenError::Unreadable { path: path.clone(), source })?;

    let pending: Vec<i64> = MIGRATOR.iter().map(|m| m.version).filter(|v| !applied.contains(v)).collect();
    if !pending.is_empty() && !applied.is_empty() {
        let dest = backups.join(format!(
            "nbgate-{}-before-v{}.db",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            pending[0]
        ));
        backup_to(&pool, &dest).await.map_err(|source| OpenError::Backup { path: path.clone(), source })?;
        tracing::info!(backup = %dest.display(), "database backed up before migrating");
        opened.backup = Some(dest);
    }
    MIGRATOR.run(&pool).await.map_err(|source| OpenError::Migrate { path: path.clone(), source })?;
    opened.applied = pending;
    Ok((pool, opened))
}

/// Online, consistent copy of the database (safe while the gateway runs).
pub async fn backup_to(pool: &Db, dest: &Path) -> Result<(), sqlx::Error> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    sqlx::query("VACUUM INTO ?").bind(dest.to_string_lossy().as_ref()).execute(pool).await?;
    Ok(())
}

fn backups_dir(db_path: &Path) -> PathBuf {
    db_path.parent().unwrap_or(Path::new(".")).join("backups")
}

/// Check an existing file without writing to it: integrity, then the applied
/// migration versions (empty for a fresh SQLite file with no tables).
async fn inspect(options: &SqliteConnectOptions, path: &Path, backups: &Path) -> Result<Vec<i64>, OpenError> {
    let corrupt =
        |detail: String| OpenError::Corrupt { path: path.to_owned(), detail, backups: backups.to_owned() };
    // No journal-mode pragma and no create: this connection only reads.
    let mut conn = options.clone().create_if_missing(false).connect().await.map_err(|e| match e {
        sqlx::Error::Database(d) => corrupt(d.message().to_string()),
        source => OpenError::Unreadable { path: path.to_owned(), source },
    })?;
    let check: Result<String, sqlx::Error> =
        sqlx::query_scalar("PRAGMA quick_check(1)").fetch_one(&mut conn).await;
    match check {
        Ok(s) if s == "ok" => {}
        Ok(s) => return Err(corrupt(s)),
        Err(sqlx::Error::Database(d)) => return Err(corrupt(d.message().to_string())),
        Err(source) => return Err(OpenError::Unreadable { path: path.to_owned(), source }),
    }
    let has_table: bool = sqlx::query_scalar(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|source| OpenError::Unreadable { path: path.to_owned(), source })?;
    let versions = if has_table {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .map_err(|source| OpenError::Unreadable { path: path.to_owned(), source })?
    } else {
        let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
            .fetch_one(&mut conn)
            .await
            .map_err(|source| OpenError::Unreadable { path: path.to_owned(), source })?;
        if tables > 0 {
            return Err(corrupt("it has tables but no migration record".into()));
        }
        Vec::new()
    };
    let _ = conn.close().await;
    Ok(versions)
}
