//! `ovation`: the suite's command.
//!
//! - `ovation up`: every service that exists, in one process, each on its own port
//!   (wallet 50051, catalog 50052, gifting 50053, payout 50054 on 127.0.0.1 by default),
//!   each with its own database: SQLite files under `--data-dir` by default, or one
//!   database per service on the PostgreSQL server of `--postgres-url`.
//!
//! Services come into `up` as they are built; today that is the catalog.

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
    Up(up::UpArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _telemetry = ovation_telemetry::init("ovation")
        .map_err(|e| eprintln!("telemetry disabled: {e}"))
        .ok();
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ovation: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
