//! What an adapter crate's settings type offers the gateway: the one interface through
//! which `check`, `run` and the summary see an adapter's configuration.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::adapter::{Adapter, AdapterContext};
use crate::config::{Checks, Domain, KeyPath};
use crate::identity::AddressStyle;

/// An adapter's `[adapters.NAME]` table, deserialized (strictly, with `${VAR}`
/// expansion) by its own crate's serde type.
#[async_trait]
pub trait AdapterSettings: Send + Sync {
    /// How addresses are written on this adapter's network.
    fn style(&self) -> AddressStyle;

    /// The domains whose users live on this adapter's network (its home domains in the
    /// address map).
    fn home_domains(&self) -> Vec<&Domain>;

    /// The domains at which the adapter's network reaches users of other networks (an
    /// XMPP server's component domains): escape domains in the address map unless an
    /// alias takes them, and the only domains an alias on this adapter may use. None by
    /// default.
    fn component_domains(&self) -> Vec<&Domain> {
        Vec::new()
    }

    /// Whether the adapter's users are at every domain no adapter claims (SIP
    /// `remote_domains = ["*"]`); at most one adapter may say so. No by default.
    fn reaches_any_domain(&self) -> bool {
        false
    }

    /// Every domain the adapter owns: its component domains, then its home domains.
    fn domains(&self) -> Vec<&Domain> {
        let mut all = self.component_domains();
        all.extend(self.home_domains());
        all
    }

    /// Reports every broken rule of these settings, and the domains and sockets they
    /// claim, to `checks`, in file order (`path` is the table's key path). `check` and
    /// `run` both call it, so that they accept and refuse the same files.
    fn check(&self, name: &str, path: &KeyPath, checks: &mut dyn Checks);

    /// One line for `cpim-gateway check`: what the adapter listens on or connects to.
    /// Never a secret.
    fn summary(&self) -> String;

    /// Lines for `cpim-gateway check`: whom the adapter believes a sender is, and who
    /// may speak for which domain. Never a secret. None by default.
    fn trust(&self) -> Vec<String> {
        Vec::new()
    }

    /// Starts the adapter `name` with its broker `context`; files named in the settings
    /// are read relative to `base_dir` (the configuration file's directory).
    async fn build(
        &self,
        name: &str,
        context: AdapterContext,
        base_dir: &Path,
    ) -> std::io::Result<Arc<dyn Adapter>>;
}
