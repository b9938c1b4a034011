//! Sending replies: agents' replies in e-mail inboxes wait in the outbox, written with
//! the reply itself, and this worker sends them over SMTP. A reply is taken by one
//! sender at a time (a conditional update in the store), sent, and its delivery status
//! moves to `sent`, or `failed` with the server's words, as events on the inbox. A
//! temporary failure (4xx, a lost connection) is retried with growing waits; a
//! permanent one (5xx) is not.
//!
//! Duplicates: a reply is marked `sending` before it is handed to the server and
//! `sent` after the server took it. A crash between the two leaves it `sending`, and it
//! is sent again after `mail_send_stale_secs` (two minutes): at most one extra copy
//! per crash, with the same Message-ID, which mail clients show as one mail.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::mail as app_mail;
use crate::app::AppState;
use crate::mail::smtp;
use crate::store::Queued;

/// The longest the sender sleeps without looking at the outbox.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Replies taken per look.
const BATCH: i64 = 50;
/// Attempts before a reply that keeps failing temporarily is given up as failed.
const MAX_ATTEMPTS: i64 = 8;

/// Runs until `stop` turns true: replies and members' notifications in loops of their
/// own, so that a slow or unreachable notification server never holds a reply back
/// (nor the other way round).
pub async fn run(state: Arc<AppState>, stop: watch::Receiver<bool>) {
    tokio::join!(replies(state.clone(), stop.clone()), notifications(state, stop));
}

async fn replies(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let now = crate::store::now_ms();
        let stale = i64::try_from(state.settings.mail_send_stale_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        match state.store.due_mail(now, stale, BATCH).await {
            Ok(due) => {
                for q in due {
                    // A fresh clock: sends before this one may have taken long, and a
                    // claim stamped with the loop's start would look stale sooner.
                    match state.store.claim_mail(&q.message_id, crate::store::now_ms(), stale).await {
                        Ok(true) => send_one(&state, &q).await,
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot take a queued reply; trying again"),
                    }
                    if *stop.borrow() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the mail outbox; trying again"),
        }
        let wait = match state.store.next_mail_due().await {
            Ok(Some(at)) => Duration::from_millis(u64::try_from(at - crate::store::now_ms()).unwrap_or(0)).min(LOOK_EVERY),
            _ => LOOK_EVERY,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.mail_queued.notified() => {}
            _ = stop.changed() => {}
        }
    }
}

async fn notifications(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        notify(&state, &stop).await;
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Mails members the notifications they asked for, through the server's own SMTP
/// server; without one they wait (they were only queued for members who opted in
/// while it was set).
async fn notify(state: &AppState, stop: &watch::Receiver<bool>) {
    let now = crate::store::now_ms();
    let server = match app_mail::notify_server(state) {
        None => return,
        Some(Ok(s)) => s,
        Some(Err(why)) => {
            tracing::warn!(error = %why, "notification mails are off: notify_smtp_url is not usable");
            return;
        }
    };
    let due = match state.store.due_notifications(now, BATCH).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the notification outbox; trying again");
            return;
        }
    };
    for n in due {
        let stale = i64::try_from(state.settings.mail_send_stale_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        match state.store.claim_notification(&n.id, crate::store::now_ms(), stale).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take a notification; trying again");
                continue;
            }
        }
        let attempts = n.attempts + 1;
        let mail = app_mail::notification_mail(state, &n);
        let (to, error, next_at) = match smtp::send(&server, &mail).await {
            Ok(()) => ("sent", None, now),
            Err(e) if e.permanent || attempts >= MAX_ATTEMPTS => ("failed", Some(e.message), now),
            Err(e) => ("queued", Some(e.message), now + retry_after(attempts)),
        };
        if let Some(e) = &error {
            tracing::warn!(notification = %n.id, attempts, error = %e, "a notification mail was not sent");
        }
        if let Err(e) = state.store.settle_notification(&n.id, to, error.as_deref(), next_at).await {
            tracing::warn!(notification = %n.id, error = %e, "cannot record a notification's sending");
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// The wait before attempt `n + 1`: 30 s, 1, 2, 4… minutes, at most an hour.
fn retry_after(attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.clamp(1, 8) - 1).unwrap_or(0);
    (30_000i64 * 2i64.pow(exp)).min(3_600_000)
}

async fn send_one(state: &AppState, q: &Queued) {
    let attempts = q.attempts + 1;
    let outcome = attempt(state, q).await;
    let now = crate::store::now_ms();
    let (state_name, error, next_at) = match &outcome {
        Ok(()) => ("sent", None, now),
        Err((why, true)) => ("failed", Some(why.clone()), now),
        Err((why, false)) if attempts >= MAX_ATTEMPTS => ("failed", Some(format!("{why} (gave up after {attempts} attempts)")), now),
        Err((why, false)) => ("queued", Some(why.clone()), now + retry_after(attempts)),
    };
    if let Err(e) = state.store.settle_mail(&q.message_id, state_name, error.as_deref(), next_at).await {
        tracing::warn!(message = %q.message_id, error = %e, "cannot record a reply's sending");
    }
    if state_name == "queued" {
        tracing::info!(message = %q.message_id, attempts, error = error.as_deref().unwrap_or(""), "a reply could not be sent yet; retrying later");
        return;
    }
    // The status is the agents' to see: tried a few times, since the mail itself has
    // gone (or failed) whatever the inbox's actor is doing.
    for _ in 0..5 {
        match app_mail::report_sent(state, &q.workspace_id, &q.inbox_id, &q.message_id, error.as_deref()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(message = %q.message_id, code = e.code.name(), error = %e, "cannot record a reply's delivery status; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Sends one reply; the error says why and whether it is final.
async fn attempt(state: &AppState, q: &Queued) -> Result<(), (String, bool)> {
    let scoped = state.store.scoped(&q.workspace_id);
    let transient = |e: crate::store::StoreError| (format!("the store failed: {e}"), false);
    let Some(out) = scoped.outgoing(&q.message_id).await.map_err(transient)? else {
        return Err(("the reply was deleted before it was sent".into(), true));
    };
    let Some(account) = state.store.mail_account(&q.inbox_id).await.map_err(transient)? else {
        return Err(("the inbox has no mail servers configured".into(), true));
    };
    let Some(to) = out.to.clone() else {
        return Err(("the customer's contact has no e-mail address".into(), true));
    };
    let server = app_mail::smtp_server(state, &account).map_err(|e| (e.message, true))?;
    let subject = out.conversation.text("subject").unwrap_or("Your message");
    let subject = if subject.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("re:")) {
        subject.to_string()
    } else {
        format!("Re: {subject}")
    };
    let from_name = match (&out.agent, &account.from_name) {
        (Some(agent), Some(inbox)) => Some(format!("{agent} ({inbox})")),
        (Some(agent), None) => Some(agent.clone()),
        (None, inbox) => inbox.clone(),
    };
    // The newest twenty ids are enough for any client to thread by.
    let references: Vec<String> = out.thread.iter().rev().take(20).rev().cloned().collect();
    let mail = smtp::Outgoing {
        message_id: out.message.text("external_id").unwrap_or_default().to_string(),
        from_name,
        from: account.from_address.clone(),
        to,
        subject,
        text: out.message.text("text").unwrap_or_default().to_string(),
        html: out.message.text("html").map(str::to_string),
        in_reply_to: out.thread.last().cloned(),
        references,
    };
    smtp::send(&server, &mail).await.map_err(|e| (e.message, e.permanent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_up_to_an_hour() {
        assert_eq!(retry_after(1), 30_000);
        assert_eq!(retry_after(2), 60_000);
        assert_eq!(retry_after(8), 3_600_000);
        assert_eq!(retry_after(50), 3_600_000);
    }
}
