//! The API's integration tests: one binary, each test against a real server on port 0
//! with a fresh store, on SQLite and on PostgreSQL.

// A panic in a test is a failed assertion with a location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod mailserver;

mod access;
mod auth;
mod backpressure;
mod bad_input;
mod cli;
mod cluster;
mod convergence;
mod crash;
mod csv_files;
mod docs;
mod email;
mod failover;
mod inbox;
mod isolation;
mod ordering;
mod outage;
mod protocol;
mod realtime;
mod records;
mod roles;
mod search;
mod web;
