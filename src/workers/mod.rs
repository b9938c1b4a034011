//! Work the server does on its own, not at a client's request: each worker calls the
//! application layer like any adapter, so its writes take the same path, under the
//! same single writers.

pub mod mail_send;
pub mod mail_sync;
pub mod timers;
