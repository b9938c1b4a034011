//! Shoal: a real-time CRM served by one binary.

pub mod domain;
pub mod store;
