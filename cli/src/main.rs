//! `ovation`: the suite's command.
//!
//! - `ovation up`: every service that exists, in one process, each on its own port
//!   (wallet 50051, catalog 50052, gifting 50053, payout 50054 on 127.0.0.1 by default),
//!   each with its own database: SQLite files under `--data-dir` by default, or one
//!   database per service on the PostgreSQL server of `--postgres-url`.
//!
//! - `ovation token --sub alice --role viewer`: a bearer token for that suite.
//! - `ovation audit`: proves I1–I6 on a running suite through its admin reads, for every
//!   gift saga or for those created in a window (`--since`/`--until`, RFC 3339).
//! - `ovation bench`: gifts/s and SendGift latency against a running suite, closed loop
//!   (`--concurrency`) or open loop (`--rate`), where each gift's cost goes (CPU per
//!   process, RPCs, database transactions), a one-transaction-per-gift PostgreSQL baseline
//!   with `--baseline`, then the audit; `ovation bench startup`: each service binary's time
//!   to SERVING and idle RSS.

mod audit;
mod bench;
mod token;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ovation",
    version,
    about = "Ovation: the live-stream gift economy backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every service in this process until Ctrl-C or SIGTERM.
    Up(Box<up::UpArgs>),
    /// Mint a bearer token for a local suite (signed with the dev key `up` keeps in its
    /// data directory).
    Token(token::TokenArgs),
    /// Prove I1–I6 on a running suite from the services' own data (exits 1 on a violation);
    /// `--since`/`--until` (RFC 3339) audit only the gift sagas created in that window.
    Audit(audit::AuditCommand),
    /// Measure SendGift throughput and latency, audit, and compare with a PostgreSQL baseline.
    Bench(Box<bench::BenchArgs>),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => {
            let args = *args;
            let _telemetry = ovation_telemetry::init("ovation")
                .map_err(|e| eprintln!("telemetry disabled: {e}"))
                .ok();
            up::run(args).await
        }
        Command::Token(args) => token::run(args),
        Command::Audit(args) => match audit::run_command(args).await {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Bench(args) => match bench::run(*args).await {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::FAILURE,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ovation: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every subcommand's flags parse: no two settings share an id or a name.
    #[test]
    fn the_command_line_is_valid() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
