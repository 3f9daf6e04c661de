//! Fresh databases for tests, on either backend: SQLite in a temporary folder always;
//! PostgreSQL when `WXGATE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! is reachable. With `WXGATE_REQUIRE_POSTGRES=1` (CI) an unreachable PostgreSQL is an error
//! instead of a visible skip.

use crate::{Backend, Store};

/// A database made for one test; [`TestDatabase::cleanup`] drops it.
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    dir: Option<std::path::PathBuf>,
    admin: Option<(String, String)>,
}

impl TestDatabase {
    /// A migrated store on this database.
    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url).await.expect("test database");
        store.migrate().await.expect("migrations");
        store
    }

    pub async fn cleanup(self) {
        if let Some((admin_url, name)) = self.admin {
            if let Ok(admin) = Store::connect(&admin_url).await {
                let _ = admin
                    .execute_raw(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
                admin.close().await;
            }
        }
        if let Some(dir) = self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed)
}

pub fn sqlite() -> TestDatabase {
    let dir = std::env::temp_dir().join(format!("wxgate-test-{:x}", unique()));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    TestDatabase {
        url: format!("sqlite://{}", dir.join("wxgate.db").display()),
        backend: Backend::Sqlite,
        dir: Some(dir),
        admin: None,
    }
}

/// A fresh PostgreSQL database, or `None` (with a message) when none is reachable.
pub async fn postgres() -> Option<TestDatabase> {
    let admin_url = std::env::var("WXGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let required = std::env::var("WXGATE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let admin = match Store::connect(&admin_url).await {
        Ok(a) => a,
        Err(e) if !required => {
            eprintln!(
                "SKIPPED the PostgreSQL half of this test: {admin_url} is not reachable ({e})"
            );
            return None;
        }
        Err(e) => panic!("PostgreSQL is required but {admin_url} is not reachable: {e}"),
    };
    let name = format!("wxgate_test_{:x}", unique());
    admin
        .execute_raw(&format!("CREATE DATABASE {name}"))
        .await
        .expect("CREATE DATABASE");
    admin.close().await;
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("a database URL with a path");
    Some(TestDatabase {
        url: format!("{base}/{name}"),
        backend: Backend::Postgres,
        dir: None,
        admin: Some((admin_url, name)),
    })
}

/// SQLite, and PostgreSQL when available.
pub async fn all() -> Vec<TestDatabase> {
    let mut dbs = vec![sqlite()];
    dbs.extend(postgres().await);
    dbs
}
