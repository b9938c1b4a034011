//! The persister: group commit for the node's record writes. Writes queue here (in
//! order, per board, behind its actor) and are committed in batches, each batch in one
//! transaction with a savepoint per write, so one refused write does not undo the
//! others. A write is answered, and its events published, only after its batch has
//! committed: an acknowledged change is durable.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use crate::domain::Event;
use crate::store::{Store, StoreError, WriteTx};

/// Writes waiting for a batch. When full, new writes are refused with `overloaded`
/// instead of growing memory.
pub const QUEUE: usize = 4096;
/// Most writes committed in one transaction.
pub const MAX_BATCH: usize = 256;

type Run = Box<dyn for<'w> FnOnce(&'w mut WriteTx) -> BoxFuture<'w, Result<(), StoreError>> + Send>;

struct Job {
    cause: Option<String>,
    /// The board topic and token this write is fenced on (cluster mode).
    fence: Option<(String, i64)>,
    run: Run,
    reply: oneshot::Sender<Result<Vec<Event>, StoreError>>,
}

/// Why a write was not accepted into the queue.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the persister is overloaded")]
    Overloaded,
    /// The board's actor here does not own the board (cluster mode).
    #[error("another node owns this board")]
    NotOwner,
}

/// A write that has been queued; await it for its outcome.
pub struct Pending<T> {
    reply: oneshot::Receiver<Result<Vec<Event>, StoreError>>,
    slot: Arc<Mutex<Option<T>>>,
}

impl<T> Pending<T> {
    pub async fn outcome(self) -> Result<(T, Vec<Event>), StoreError> {
        let events = self
            .reply
            .await
            .map_err(|_| StoreError::Other(anyhow::anyhow!("the persister stopped")))??;
        let value = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        value
            .map(|v| (v, events))
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("a committed write left no result")))
    }
}

/// Makes the closure's higher-ranked signature explicit, which closure inference
/// cannot find by itself.
pub fn job<T, F>(f: F) -> F
where
    F: for<'w> FnOnce(&'w mut WriteTx) -> BoxFuture<'w, Result<T, StoreError>> + Send + 'static,
{
    f
}

#[derive(Clone)]
pub struct Persister {
    tx: mpsc::Sender<Job>,
}

impl Persister {
    /// Starts the batching loop on the current runtime.
    pub fn start(store: Store) -> Persister {
        let (tx, rx) = mpsc::channel(QUEUE);
        actix::spawn(run(store, rx));
        Persister { tx }
    }

    /// Queues a write. Order is kept: writes queued one after another commit in that
    /// order, and each sees the effects of those before it.
    pub fn submit<T, F>(&self, cause: Option<String>, f: F) -> Result<Pending<T>, Refused>
    where
        T: Send + 'static,
        F: for<'w> FnOnce(&'w mut WriteTx) -> BoxFuture<'w, Result<T, StoreError>> + Send + 'static,
    {
        self.submit_fenced(cause, None, f)
    }

    /// Queues a write whose events on the fence's topic are only written while the
    /// fence's token is the topic's current one; otherwise it fails with `Fenced`.
    pub fn submit_fenced<T, F>(&self, cause: Option<String>, fence: Option<(String, i64)>, f: F) -> Result<Pending<T>, Refused>
    where
        T: Send + 'static,
        F: for<'w> FnOnce(&'w mut WriteTx) -> BoxFuture<'w, Result<T, StoreError>> + Send + 'static,
    {
        let slot = Arc::new(Mutex::new(None));
        let out = slot.clone();
        let run: Run = Box::new(move |w: &mut WriteTx| {
            let fut = f(w);
            Box::pin(async move {
                let v = fut.await?;
                *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
                Ok(())
            })
        });
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job { cause, fence, run, reply })
            .map_err(|_| Refused::Overloaded)?;
        Ok(Pending { reply: rx, slot })
    }

    /// Writes waiting now.
    pub fn depth(&self) -> usize {
        QUEUE - self.tx.capacity()
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        // Whatever queued while the last batch committed goes into this one: batches
        // grow with load and stay at one write when the node is idle.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let size = batch.len();
        commit_batch(&store, batch).await;
        tracing::debug!(size, elapsed_us = started.elapsed().as_micros() as u64, "batch committed");
    }
}

async fn commit_batch(store: &Store, batch: Vec<Job>) {
    let mut w = match store.write().await {
        Ok(w) => w,
        Err(e) => {
            store.note_failure();
            let shared = Arc::new(e);
            for j in batch {
                let _ = j.reply.send(Err(share(&shared)));
            }
            return;
        }
    };
    let mut outcomes: Vec<(oneshot::Sender<_>, Result<std::ops::Range<usize>, StoreError>)> = Vec::with_capacity(batch.len());
    for j in batch {
        let mark = w.events_len();
        w.caused_by(j.cause);
        w.fenced_by(j.fence);
        let result = match w.savepoint().await {
            Ok(()) => match (j.run)(&mut w).await {
                Ok(()) => {
                    w.keep();
                    Ok(mark..w.events_len())
                }
                Err(e) => {
                    match w.rollback_to_savepoint().await {
                        Ok(()) => Err(e),
                        Err(broken) => {
                            // The transaction itself is unusable: nothing in it commits.
                            tracing::error!(error = %broken, "could not roll back a savepoint");
                            Err(e)
                        }
                    }
                }
            },
            Err(e) => Err(e),
        };
        if let Err(StoreError::Unavailable(_)) = &result {
            store.note_failure();
        }
        outcomes.push((j.reply, result));
    }
    match w.commit().await {
        Ok(events) => {
            for (reply, r) in outcomes {
                let _ = reply.send(r.map(|range| events[range].to_vec()));
            }
        }
        Err(e) => {
            store.note_failure();
            tracing::warn!(error = %e, "batch commit failed");
            let shared = Arc::new(e);
            for (reply, _) in outcomes {
                let _ = reply.send(Err(share(&shared)));
            }
        }
    }
}

/// Every write of a failed batch gets the batch's failure.
fn share(e: &Arc<StoreError>) -> StoreError {
    match &**e {
        StoreError::Unavailable(_) => StoreError::Unavailable(sqlx::Error::PoolTimedOut),
        other => StoreError::Other(anyhow::anyhow!("the batch failed: {other}")),
    }
}
