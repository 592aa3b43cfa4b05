//! The store's two SQLite connections and whose turn it is on them: a turn ([`Conn`]) holds
//! the connection until dropped, remembers a write transaction left open by an abandoned
//! writer (the next user rolls it back), and a [`WriteTx`] is a `BEGIN IMMEDIATE` that holds
//! the connection until it commits. SQLite-only plumbing: nothing outside `store/` sees it.

use sqlx::SqliteConnection;

#[derive(Debug)]
pub(crate) struct Primary {
    /// `None` once the store is closed.
    pub(crate) conn: Option<SqliteConnection>,
    /// A write transaction was begun and neither committed nor rolled back (its `WriteTx`
    /// was dropped by an error or a cancelled task): the next user rolls it back first.
    pub(crate) open_tx: bool,
}

/// This process's turn on the store's connection; statements run on it through `&mut *conn`.
pub(crate) struct Conn(pub(crate) tokio::sync::OwnedMutexGuard<Primary>);

impl Conn {
    /// Records that a transaction is open (a batch that begins and commits one is open until
    /// it has run to the end), so that if it is abandoned the next user rolls it back.
    pub(crate) fn set_open_tx(&mut self, open: bool) {
        self.0.open_tx = open;
    }

    /// Whether a transaction is (or may be) open on the connection.
    pub(crate) fn tx_open(&self) -> bool {
        self.0.open_tx
    }

    /// Ends a transaction left open by a failed or abandoned write. A ROLLBACK that finds none
    /// is fine (the failure ended it, or it never began); on any other error the transaction
    /// stays marked open, so the next user tries again.
    pub(crate) async fn roll_back(&mut self) -> Result<(), sqlx::Error> {
        match sqlx::query("ROLLBACK").execute(&mut **self).await {
            Ok(_) => {}
            Err(e) if no_transaction(&e) => {}
            Err(e) => return Err(e),
        }
        self.0.open_tx = false;
        Ok(())
    }
}

impl std::ops::Deref for Conn {
    type Target = SqliteConnection;
    fn deref(&self) -> &Self::Target {
        // `Store::conn` only hands out a turn while the connection is open.
        self.0
            .conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("store connection is open"))
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0
            .conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("store connection is open"))
    }
}

/// A write transaction (`BEGIN IMMEDIATE`) that holds the connection until it ends.
pub(crate) struct WriteTx(pub(crate) Conn);

impl WriteTx {
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("COMMIT").execute(&mut *self.0).await?;
        self.0.0.open_tx = false;
        Ok(())
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// SQLite's answer to a ROLLBACK when no transaction is active.
fn no_transaction(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.message().contains("no transaction is active"))
}
