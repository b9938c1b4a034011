//! The conversation timer scheduler: fires SLA warnings and breaches, and ends snoozes,
//! when they fall due. The timers are rows in the store, written with the changes
//! that set and clear them, so a restart loses none; each fires in a write through its
//! inbox's single writer that deletes it, so none fires twice, whichever node (or how
//! many) noticed it.

use std::sync::Arc;
use std::time::Duration;

use crate::app::writes::{self, Author, Write};
use crate::app::AppState;

/// The longest the scheduler sleeps without looking: timers set meanwhile may fall due
/// before the one it waits for.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Conversations handled per look; more wait for the next.
const BATCH: i64 = 500;
/// Who the events of fired timers are by.
pub const ACTOR: &str = "system:timers";

/// Runs until `stop` turns true, which it checks between rounds, so that it never
/// stops in the middle of a query or a write.
pub async fn run(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let now = state.clock.now_ms();
        match state.store.due_timers(now, BATCH).await {
            Ok(due) => {
                for (workspace_id, conversation_id) in due {
                    let author = Author {
                        workspace_id,
                        actor: ACTOR.to_string(),
                    };
                    let write = Write::FireTimers {
                        conversation_id: conversation_id.clone(),
                        now,
                    };
                    if let Err(e) = writes::execute(&state, author, None, write).await {
                        tracing::warn!(conversation = %conversation_id, code = e.code.name(), error = %e, "a conversation timer could not fire; trying again");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read conversation timers; trying again"),
        }
        let wait = match state.store.next_timer().await {
            Ok(Some(at)) => Duration::from_millis(u64::try_from(at - state.clock.now_ms()).unwrap_or(0)).min(LOOK_EVERY),
            _ => LOOK_EVERY,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.clock.moved() => {}
            _ = stop.changed() => {}
        }
    }
}
