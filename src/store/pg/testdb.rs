//! Throwaway databases for the tests of the shared queue: each test gets its own database on
//! the server named by `HILI_TEST_DATABASE_URL` (`.ci/pg-start` starts one). Without that
//! variable the PostgreSQL tests are skipped, with one line saying so.

use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

/// The variable naming the test server.
pub const VAR: &str = "HILI_TEST_DATABASE_URL";

/// A new empty database on the test server, as a URL; `None` (after printing one skip line for
/// this test binary) when no test server is configured.
pub async fn fresh() -> Option<String> {
    static SKIPPED: Once = Once::new();
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let Ok(base) = std::env::var(VAR) else {
        SKIPPED.call_once(|| {
            println!(
                "skipped: the PostgreSQL backend's tests ({VAR} is not set; `eval \"$(bash .ci/pg-start)\"` starts a server)"
            );
        });
        return None;
    };
    let name = format!(
        "hili_t{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("{VAR}={base}: cannot connect: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
    let _ = conn.close().await;
    let mut url = url::Url::parse(&base).unwrap_or_else(|e| panic!("{VAR}={base}: {e}"));
    url.set_path(&name);
    Some(url.to_string())
}
