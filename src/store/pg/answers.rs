//! Upload answers committed in the background. [`JobStore::queue_uploaded`] must accept an
//! answer at once and have it durable soon; here the write starts at once on its own task, and
//! when the database does not answer (PostgreSQL restarting, the network to the NAS down) it is
//! kept in memory and tried again until it commits or is refused for good: an answer the
//! account paid for is never dropped because the queue was briefly away. Closing an epoch,
//! closing the store and the next upload's intent wait for the answers still outstanding
//! ([`Answers::drain`]), so an epoch's count never misses an answer that was received, and a
//! newer intent never reaches the books before an older answer.
//!
//! [`JobStore::queue_uploaded`]: crate::store::JobStore::queue_uploaded

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::PgStore;
use crate::store::{Committing, JobId, StoreError, Uploaded};

/// The longest wait between two tries of an answer's commit.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The answers being committed.
#[derive(Debug, Default)]
pub(super) struct Answers {
    outstanding: AtomicUsize,
    idle: Notify,
}

impl Answers {
    /// Returns once no answer is being committed.
    pub(crate) async fn drain(&self) {
        loop {
            let idle = self.idle.notified();
            if self.outstanding.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    fn done(&self) {
        if self.outstanding.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// An upload's answer, owned by the task that commits it.
#[derive(Debug, Clone)]
struct Answer {
    mdf: String,
    img_url: String,
    first_poll_at: Option<i64>,
    sent_sha256: Option<String>,
}

impl Answer {
    fn view(&self) -> Uploaded<'_> {
        Uploaded {
            mdf: &self.mdf,
            img_url: &self.img_url,
            first_poll_at: self.first_poll_at,
            sent_sha256: self.sent_sha256.as_deref(),
        }
    }
}

impl PgStore {
    /// See [`JobStore::queue_uploaded`](crate::store::JobStore::queue_uploaded): the commit
    /// runs on its own task from now on, whether or not the returned future is awaited.
    pub fn queue_uploaded<'a>(
        &'a self,
        id: JobId,
        answer: &Uploaded<'_>,
    ) -> Result<Committing<'a>, StoreError> {
        let answer = Answer {
            mdf: answer.mdf.to_string(),
            img_url: answer.img_url.to_string(),
            first_poll_at: answer.first_poll_at,
            sent_sha256: answer.sent_sha256.map(str::to_string),
        };
        self.answers.outstanding.fetch_add(1, Ordering::SeqCst);
        let store = self.clone();
        let task = tokio::spawn(async move {
            let result = store.commit_answer(id, &answer).await;
            store.answers.done();
            result
        });
        Ok(Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                Err(StoreError::Invalid {
                    detail: format!("job {id}: the task committing its upload answer ended: {e}"),
                })
            })
        }))
    }

    async fn commit_answer(&self, id: JobId, answer: &Answer) -> Result<(), StoreError> {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.uploaded(id, &answer.view()).await {
                Err(e) if e.is_transient() => {
                    tracing::warn!(
                        job = %id,
                        mdf = %answer.mdf,
                        "the shared queue did not take job {id}'s upload answer ({e}); kept in \
                         memory, trying again in {wait:?}"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
                other => return other,
            }
        }
    }
}
