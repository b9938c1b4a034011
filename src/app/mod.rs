//! What the server does, whichever way it was asked: who is acting ([`principal`]),
//! the error table ([`error`]), the write path ([`writes`]) with forwarding to a
//! board's owner node ([`forward`]), which topics a principal may follow ([`topics`]),
//! and the record commands ([`records`]). The REST routes (`http`), the WebSocket loop
//! (`ws`) and workers are thin adapters over this layer and never import each other.

pub mod clock;
pub mod error;
pub mod forward;
pub mod inbox;
pub mod mail;
pub mod principal;
pub mod records;
pub mod topics;
pub mod writes;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::auth::TokenSigner;
use crate::config::Settings;
use crate::store::Store;

pub use error::{ApiError, Code};
pub use principal::{Actor, Principal};

/// What every adapter and worker acts through.
pub struct AppState {
    pub store: Store,
    pub settings: Settings,
    pub tokens: TokenSigner,
    /// Password hashes run here: few at once, so their memory stays bounded.
    pub passwords: crate::auth::PasswordPool,
    /// Bounds concurrent CSV imports; when none is free a new import is refused with
    /// `overloaded` rather than queued without limit.
    pub import_slots: Arc<Semaphore>,
    /// A real hash of a random password, checked when a login names an unknown user.
    pub dummy_hash: String,
    /// The node's topic actors.
    pub directory: crate::actors::Directory,
    /// The other nodes, when this node is in a cluster.
    pub bus: Option<crate::bus::RedisBus>,
    /// Live connections open on this node, for `/metrics`.
    pub connections: AtomicU64,
    /// The time SLA timers are judged by.
    pub clock: clock::Clock,
    /// API-channel inbox tokens found lately.
    pub inbox_tokens: inbox::InboxTokens,
    /// Woken when an e-mail inbox's servers are saved, so its sync starts over at once.
    pub mail_changed: tokio::sync::Notify,
    /// Woken when a reply may have been queued for SMTP.
    pub mail_queued: tokio::sync::Notify,
}
