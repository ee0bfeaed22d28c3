//! The database opens carefully: migrations on an empty DB; a newer or corrupt
//! DB is refused and left byte-for-byte untouched.

use sha2::{Digest, Sha256};

fn url(path: &std::path::Path) -> String {
    format!("sqlite://{}", path.display())
}

fn digest(path: &std::path::Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/nbgate.db");
    let (pool, opened) = nbgate::db::open(&url(&path)).await.unwrap();
    assert!(opened.created);
    assert_eq!(opened.applied, nbgate::db::MIGRATOR.iter().map(|m| m.version).collect::<Vec<_>>());
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&pool).await.unwrap();
    assert_eq!(mode, "wal");
    sqlx::query("INSERT INTO slots (id, container_id, assigned_at) VALUES ('a', 'b', 1)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    // A second open applies nothing and keeps the data.
    let (pool, opened) = nbgate::db::open(&url(&path)).await.unwrap();
    assert!(!opened.created && opened.applied.is_empty() && opened.backup.is_none());
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM slots").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_newer_schema_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nbgate.db");
    let (pool, _) = nbgate::db::open(&url(&path)).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999999, 'from the future', 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await.unwrap();
    pool.close().await;
    let before = digest(&path);

    let err = nbgate::db::open(&url(&path)).await.unwrap_err().to_string();
    assert!(err.contains("schema version 999999") && err.contains("newer"), "{err}");
    assert!(err.contains("left it untouched"), "{err}");
    assert_eq!(digest(&path), before);
}

#[tokio::test]
async fn a_corrupt_file_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nbgate.db");
    std::fs::write(&path, b"this is not a database, it is a shopping list\n".repeat(200)).unwrap();
    let before = digest(&path);
    let err = nbgate::db::open(&url(&path)).await.unwrap_err().to_string();
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(digest(&path), before, "the corrupt file was modified");
    assert!(!dir.path().join("nbgate.db-wal").exists());

    // A real database with a damaged page is refused too.
    let path2 = dir.path().join("damaged.db");
    let (pool, _) = nbgate::db::open(&url(&path2)).await.unwrap();
    for i in 0..2000 {
        sqlx::query("INSERT INTO slots (id, container_id, assigned_at) VALUES (?, 'c', 1)")
            .bind(format!("slot-{i}-{}", "x".repeat(100)))
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await.unwrap();
    pool.close().await;
    let mut bytes = std::fs::read(&path2).unwrap();
    let len = bytes.len();
    for b in &mut bytes[len / 2..len / 2 + 4096] {
        *b = 0xA5;
    }
    std::fs::write(&path2, &bytes).unwrap();
    let before = digest(&path2);
    let err = nbgate::db::open(&url(&path2)).await.unwrap_err().to_string();
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(digest(&path2), before);
}

#[tokio::test]
async fn online_backup_is_a_consistent_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, _) = nbgate::db::open(&url(&dir.path().join("nbgate.db"))).await.unwrap();
    sqlx::query("INSERT INTO slots (id, container_id, assigned_at) VALUES ('s', 'c', 7)")
        .execute(&pool)
        .await
        .unwrap();
    let copy = dir.path().join("backups/copy.db");
    nbgate::db::backup_to(&pool, &copy).await.unwrap();
    let (copy_pool, opened) = nbgate::db::open(&url(&copy)).await.unwrap();
    assert!(opened.applied.is_empty());
    let at: i64 = sqlx::query_scalar("SELECT assigned_at FROM slots WHERE id = 's'")
        .fetch_one(&copy_pool)
        .await
        .unwrap();
    assert_eq!(at, 7);
}
