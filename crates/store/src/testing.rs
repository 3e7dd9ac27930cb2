//! Throwaway stores for tests, on both backends — one place for every crate's tests
//! to get a fresh SQLite file or a PostgreSQL schema of their own, so tests run in
//! parallel without seeing each other.

use crate::error::StoreError;
use crate::pool::Store;

/// The PostgreSQL database tests use: `FERRY_TEST_POSTGRES`, by default the one every
/// machine of this project runs (`postgres://postgres@127.0.0.1:5432/test`).
pub fn postgres_url() -> String {
    std::env::var("FERRY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A store for one test, and what keeps it alive.
#[derive(Debug)]
pub struct TestStore {
    pub store: Store,
    /// What `store` was opened with, to open the same database again.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// A store on a new SQLite file in a temporary directory.
pub async fn sqlite() -> Result<TestStore, StoreError> {
    let dir = tempfile::tempdir().map_err(|e| StoreError::Refused(format!("no temp dir: {e}")))?;
    let url = dir
        .path()
        .join("ferry.db")
        .to_str()
        .ok_or_else(|| StoreError::Refused("the temp dir path is not UTF-8".into()))?
        .to_string();
    let store = Store::connect(&url).await?;
    Ok(TestStore {
        store,
        url,
        _dir: Some(dir),
    })
}

/// A store in a new schema (`ferry_t_<unix seconds>_<uuid>`) of the test PostgreSQL
/// database. `.ci/test` drops such schemas once they are three hours old — not
/// younger ones, which may be another test run's on the same database, under way.
pub async fn postgres() -> Result<TestStore, StoreError> {
    use sqlx::Connection;
    let base = postgres_url();
    let made = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let schema = format!("ferry_t_{made}_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&base).await.map_err(|source| {
        StoreError::Refused(format!(
            "PostgreSQL at {base} is not reachable ({source}); start it (`bash .ci/test` does) \
             or point FERRY_TEST_POSTGRES at one"
        ))
    })?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
    let store = Store::connect(&url).await?;
    Ok(TestStore {
        store,
        url,
        _dir: None,
    })
}
