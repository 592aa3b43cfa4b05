//! Opening a queue's file and applying the schema (top-level `migrations/sqlite/`), safely when two
//! processes open a new queue at once, and telling a damaged or foreign file from a failure.

use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// How many times a migration that lost a race with another process is tried again.
const MIGRATE_RACES: u32 = 20;

/// The pool of a queue's file. A new file's first connections switch it to WAL, which needs
/// the file to themselves: a second process doing the same at that instant gets "database is
/// locked" at once (SQLite does not wait where waiting could deadlock), so that is tried again.
pub(super) async fn open_pool(
    options: &SqliteConnectOptions,
    max_connections: u32,
) -> Result<SqlitePool, sqlx::Error> {
    let mut tries = 0;
    loop {
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            // A local file cannot drop a connection: the default liveness ping before every
            // acquire would only add a round trip to SQLite's worker thread per statement.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await;
        match pool {
            Err(e) if tries < MIGRATE_RACES && lost_a_race(&e) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(tries))).await;
            }
            other => return other,
        }
    }
}

/// Applies pending migrations. Two processes opening a new queue at once (a daemon starting
/// while `hili status` runs) both see the same migrations pending: sqlx takes no lock on
/// SQLite, each migration is one transaction, so the slower one fails on what the faster one
/// just created ("table jobs already exists"). It then tries again, and finds that migration
/// applied; each failure means the other process got one further.
pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), sqlx::migrate::MigrateError> {
    let migrator = sqlx::migrate!("./migrations/sqlite");
    let mut tries = 0;
    loop {
        match migrator.run(pool).await {
            Err(
                sqlx::migrate::MigrateError::Execute(e)
                | sqlx::migrate::MigrateError::ExecuteMigration(e, _),
            ) if tries < MIGRATE_RACES && lost_a_race(&e) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(tries))).await;
            }
            other => return other,
        }
    }
}

/// A migration's statement failed because another process had just made the same change.
fn lost_a_race(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|db| {
        let m = db.message();
        // A deferred transaction that read and then writes gets SQLITE_BUSY at once in WAL
        // mode when another process committed in between (no busy wait helps): the same race.
        m.contains("database is locked")
            || m.contains("already exists")
            || m.contains("duplicate column name")
            || m.contains("UNIQUE constraint failed: _sqlx_migrations")
    })
}

/// SQLite's answer for a file that is not a database or is damaged (SQLITE_NOTADB 26,
/// SQLITE_CORRUPT 11): a clear "damaged" error, never a generic open failure.
pub(super) fn not_a_database(e: &sqlx::Error) -> Option<String> {
    let db = e.as_database_error()?;
    let code = db.code()?;
    let primary = code.parse::<i32>().ok()? & 0xff;
    matches!(primary, 11 | 26).then(|| db.message().to_string())
}
