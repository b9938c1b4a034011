//! E-mail sync: one task per e-mail inbox reads its folder over IMAP and writes what
//! arrives through the inbox's actor. In a cluster a node runs an inbox's task only
//! while it holds that inbox's sync lease in Redis, so one node reads a folder at a
//! time; should two ever overlap (a paused node), the store's Message-ID dedupe keeps
//! every mail once.
//!
//! A task first imports the configured window of past mail, then waits in IDLE (or
//! polls, for a server without it) and takes new mail as it comes. The last UID taken
//! is written with the mail itself, so a restart resumes where it stopped; a new
//! UIDVALIDITY starts the folder over, recognising what was taken by Message-ID. A lost
//! connection is retried with exponential backoff and jitter; a refused login marks the
//! inbox `failing`, says why, and is retried slowly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::app::mail as app_mail;
use crate::app::{AppState, Code};
use crate::mail::imap::{self, Woken};
use crate::mail::{MailError, Stage};
use crate::store::{MailAccount, MailBatch};

/// How often the set of e-mail inboxes (and this node's leases) is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(2);
/// Mails fetched and written together.
const CHUNK: usize = 200;
/// Mails written in one write (one transaction on the writer).
const WRITE_BATCH: usize = 25;
/// Bytes of mail asked for in one FETCH.
const FETCH_BYTES: u64 = 16 * 1024 * 1024;
/// Groups of a chunk prepared (parsed, attachments kept) ahead of its writes.
const PREPARED_AHEAD: usize = 4;
/// Chunks written at once across all inboxes: a large import takes its turn with the
/// others instead of filling the writer's queue.
const CONCURRENT_CHUNKS: usize = 2;
/// How often an import says how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// The longest IDLE before it is renewed (servers drop it after 30 minutes).
const IDLE_FOR: Duration = Duration::from_secs(25 * 60);
/// Reconnection backoff after a lost connection: from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_LAST: Duration = Duration::from_secs(300);

struct Running {
    updated_at: i64,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// When this node's lease was last renewed (cluster only).
    renewed: Instant,
}

fn lease_key(inbox_id: &str) -> String {
    format!("mailsync:{inbox_id}")
}

/// Runs until `stop` turns true.
pub async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let chunks = Arc::new(Semaphore::new(CONCURRENT_CHUNKS));
    let mut running: HashMap<String, Running> = HashMap::new();
    let leases = state.bus.as_ref().map(|b| b.leases());
    let look_every = match &leases {
        Some(l) => LOOK_EVERY.min(l.ttl / 3),
        None => LOOK_EVERY,
    };
    loop {
        if *stop.borrow() {
            break;
        }
        match state.store.mail_accounts().await {
            Ok(accounts) => {
                let wanted: HashMap<&str, &MailAccount> = accounts.iter().map(|a| (a.inbox_id.as_str(), a)).collect();
                // Tasks whose inbox went, whose settings changed, or that ended.
                let mut ended = Vec::new();
                for (inbox, r) in &running {
                    let changed = wanted.get(inbox.as_str()).is_none_or(|a| a.updated_at != r.updated_at);
                    if changed || r.task.is_finished() {
                        ended.push(inbox.clone());
                    }
                }
                for inbox in ended {
                    if let Some(r) = running.remove(&inbox) {
                        let _ = r.stop.send(true);
                        finish(r.task).await;
                        if let Some(l) = &leases {
                            let _ = l.release(&lease_key(&inbox), 0).await;
                        }
                    }
                }
                // Leases of the tasks still running are renewed; one lost stops its task.
                if let Some(l) = &leases {
                    let mut lost = Vec::new();
                    for (inbox, r) in running.iter_mut() {
                        match l.renew(&lease_key(inbox), 0).await {
                            Ok(true) => r.renewed = Instant::now(),
                            Ok(false) => lost.push(inbox.clone()),
                            // Redis unreachable: keep reading until the lease would have
                            // run out, then stop, since another node may take over.
                            Err(_) if r.renewed.elapsed() > l.ttl => lost.push(inbox.clone()),
                            Err(_) => {}
                        }
                    }
                    for inbox in lost {
                        tracing::info!(inbox = %inbox, "another node holds this inbox's mail sync now; stopping here");
                        if let Some(r) = running.remove(&inbox) {
                            let _ = r.stop.send(true);
                            finish(r.task).await;
                        }
                    }
                }
                for account in accounts {
                    if running.contains_key(&account.inbox_id) {
                        continue;
                    }
                    if let Some(l) = &leases {
                        match l.acquire(&lease_key(&account.inbox_id)).await {
                            Ok(h) if l.is_mine(&h) => {}
                            Ok(_) => continue,
                            Err(e) => {
                                tracing::debug!(error = %e, "cannot take an inbox's sync lease; trying again");
                                continue;
                            }
                        }
                    }
                    let (stop_tx, stop_rx) = watch::channel(false);
                    let inbox = account.inbox_id.clone();
                    let updated_at = account.updated_at;
                    // The write path's futures stay on this thread (its forwarding client is not Send).
                    let task = actix_web::rt::spawn(sync(state.clone(), account, chunks.clone(), stop_rx));
                    running.insert(
                        inbox,
                        Running {
                            updated_at,
                            stop: stop_tx,
                            task,
                            renewed: Instant::now(),
                        },
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the e-mail inboxes; trying again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(look_every) => {}
            _ = state.mail_changed.notified() => {}
            _ = stop.changed() => {}
        }
    }
    for (inbox, r) in running {
        let _ = r.stop.send(true);
        finish(r.task).await;
        if let Some(l) = &leases {
            let _ = l.release(&lease_key(&inbox), 0).await;
        }
    }
}

/// How long a task told to stop may take (it stops between commands) before it is
/// aborted: the loop that waits for it also renews the other inboxes' leases.
const STOP_WITHIN: Duration = Duration::from_secs(2);

/// Waits for a task told to stop, aborting it after [`STOP_WITHIN`]. Aborted mid-way it
/// loses nothing: what it handed the writer is written or not as a whole, and the next
/// task resumes from the last UID written.
async fn finish(mut task: JoinHandle<()>) {
    if tokio::time::timeout(STOP_WITHIN, &mut task).await.is_err() {
        task.abort();
        let _ = task.await;
    }
}

/// A random share of `d`, up to a quarter, added so that inboxes failing together do
/// not all retry at the same instant.
fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = getrandom::getrandom(&mut b).map(|_| u16::from_le_bytes(b)).unwrap_or(0);
    d + d.mul_f64(f64::from(r) / f64::from(u16::MAX) / 4.0)
}

/// Sleeps, or returns true at once when `stop` fires.
async fn stopped_during(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// One inbox's sync, until told to stop.
async fn sync(state: Arc<AppState>, account: MailAccount, chunks: Arc<Semaphore>, mut stop: watch::Receiver<bool>) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let started = Instant::now();
        let failure = match session(&state, &account, &chunks, &mut stop).await {
            Ok(()) => return,
            Err(e) => e,
        };
        // A session that ran a while was healthy: its loss starts the backoff over.
        if started.elapsed() > BACKOFF_LAST {
            backoff = BACKOFF_FIRST;
        }
        let (status, wait, detail) = if failure.permanent {
            let wait = Duration::from_secs(state.settings.mail_failing_retry_secs.max(1));
            (
                "failing",
                wait,
                format!(
                    "{} (trying again every {} s; saving the settings tries at once)",
                    failure.message,
                    wait.as_secs()
                ),
            )
        } else {
            let wait = jittered(backoff);
            backoff = (backoff * 2).min(BACKOFF_LAST);
            (
                "connecting",
                wait,
                // The same words on every retry: each change is an event and a new
                // version of the inbox, which would otherwise tick with the backoff.
                format!("{}; reconnecting with growing waits", failure.message),
            )
        };
        tracing::warn!(inbox = %account.inbox_id, stage = failure.stage.name(), error = %failure.message, "e-mail sync failed");
        note(&state, &account, status, &detail).await;
        if stopped_during(&mut stop, wait).await {
            return;
        }
    }
}

/// Says how the inbox's channel is doing; failing to say it is only logged.
async fn note(state: &AppState, account: &MailAccount, status: &str, detail: &str) {
    if let Err(e) = app_mail::set_channel(state, &account.workspace_id, &account.inbox_id, status, detail).await {
        tracing::warn!(inbox = %account.inbox_id, code = e.code.name(), error = %e, "cannot record an e-mail inbox's status");
    }
}

fn store_failed(e: impl std::fmt::Display) -> MailError {
    MailError::new(Stage::Protocol, format!("the store failed: {e}"))
}

/// One connection's life: log in, select, catch up, then wait for new mail; returns
/// Ok when told to stop, the failure otherwise.
async fn session(
    state: &Arc<AppState>,
    account: &MailAccount,
    chunks: &Semaphore,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), MailError> {
    let endpoint = app_mail::imap_endpoint(state, account);
    let password = app_mail::open(state, &account.imap_password)?;
    let mut session = imap::login(&endpoint, &account.imap_username, &password).await?;
    let folder = imap::select(&mut session, &account.imap_folder).await?;
    let saved = state
        .store
        .mail_account(&account.inbox_id)
        .await
        .map_err(store_failed)?
        .ok_or_else(|| MailError::new(Stage::Protocol, "the inbox's settings were removed"))?;
    if saved.updated_at != account.updated_at {
        // The settings changed while this task connected: the task for the new ones
        // owns the sync state now.
        return Ok(());
    }
    let validity = i64::from(folder.uid_validity);
    let mut last_uid = saved.last_uid;
    let first_import = saved.uid_validity.is_none() || last_uid == 0;
    if saved.uid_validity != Some(validity) {
        if saved.uid_validity.is_some() {
            tracing::info!(inbox = %account.inbox_id, old = ?saved.uid_validity, new = validity, "the folder's UIDVALIDITY changed; reading it again");
        }
        state
            .store
            .restart_mail_sync(&account.inbox_id, validity)
            .await
            .map_err(store_failed)?;
        last_uid = 0;
    }
    let idle = imap::has_idle(&mut session).await?;
    let mut window = first_import || last_uid == 0;
    loop {
        // The newest UID before a window's search: mail arriving while the window is
        // imported comes above it, and is taken after, not jumped over.
        let top = if window {
            imap::newest_uid(&mut session).await?.map(i64::from)
        } else {
            None
        };
        let uids = if window {
            let since = chrono::Utc::now() - chrono::Duration::days(account.import_days);
            imap::uids_since(&mut session, &since.format("%-d-%b-%Y").to_string()).await?
        } else {
            imap::uids_after(&mut session, u32::try_from(last_uid).unwrap_or(u32::MAX)).await?
        };
        let uids: Vec<u32> = uids.into_iter().filter(|u| i64::from(*u) > last_uid).collect();
        let total = uids.len();
        let mut said = None::<Instant>;
        let parts: Vec<&[u32]> = uids.chunks(CHUNK).collect();
        let mut fetched = None;
        for (n, part) in parts.iter().enumerate() {
            // Progress at most every PROGRESS_EVERY: each note is an event and a new
            // version of the inbox.
            if total > CHUNK && said.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
                note(state, account, "importing", &format!("importing {} of {}", n * CHUNK, total)).await;
                said = Some(Instant::now());
            }
            let permit = chunks
                .acquire()
                .await
                .map_err(|_| MailError::new(Stage::Protocol, "shutting down"))?;
            let this = match fetched.take() {
                Some(f) => f,
                None => fetch_chunk(&mut session, account, part).await?,
            };
            // The next chunk is fetched while this one is taken: the server and the
            // network work while the store does.
            let next = parts.get(n + 1);
            let fetching = async {
                match next {
                    Some(p) => fetch_chunk(&mut session, account, p).await.map(Some),
                    None => Ok(None),
                }
            };
            let mut stop_taking = stop.clone();
            let next = {
                let taking = take_chunk(state, account, validity, part, this, &mut last_uid, &mut stop_taking);
                tokio::pin!(taking, fetching);
                let mut next = None;
                let taken = loop {
                    tokio::select! {
                        t = &mut taking => break t,
                        f = &mut fetching, if next.is_none() => next = Some(f),
                    }
                };
                // Stopping, or failing, the next chunk is not waited for.
                taken?;
                if *stop.borrow() {
                    return Ok(());
                }
                match next {
                    Some(f) => f,
                    None => fetching.await,
                }
            };
            fetched = next?;
            drop(permit);
        }
        if window {
            // Mail older than the window stays behind: the sync goes on from the
            // newest UID the folder had when the window was read.
            if let Some(top) = top.filter(|t| *t > last_uid) {
                state
                    .store
                    .advance_mail_sync(&account.inbox_id, validity, top)
                    .await
                    .map_err(store_failed)?;
                last_uid = top;
            }
            window = false;
        }
        let detail = if idle {
            "up to date; waiting for new mail (IDLE)".to_string()
        } else {
            format!("up to date; looking for new mail every {} s", account.poll_secs)
        };
        note(state, account, "syncing", &detail).await;
        if idle {
            let stop_signal = {
                let mut s = stop.clone();
                async move {
                    let _ = s.wait_for(|v| *v).await;
                }
            };
            let (back, woken) = imap::idle(session, IDLE_FOR, stop_signal).await?;
            session = back;
            if matches!(woken, Woken::Stopped) || *stop.borrow() {
                let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
                return Ok(());
            }
        } else {
            if stopped_during(stop, Duration::from_secs(u64::try_from(account.poll_secs).unwrap_or(60))).await {
                let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
                return Ok(());
            }
            tokio::time::timeout(imap::COMMAND_TIMEOUT, session.noop())
                .await
                .map_err(|_| MailError::new(Stage::Protocol, "IMAP NOOP timed out"))?
                .map_err(|e| MailError::new(Stage::Protocol, format!("IMAP NOOP failed: {e}")))?;
        }
    }
}

/// A chunk's mails from the server, by UID, asked for `FETCH_BYTES` at a time (by
/// their sizes): a chunk of large mails is never held twice over in one answer.
async fn fetch_chunk(session: &mut imap::Session, account: &MailAccount, part: &[u32]) -> Result<Vec<(u32, Vec<u8>)>, MailError> {
    let sizes = imap::sizes(session, part).await?;
    let mut fetched = Vec::with_capacity(part.len());
    for uids in by_size(&sizes, FETCH_BYTES) {
        fetched.extend(imap::fetch(session, &uids).await?);
    }
    let missing: Vec<u32> = part.iter().copied().filter(|u| !fetched.iter().any(|(f, _)| f == u)).collect();
    for uid in missing {
        // A server may leave a mail out of a large answer; asked alone it usually
        // gives it. One it never gives is gone or damaged.
        let again = imap::fetch(session, &[uid]).await?;
        if again.is_empty() {
            tracing::warn!(inbox = %account.inbox_id, uid, "the server gives no content for a mail (expunged meanwhile, or damaged); left out");
        }
        fetched.extend(again);
    }
    Ok(fetched)
}

/// The UIDs in runs of at most `max` bytes together (a larger mail alone), in order.
fn by_size(sizes: &[(u32, u32)], max: u64) -> Vec<Vec<u32>> {
    let mut runs: Vec<Vec<u32>> = Vec::new();
    let mut bytes = 0u64;
    for &(uid, size) in sizes {
        let size = u64::from(size);
        match runs.last_mut() {
            Some(run) if bytes + size <= max => run.push(uid),
            _ => {
                runs.push(vec![uid]);
                bytes = 0;
            }
        }
        bytes += size;
    }
    runs
}

/// Takes a fetched chunk, a few mails to a write: each write holds the one writer,
/// and other inboxes, boards and REST wait behind it. The next groups are parsed (and
/// their attachments kept) while a write is under way; writes go one at a time, in
/// UID order, and `last_uid` follows them.
async fn take_chunk(
    state: &AppState,
    account: &MailAccount,
    validity: i64,
    part: &[u32],
    mut fetched: Vec<(u32, Vec<u8>)>,
    last_uid: &mut i64,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), MailError> {
    fetched.sort_by_key(|(uid, _)| *uid);
    let groups: Vec<&[u32]> = part.chunks(WRITE_BATCH).collect();
    let mut fetched = fetched.into_iter().peekable();
    let mut group_of = |group: &[u32]| {
        let top = group.iter().copied().max().unwrap_or(0);
        let mut raw = Vec::with_capacity(group.len());
        while let Some(r) = fetched.next_if(|(uid, _)| *uid <= top) {
            // Only what was asked for, should the server have said more.
            if group.contains(&r.0) {
                raw.push(r);
            }
        }
        raw
    };
    let prepare = |raw: Vec<(u32, Vec<u8>)>| async move {
        let prepared = app_mail::prepare(state, &account.workspace_id, raw)
            .await
            .map_err(|e| MailError::new(Stage::Protocol, format!("cannot keep an attachment: {e}")))?;
        let mut mails = Vec::with_capacity(prepared.len());
        for (uid, mail) in prepared {
            match mail {
                Some(m) => mails.push(m),
                None => tracing::warn!(inbox = %account.inbox_id, uid, "a message in the folder is not a mail (no headers); left out"),
            }
        }
        Ok::<_, MailError>(mails)
    };
    let raws: Vec<Vec<(u32, Vec<u8>)>> = groups.iter().map(|g| group_of(g)).collect();
    // Prepared a few groups ahead, in order: parsing is work for the CPU, keeping
    // attachments waits for the disk, and both go on while the store writes.
    let mut prepared = futures_util::stream::iter(raws.into_iter().map(prepare)).buffered(PREPARED_AHEAD);
    for group in groups {
        let Some(mails) = prepared.next().await else {
            break;
        };
        let highest = group.iter().copied().max().map_or(*last_uid, i64::from);
        take(state, account, validity, mails?, highest, stop).await?;
        *last_uid = (*last_uid).max(highest);
        if *stop.borrow() {
            return Ok(());
        }
    }
    Ok(())
}

/// Writes a chunk of mail, waiting out a busy writer; the chunk's UIDs count as taken
/// even when some of it was left out (not mail, automatic mail answering nothing).
async fn take(
    state: &AppState,
    account: &MailAccount,
    validity: i64,
    mails: Vec<crate::store::Mail>,
    highest: i64,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), MailError> {
    if mails.is_empty() {
        return state
            .store
            .advance_mail_sync(&account.inbox_id, validity, highest)
            .await
            .map_err(store_failed);
    }
    let batch = MailBatch {
        inbox_id: account.inbox_id.clone(),
        uid_validity: validity,
        mails,
        available: Vec::new(),
        alone: false,
    };
    match write(state, account, batch.clone(), stop).await? {
        // Stopped before the writer took it: the sync resumes from the last UID written.
        Taken::Stopped => return Ok(()),
        Taken::Written => {}
        Taken::Refused(e) => {
            // One mail the store refuses must not hold back the others (nor the whole
            // inbox): the chunk is taken one by one; a mail refused alone is tried once
            // more without its HTML and attachments, and only then left out.
            tracing::warn!(inbox = %account.inbox_id, error = %e, "a chunk of mail was refused; taking it one mail at a time");
            for mail in &batch.mails {
                let one = |m: crate::store::Mail| MailBatch {
                    inbox_id: batch.inbox_id.clone(),
                    uid_validity: batch.uid_validity,
                    mails: vec![m],
                    available: Vec::new(),
                    alone: false,
                };
                match write(state, account, one(mail.clone()), stop).await? {
                    Taken::Written => {}
                    Taken::Stopped => return Ok(()),
                    Taken::Refused(e) => {
                        let bare = crate::store::Mail {
                            html: None,
                            attachments: None,
                            ..mail.clone()
                        };
                        match write(state, account, one(bare), stop).await? {
                            Taken::Written => {
                                tracing::warn!(inbox = %account.inbox_id, uid = mail.uid, error = %e, "a mail was taken without its HTML and attachments, which the store refused")
                            }
                            Taken::Stopped => return Ok(()),
                            Taken::Refused(e) => {
                                tracing::error!(inbox = %account.inbox_id, uid = mail.uid, message_id = %mail.message_id, error = %e, "a mail was refused by the store and left out")
                            }
                        }
                    }
                }
            }
        }
    }
    // Mails left out (not mail at all, or refused) still move the sync past them.
    state
        .store
        .advance_mail_sync(&account.inbox_id, validity, highest)
        .await
        .map_err(store_failed)
}

/// How writing a batch ended.
enum Taken {
    Written,
    /// Told to stop before the writer took it.
    Stopped,
    /// The store refused what the batch holds (a validation error): writing it again
    /// as it is would be refused again.
    Refused(String),
}

/// Writes a batch, waiting out a busy writer. Any failure but a refusal of the mail
/// itself (a store or node failing) is the session's error: it reconnects and resumes
/// from the last UID written, so no mail is left out for a passing fault.
async fn write(
    state: &AppState,
    account: &MailAccount,
    mut batch: MailBatch,
    stop: &mut watch::Receiver<bool>,
) -> Result<Taken, MailError> {
    loop {
        match app_mail::take_mails(state, &account.workspace_id, batch.clone()).await {
            Ok(_) => return Ok(Taken::Written),
            Err(e) if matches!(e.code, Code::Overloaded | Code::Unavailable) => {
                if stopped_during(stop, Duration::from_millis(200)).await {
                    return Ok(Taken::Stopped);
                }
            }
            Err(e) if matches!(e.code, Code::ValidationFailed | Code::InvalidBody) => {
                let details = e.details.as_ref().map(|d| format!(" {d}")).unwrap_or_default();
                return Ok(Taken::Refused(format!("{e}{details}")));
            }
            // Runs are an optimisation of the write: one that fails for a reason of its
            // own must not hold the inbox back, so the batch is tried once more one
            // mail at a time before the failure is the session's.
            Err(e) if e.code == Code::Internal && !batch.alone => {
                tracing::warn!(inbox = %account.inbox_id, error = %e, "a batch of mail failed in a run; taking it one mail at a time");
                batch.alone = true;
            }
            Err(e) => return Err(MailError::new(Stage::Protocol, format!("cannot take mail: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mails_are_asked_for_in_runs_of_at_most_the_bytes_given_a_larger_one_alone() {
        let sizes = [(1, 400), (2, 500), (3, 200), (4, 2000), (5, 100), (7, 900)];
        assert_eq!(by_size(&sizes, 1000), vec![vec![1, 2], vec![3], vec![4], vec![5, 7]]);
        assert_eq!(by_size(&sizes, u64::MAX), vec![vec![1, 2, 3, 4, 5, 7]]);
        assert!(by_size(&[], 1000).is_empty());
    }
}
