//! The time timers are judged by. It is the system's clock; tests move it forward
//! (through the fault-injection hooks) to fire timers at once instead of waiting.

use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Clock {
    /// Added to the system's time; only ever non-zero in tests.
    offset_ms: AtomicI64,
    /// Woken when the clock moves, so timers waiting on it look again.
    moved: Notify,
}

impl Clock {
    /// Now, in milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        crate::store::now_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
        self.moved.notify_waiters();
    }

    /// Resolves when the clock is next moved.
    pub async fn moved(&self) {
        self.moved.notified().await;
    }
}
