//! Shoal: a real-time CRM served by one binary.
//!
//! `domain` holds pure types and rules; `app` is what the server does, whichever way
//! it was asked; `http` (REST) and `ws` (WebSocket) are thin adapters over it; `store`
//! persists on SQLite or PostgreSQL; `mail` speaks IMAP and SMTP to an e-mail inbox's
//! servers; `workers` do background work (timers, mail sync and sending) through `app`;
//! `startup` assembles the server.

pub mod actors;
pub mod app;
pub mod auth;
pub mod bus;
pub mod config;
pub mod domain;
pub mod http;
pub mod mail;
pub mod startup;
pub mod store;
pub mod watch;
pub mod workers;
pub mod ws;

pub use startup::Application;
