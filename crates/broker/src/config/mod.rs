//! The configuration vocabulary every adapter's settings are written in: domain names,
//! strings with `${VAR}` substitution, secrets, `host:port`, range-checked integers, key
//! paths and findings, and the [`Checks`] an adapter's settings report to. Each adapter
//! crate owns its serde settings type and its checks in these terms; the gateway reads
//! the file and checks what spans adapters.

mod check;
pub mod de;
mod domain;
mod env;
mod host_port;
mod path;
mod settings;

pub use check::{Checks, Socket};
pub use domain::{is_valid_name, Domain, DomainError};
pub use env::{expand, process_env, with_lookup, ConfigString, ExpandError, Lookup, Secret};
pub use host_port::HostPort;
pub use path::{Finding, KeyPath, Segment};
pub use settings::AdapterSettings;
