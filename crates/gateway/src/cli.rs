//! The command line, as clap derive types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::translate::{InputFormat, OutputFormat};

/// An instant-messaging gateway between SIP/SIMPLE, XMPP and a JSON webhook protocol.
///
/// Logs go to standard error; set the level with RUST_LOG (default `info`).
#[derive(Debug, Parser)]
#[command(name = "cpim-gateway", version, propagate_version = true)]
pub struct Cli {
    /// The format of log lines on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the configuration and run the gateway (in this version the protocol adapters are
    /// not built yet: it validates, reports them and exits with code 3).
    Run(ConfigArgs),
    /// Validate the configuration and print a summary of it.
    Check(ConfigArgs),
    /// Explain how the gateway routes an address: which adapter owns it, the user it names and
    /// how that user is written on every adapter (exit 1 when it cannot be routed).
    Explain(ExplainArgs),
    /// Parse a captured payload and print the model as JSON, or re-serialize it
    /// (a message/cpim body that parses comes back byte-for-byte).
    Translate(TranslateArgs),
}

/// The arguments of `translate`.
#[derive(Debug, Args)]
pub struct TranslateArgs {
    /// The format of the input.
    #[arg(long, value_enum)]
    pub from: InputFormat,
    /// What to print: `json` (the model, the default) or the input's own format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    pub to: OutputFormat,
    /// The input file; `-` (the default) reads standard input.
    #[arg(default_value = "-", value_name = "FILE")]
    pub input: String,
}

/// The arguments of `explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The configuration file (TOML), e.g. gateway.toml.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// The address, as written on any network: `sip:alice@sip.example.com`,
    /// `alice@xmpp.example.com` (an XMPP address), `im:bot@app.example.com`.
    #[arg(value_name = "ADDRESS")]
    pub address: String,
}

/// The arguments of commands that read a configuration file.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The configuration file (TOML), e.g. gateway.toml.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn log_format_is_global_and_defaults_to_text() {
        let cli = Cli::try_parse_from(["cpim-gateway", "check", "--config", "g.toml"])
            .expect("valid command line");
        assert_eq!(cli.log_format, LogFormat::Text);
        let cli = Cli::try_parse_from([
            "cpim-gateway",
            "run",
            "-c",
            "g.toml",
            "--log-format",
            "json",
        ])
        .expect("valid command line");
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(
            matches!(cli.command, Command::Run(ConfigArgs { config }) if config == Path::new("g.toml"))
        );
    }

    #[test]
    fn explain_takes_config_and_address() {
        let cli = Cli::try_parse_from([
            "cpim-gateway",
            "explain",
            "--config",
            "g.toml",
            "alice@x.example",
        ])
        .expect("valid command line");
        assert!(
            matches!(cli.command, Command::Explain(ExplainArgs { address, .. }) if address == "alice@x.example")
        );
        assert!(Cli::try_parse_from(["cpim-gateway", "explain", "-c", "g.toml"]).is_err());
    }

    #[test]
    fn config_is_required() {
        assert!(Cli::try_parse_from(["cpim-gateway", "check"]).is_err());
    }
}
