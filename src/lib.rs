//! Shoal: a real-time CRM served by one binary.
//!
//! `domain` holds pure types and rules; `store` persists them on SQLite or
//! PostgreSQL; `http` serves the REST API; `startup` assembles the server.

pub mod actors;
pub mod auth;
pub mod bus;
pub mod config;
pub mod domain;
pub mod http;
pub mod startup;
pub mod store;
pub mod watch;
pub mod ws;

pub use startup::Application;
