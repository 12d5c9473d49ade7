//! `cpim-webhook` — the webhook adapter: applications join the IM networks through a
//! JSON-over-HTTP protocol (inbound API with axum, outbound signed transactions with
//! reqwest, rustls only).

pub mod client;
