//! The errors of the `cpim-gateway` binary and their exit codes.

use crate::config::{AdapterKind, ConfigError};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file could not be read or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration asks for adapters that this version does not contain.
    #[error(
        "cannot run: the configured protocol adapters are not built yet in this version ({})\n\
         {}\n\
         The configuration is valid (`cpim-gateway check` summarizes it); nothing was started.",
        env!("CARGO_PKG_VERSION"),
        describe_adapters(adapters)
    )]
    AdaptersNotBuilt {
        /// The adapters that are missing: name and type.
        adapters: Vec<(String, AdapterKind)>,
    },
    /// The broker stopped while it was being asked something.
    #[error("the broker has stopped")]
    Stopped,
    /// The async runtime or a signal handler could not be set up.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// `explain` was given text that is not an address.
    #[error("`{text}` is not an address: {source}")]
    BadAddress {
        /// The text given.
        text: String,
        /// Why it does not parse.
        source: cpim::AddressError,
    },
    /// `explain`: no adapter can route the address.
    #[error("{address} cannot be routed: {reason}")]
    Unroutable {
        /// The address.
        address: String,
        /// Why, as read on each adapter tried.
        reason: String,
    },
    /// The address map could not be built from a configuration that passed validation.
    #[error("the address map cannot be built: {0}")]
    Map(#[from] cpim_broker::map::MapError),
    /// `translate` could not read or parse its input.
    #[error(transparent)]
    Translate(#[from] crate::translate::TranslateError),
    /// The spool (store and forward) cannot be opened or read.
    #[error("cannot open the message spool: {0}")]
    Spool(#[from] cpim_broker::spool::SpoolError),
    /// Writing to standard output failed.
    #[error("cannot write to standard output: {0}")]
    Output(#[source] std::io::Error),
}

impl Error {
    /// The process exit code for this error (see the binary's documentation).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Output(_)
            | Error::Translate(_)
            | Error::BadAddress { .. }
            | Error::Unroutable { .. } => 1,
            Error::Config(_) | Error::Map(_) => 2,
            Error::Stopped | Error::Runtime(_) | Error::Spool(_) => 1,
            Error::AdaptersNotBuilt { .. } => 3,
        }
    }
}

fn describe_adapters(adapters: &[(String, AdapterKind)]) -> String {
    adapters
        .iter()
        .map(|(name, kind)| format!("  adapter `{name}` (type {kind}): not built yet"))
        .collect::<Vec<_>>()
        .join("\n")
}
