//! The persister: group commit for the node's record writes. Writes queue here (in
//! order, per board, behind its actor) and are committed in batches, each batch in one
//! transaction with a savepoint per write, so one refused write does not undo the
//! others. A write is answered, and its events published, only after its batch has
//! committed: an acknowledged change is durable.
//!
//! Deal moves queued next to each other (of one workspace) form a run, taken under one
//! savepoint: checked and placed in memory, written as one update (`Scoped::move_run`),
//! each still answered with its own outcome. A run whose statements fail is undone and
//! its moves run one by one, each under its own savepoint.
//!
//! Messages posted to one inbox and queued next to each other form a run the same way
//! (`Scoped::inbound_run`).
//!
//! Background work (a mailbox's import, written a few mails at a time back to back)
//! keeps its place in the order but commits in a transaction of its own: a write queued
//! behind it waits for it once, not again inside its own transaction.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::domain::{Event, ObjectType};
use crate::store::{DealMove, Inbound, QueuedInbound, QueuedMove, Store, StoreError, WriteTx};

/// Writes waiting for a batch. When full, new writes are refused with `overloaded`
/// instead of growing memory.
pub const QUEUE: usize = 4096;
/// Most writes committed in one transaction.
pub const MAX_BATCH: usize = 256;

type Run = Box<dyn for<'w> FnOnce(&'w mut WriteTx) -> BoxFuture<'w, Result<(), StoreError>> + Send>;

/// What a job writes.
enum Work {
    /// Any write, as a closure over the transaction.
    Run(Run),
    /// A deal's move. Moves queued one after another are placed together against one
    /// read of their deals and written in one statement (see `Scoped::move_run`).
    Move(MoveJob),
    /// A message posted to an API-channel inbox. Those queued one after another into
    /// one inbox are threaded together (see `Scoped::inbound_run`).
    Inbound(InboundJob),
}

struct InboundJob {
    workspace_id: String,
    actor: String,
    m: Inbound,
    /// Where the answer goes for the waiting [`Pending`].
    out: Arc<Mutex<Option<Value>>>,
}

/// Jobs that may join one run: moves of one workspace, or messages into one inbox.
#[derive(PartialEq, Eq, Clone, Copy)]
enum RunKey<'a> {
    Moves(&'a str),
    Inbound(&'a str, &'a str),
}

struct MoveJob {
    workspace_id: String,
    actor: String,
    id: String,
    to: DealMove,
    /// Where the moved deal's JSON goes for the waiting [`Pending`].
    out: Arc<Mutex<Option<Value>>>,
}

struct Job {
    /// Background work (a mailbox's import): committed in a transaction of its own, so
    /// that the writes of people waiting for an answer never wait for its work inside
    /// their transaction.
    background: bool,
    cause: Option<String>,
    /// The board topic and token this write is fenced on (cluster mode).
    fence: Option<(String, i64)>,
    work: Option<Work>,
    reply: oneshot::Sender<Result<Vec<Event>, StoreError>>,
}

impl Job {
    /// The job's move, when it is one a run can take.
    fn batchable_move(&self) -> Option<&MoveJob> {
        match &self.work {
            Some(Work::Move(m)) if m.to.runs_in_batch() => Some(m),
            _ => None,
        }
    }

    fn inbound(&self) -> Option<&InboundJob> {
        match &self.work {
            Some(Work::Inbound(m)) => Some(m),
            _ => None,
        }
    }

    /// The run this job may join, if any.
    fn run_key(&self) -> Option<RunKey<'_>> {
        if let Some(m) = self.batchable_move() {
            return Some(RunKey::Moves(&m.workspace_id));
        }
        self.inbound().map(|m| RunKey::Inbound(&m.workspace_id, &m.m.inbox_id))
    }
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
        self.submit_run(cause, fence, f, false)
    }

    /// Queues background work, fenced like [`Persister::submit_fenced`]: it keeps its
    /// place in the order, and commits in a transaction of its own.
    pub fn submit_background<T, F>(&self, cause: Option<String>, fence: Option<(String, i64)>, f: F) -> Result<Pending<T>, Refused>
    where
        T: Send + 'static,
        F: for<'w> FnOnce(&'w mut WriteTx) -> BoxFuture<'w, Result<T, StoreError>> + Send + 'static,
    {
        self.submit_run(cause, fence, f, true)
    }

    fn submit_run<T, F>(&self, cause: Option<String>, fence: Option<(String, i64)>, f: F, background: bool) -> Result<Pending<T>, Refused>
    where
        T: Send + 'static,
        F: for<'w> FnOnce(&'w mut WriteTx) -> BoxFuture<'w, Result<T, StoreError>> + Send + 'static,
    {
        let slot = Arc::new(Mutex::new(None));
        let out = slot.clone();
        let run: Run = Box::new(move |w: &mut WriteTx| {
            let fut = f(w);
            Box::pin(async move {
                // A bug that panics in one write fails that write (rolled back like any
                // failed write) instead of stopping the one writer every write needs.
                let v = std::panic::AssertUnwindSafe(fut).catch_unwind().await.map_err(|panic| {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    StoreError::Other(anyhow::anyhow!("a write panicked and was rolled back: {why}"))
                })??;
                *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
                Ok(())
            })
        });
        self.queue(cause, fence, Work::Run(run), slot, background)
    }

    /// Queues a deal's move, fenced like [`Persister::submit_fenced`]; it answers the
    /// moved deal's JSON.
    pub fn submit_move(
        &self,
        cause: Option<String>,
        fence: Option<(String, i64)>,
        workspace_id: String,
        actor: String,
        id: String,
        to: DealMove,
    ) -> Result<Pending<Value>, Refused> {
        let slot = Arc::new(Mutex::new(None));
        let job = MoveJob {
            workspace_id,
            actor,
            id,
            to,
            out: slot.clone(),
        };
        self.queue(cause, fence, Work::Move(job), slot, false)
    }

    /// Queues a message posted to an API-channel inbox, fenced like
    /// [`Persister::submit_fenced`]; it answers the message, its conversation and
    /// whether it was a duplicate.
    pub fn submit_inbound(
        &self,
        cause: Option<String>,
        fence: Option<(String, i64)>,
        workspace_id: String,
        actor: String,
        m: Inbound,
    ) -> Result<Pending<Value>, Refused> {
        let slot = Arc::new(Mutex::new(None));
        let job = InboundJob {
            workspace_id,
            actor,
            m,
            out: slot.clone(),
        };
        self.queue(cause, fence, Work::Inbound(job), slot, false)
    }

    fn queue<T>(
        &self,
        cause: Option<String>,
        fence: Option<(String, i64)>,
        work: Work,
        slot: Arc<Mutex<Option<T>>>,
        background: bool,
    ) -> Result<Pending<T>, Refused> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job {
                background,
                cause,
                fence,
                work: Some(work),
                reply,
            })
            .map_err(|_| Refused::Overloaded)?;
        Ok(Pending { reply: rx, slot })
    }

    /// Writes waiting now.
    pub fn depth(&self) -> usize {
        QUEUE - self.tx.capacity()
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>) {
    // A background job taken from the queue while a batch was being formed: the next
    // batch, alone.
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        // Whatever queued while the last batch committed goes into this one: batches
        // grow with load and stay at one write when the node is idle. Background work
        // goes alone: the writes behind it commit in the next batch instead of waiting
        // for it twice (its work, then its commit with theirs).
        let mut batch = vec![first];
        while !batch[0].background && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) if j.background => {
                    held = Some(j);
                    break;
                }
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        commit_batch(&store, batch).await;
    }
}

async fn commit_batch(store: &Store, batch: Vec<Job>) {
    let (size, began) = (batch.len(), Instant::now());
    let mut w = match store.write_batch().await {
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
    let opened = Instant::now();
    let mut jobs = batch;
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(jobs.len());
    let mut i = 0;
    while i < jobs.len() {
        let Some(key) = jobs[i].run_key() else {
            outcomes.push(run_alone(store, &mut w, &mut jobs[i]).await);
            i += 1;
            continue;
        };
        // A run: the jobs of one kind and scope queued next to each other.
        let end = i + jobs[i..].iter().take_while(|j| j.run_key() == Some(key)).count();
        let run = match key {
            RunKey::Moves(_) => run_moves(store, &mut w, &jobs[i..end]).await,
            RunKey::Inbound(..) => run_inbound(store, &mut w, &jobs[i..end]).await,
        };
        match run {
            Ok(done) => {
                i += done.len();
                outcomes.extend(done);
                // The job the run left (it needs statements of its own) runs alone.
                if i < end {
                    outcomes.push(run_alone(store, &mut w, &mut jobs[i]).await);
                    i += 1;
                }
            }
            Err(e) => {
                // The run's statements failed and were rolled back: each job runs
                // alone, and gets its own error if it fails again.
                tracing::warn!(error = %e, "a run of writes failed; running them one by one");
                while i < end {
                    outcomes.push(run_alone(store, &mut w, &mut jobs[i]).await);
                    i += 1;
                }
            }
        }
    }
    for o in &outcomes {
        if let Err(StoreError::Unavailable(_)) = o {
            store.note_failure();
        }
    }
    let outcomes: Vec<_> = jobs.into_iter().map(|j| j.reply).zip(outcomes).collect();
    let written = Instant::now();
    let committed = w.commit().await;
    // Where a batch's time goes: waiting for and beginning the transaction, the
    // writes, and the commit with the rows kept for it.
    let us = |d: std::time::Duration| d.as_micros() as u64;
    tracing::debug!(
        size,
        begin_us = us(opened - began),
        work_us = us(written - opened),
        commit_us = us(written.elapsed()),
        "batch committed"
    );
    match committed {
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

/// A job's outcome: the range of the transaction's events it made.
type Outcome = Result<Range<usize>, StoreError>;

/// Runs one job under its own savepoint, so that its failure undoes only itself.
async fn run_alone(store: &Store, w: &mut WriteTx, job: &mut Job) -> Outcome {
    let mark = w.events_len();
    w.caused_by(job.cause.clone());
    w.fenced_by(job.fence.clone());
    let Some(work) = job.work.take() else {
        return Err(StoreError::Other(anyhow::anyhow!("a job ran twice")));
    };
    w.savepoint().await?;
    let result = match work {
        Work::Run(run) => run(w).await,
        Work::Move(m) => match store.scoped(&m.workspace_id).move_deal_in(w, &m.id, m.to, &m.actor).await {
            Ok(deal) => {
                *m.out.lock().unwrap_or_else(|p| p.into_inner()) = Some(deal.to_json(ObjectType::Deal));
                Ok(())
            }
            Err(e) => Err(e),
        },
        Work::Inbound(m) => match store.scoped(&m.workspace_id).inbound_in(w, m.m, &m.actor).await {
            Ok(answer) => {
                *m.out.lock().unwrap_or_else(|p| p.into_inner()) = Some(answer);
                Ok(())
            }
            Err(e) => Err(e),
        },
    };
    settle(w, result).await.map(|()| mark..w.events_len())
}

/// Ends the savepoint as `result` says: kept, or rolled back.
async fn settle<T>(w: &mut WriteTx, result: Result<T, StoreError>) -> Result<T, StoreError> {
    match result {
        Ok(v) => {
            w.keep();
            Ok(v)
        }
        Err(e) => {
            if let Err(broken) = w.rollback_to_savepoint().await {
                // The transaction itself is unusable: nothing in it commits.
                tracing::error!(error = %broken, "could not roll back a savepoint");
            }
            Err(e)
        }
    }
}

/// Runs a run of moves of one workspace under one savepoint. Returns the outcomes of
/// the moves it took, a prefix of `jobs`; on an error nothing of it is left.
async fn run_moves(store: &Store, w: &mut WriteTx, jobs: &[Job]) -> Result<Vec<Outcome>, StoreError> {
    let (moves, queued): (Vec<&MoveJob>, Vec<QueuedMove<'_>>) = jobs
        .iter()
        .filter_map(|j| {
            let m = j.batchable_move()?;
            let queued = QueuedMove {
                id: &m.id,
                to: &m.to,
                actor: &m.actor,
                cause: j.cause.clone(),
                fence: j.fence.clone(),
            };
            Some((m, queued))
        })
        .unzip();
    let Some(first) = moves.first() else {
        return Ok(Vec::new());
    };
    w.savepoint().await?;
    let placed = store.scoped(&first.workspace_id).move_run(w, &queued).await;
    let placed = settle(w, placed).await?;
    Ok(placed
        .into_iter()
        .zip(&moves)
        .map(|((result, events), m)| {
            let deal = result?;
            *m.out.lock().unwrap_or_else(|p| p.into_inner()) = Some(deal.to_json(ObjectType::Deal));
            Ok(events)
        })
        .collect())
}

/// Runs a run of messages into one inbox under one savepoint. Returns the outcomes of
/// the messages it took, a prefix of `jobs`; on an error nothing of it is left.
async fn run_inbound(store: &Store, w: &mut WriteTx, jobs: &[Job]) -> Result<Vec<Outcome>, StoreError> {
    let (msgs, queued): (Vec<&InboundJob>, Vec<QueuedInbound<'_>>) = jobs
        .iter()
        .filter_map(|j| {
            let m = j.inbound()?;
            let queued = QueuedInbound {
                m: &m.m,
                actor: &m.actor,
                cause: j.cause.clone(),
                fence: j.fence.clone(),
            };
            Some((m, queued))
        })
        .unzip();
    let Some(first) = msgs.first() else {
        return Ok(Vec::new());
    };
    w.savepoint().await?;
    let taken = store.scoped(&first.workspace_id).inbound_run(w, &queued).await;
    let taken = settle(w, taken).await?;
    Ok(taken
        .into_iter()
        .zip(&msgs)
        .map(|((result, events), m)| {
            *m.out.lock().unwrap_or_else(|p| p.into_inner()) = Some(result?);
            Ok(events)
        })
        .collect())
}

/// Every write of a failed batch gets the batch's failure.
fn share(e: &Arc<StoreError>) -> StoreError {
    match &**e {
        StoreError::Unavailable(_) => StoreError::Unavailable(sqlx::Error::PoolTimedOut),
        other => StoreError::Other(anyhow::anyhow!("the batch failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::fresh_store;

    /// A job that writes the counter `name` in its transaction, and answers whether
    /// the counter `before` was committed (seen from outside the writer) when it ran.
    fn counting(
        store: &Store,
        ws: &str,
        name: &'static str,
        before: &'static str,
    ) -> impl for<'w> FnOnce(&'w mut WriteTx) -> BoxFuture<'w, Result<bool, StoreError>> + Send + 'static {
        let (store, ws) = (store.clone(), ws.to_string());
        job(move |w: &mut WriteTx| -> BoxFuture<'_, Result<bool, StoreError>> {
            Box::pin(async move {
                let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM counters WHERE name = $1")
                    .bind(before)
                    .fetch_one(store.pool())
                    .await?;
                sqlx::query("INSERT INTO counters (workspace_id, name, value) VALUES ($1, $2, 1)")
                    .bind(ws)
                    .bind(name)
                    .execute(&mut *w.tx)
                    .await?;
                Ok(seen == 1)
            })
        })
    }

    #[actix_web::test]
    async fn background_work_keeps_its_place_and_commits_in_a_transaction_of_its_own() {
        let (store, dir, ws) = fresh_store("background").await;
        let persister = Persister::start(store.clone());
        // Held open until all the others are queued, so that they could share a batch.
        let release = Arc::new(tokio::sync::Notify::new());
        let hold = release.clone();
        let (started_tx, started) = oneshot::channel();
        let first = persister
            .submit(
                None,
                job(move |_: &mut WriteTx| -> BoxFuture<'_, Result<bool, StoreError>> {
                    Box::pin(async move {
                        let _ = started_tx.send(());
                        hold.notified().await;
                        Ok(true)
                    })
                }),
            )
            .unwrap_or_else(|_| panic!("accepted"));
        started.await.unwrap();
        let a = persister
            .submit(None, counting(&store, &ws, "a", "none"))
            .unwrap_or_else(|_| panic!("accepted"));
        let a2 = persister
            .submit(None, counting(&store, &ws, "a2", "a"))
            .unwrap_or_else(|_| panic!("accepted"));
        let b = persister
            .submit_background(None, None, counting(&store, &ws, "b", "a2"))
            .unwrap_or_else(|_| panic!("accepted"));
        let c = persister
            .submit(None, counting(&store, &ws, "c", "b"))
            .unwrap_or_else(|_| panic!("accepted"));
        let d = persister
            .submit(None, counting(&store, &ws, "d", "c"))
            .unwrap_or_else(|_| panic!("accepted"));
        release.notify_one();
        assert!(first.outcome().await.unwrap().0);
        let seen = [a, a2, b, c, d];
        let mut committed_before = Vec::new();
        for p in seen {
            committed_before.push(p.outcome().await.unwrap().0);
        }
        // a and a2 share a batch, b has its own, and c and d share the next.
        assert_eq!(committed_before, [false, false, true, true, false]);
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
