//! cpim-gateway: an instant-messaging gateway between SIP/SIMPLE, XMPP (as an XEP-0114 external
//! component) and a JSON webhook protocol.
//!
//! This library is the body of the `cpim-gateway` binary; it is a library so that integration
//! tests can use its modules. In this version it loads and validates `gateway.toml`
//! ([`config`]), offers the `check`, `run` and `explain` commands ([`commands`]; `explain`
//! answers from the broker's address map) and the `translate` dry-run tool ([`translate`]); the protocol adapters
//! and the broker are not built yet, and `run` says so instead of starting anything.

pub mod admin;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod serve;
pub mod translate;
