//! The [`Store`] handle: one connection pool, opened on either database and migrated
//! to the current schema before anyone uses it. The table families add their methods
//! to `Store` in their own files (`inventory`, `runs`, `journal`); this one only
//! knows how to open and close the database.

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use crate::backend::{Backend, normalize_url, redact_url};
use crate::error::{Result, StoreError};

/// The store. Cheap to clone; clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates the database at `url`:
    /// `sqlite://PATH`, `sqlite::memory:`, or `postgres://…`. A plain path is taken as
    /// a SQLite file.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (url, backend) = normalize_url(url).map_err(|url| StoreError::BadUrl { url })?;
        let mut options = AnyPoolOptions::new();
        if backend == Backend::Sqlite {
            // SQLite has one writer; a small pool and a busy timeout keep writers
            // queueing instead of failing with SQLITE_BUSY.
            options = options.max_connections(4).after_connect(|conn, _meta| {
                Box::pin(async move {
                    for pragma in [
                        "PRAGMA foreign_keys = ON",
                        "PRAGMA busy_timeout = 10000",
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = NORMAL",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(16);
        }
        let pool = options
            .connect(&url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact_url(&url),
                source,
            })?;
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        migrator
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { backend, source })?;
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
