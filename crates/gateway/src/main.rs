//! `cpim-gateway`: the gateway's command-line entry point.
//!
//! ```text
//! cpim-gateway [--log-format text|json] check --config FILE
//! cpim-gateway [--log-format text|json] run --config FILE
//! cpim-gateway explain --config FILE ADDRESS
//! cpim-gateway translate --from cpim|pidf|imdn|iscomposing|xmpp|sip [--to json|SAME] [FILE|-]
//! ```
//!
//! Logs go to standard error; `RUST_LOG` sets the level (default `info`).
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (`check`: the configuration is valid); also `--help` and `--version` |
//! | 1 | `explain`: the address cannot be parsed or routed; `translate`: the input cannot be read or is invalid; an unexpected failure, such as being unable to write to standard output |
//! | 2 | the configuration file cannot be read or is invalid; also a command-line usage error |
//! | 3 | `run`: the configuration needs an adapter kind this build lacks (none in this version) |

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cpim_gateway::cli::{Cli, Command, LogFormat};
use cpim_gateway::commands;
use cpim_gateway::error::Error;
use cpim_gateway::translate;

/// mimalloc instead of glibc's malloc: under load a quarter of the gateway's CPU per
/// message went to glibc's allocator, and the memory of a presence fan-out was not
/// returned (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn dispatch(command: Command) -> Result<(), Error> {
    match command {
        Command::Run(args) => commands::run(&args.config),
        Command::Check(args) => commands::check(&args.config, &mut std::io::stdout().lock()),
        Command::Explain(args) => {
            commands::explain(&args.config, &args.address, &mut std::io::stdout().lock())
        }
        Command::Translate(args) => {
            let input = translate::read_input(&args.input)?;
            let output = translate::translate(args.from, args.to, &input)?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), &output).map_err(Error::Output)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
