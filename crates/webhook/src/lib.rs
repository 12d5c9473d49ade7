//! `cpim-webhook` — the webhook adapter: applications join the IM networks through a
//! JSON-over-HTTP protocol (inbound API with axum, outbound signed transactions with
//! reqwest, rustls only).
//!
//! - [`api`]: the request JSON types, problem responses (pure).
//! - [`translate`]: requests → broker submissions, envelopes → event JSON (pure).
//! - [`server`]: the HTTP API under `/v1` (bearer tokens, rate limits, body limits,
//!   idempotency keys, Server-Sent Events, the OpenAPI document).
//! - [`client`]: outbound delivery to an application's URL: signed idempotent
//!   transactions (`PUT {url}/transactions/{txn_id}`), per-app order, batching, retries.
//! - [`events`]: the per-application event logs behind the SSE stream.
//! - [`config`]: [`WebhookConfig`], [`AppConfig`] (serde, defaults).
//! - [`adapter`]: [`WebhookAdapter`] (the broker side); the [`OutboundSink`] boundary to
//!   the outbound client is in [`client`].
//!
//! The API is described in `docs/webhook-openapi.json`, served at `GET /v1/openapi.json`.

#![forbid(unsafe_code)]

pub mod adapter;
pub mod api;
pub mod client;
pub mod config;
pub mod events;
pub mod listener;
pub mod server;
pub mod settings;
pub mod translate;

pub use adapter::{AppConfig, OutboundSink, WebhookAdapter, WebhookConfig};
pub use settings::WebhookSettings;
