//! What an adapter crate's settings type offers the gateway: the one interface through
//! which `check`, `run` and the summary see an adapter's configuration.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::adapter::{Adapter, AdapterContext};
use crate::config::{Checks, Domain, KeyPath};

/// An adapter's `[adapters.NAME]` table, deserialized (strictly, with `${VAR}`
/// expansion) by its own crate's serde type.
#[async_trait]
pub trait AdapterSettings: Send + Sync {
    /// Every domain the adapter owns: messages to users of these domains go to it.
    fn domains(&self) -> Vec<&Domain>;

    /// Reports every broken rule of these settings, and the domains and sockets they
    /// claim, to `checks`, in file order (`path` is the table's key path). `check` and
    /// `run` both call it, so that they accept and refuse the same files.
    fn check(&self, name: &str, path: &KeyPath, checks: &mut dyn Checks);

    /// One line for `cpim-gateway check`: what the adapter listens on or connects to.
    /// Never a secret.
    fn summary(&self) -> String;

    /// Starts the adapter `name` with its broker `context`; files named in the settings
    /// are read relative to `base_dir` (the configuration file's directory).
    async fn build(
        &self,
        name: &str,
        context: AdapterContext,
        base_dir: &Path,
    ) -> std::io::Result<Arc<dyn Adapter>>;
}
