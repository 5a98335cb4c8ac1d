//! `ovation-payout`: the payout service on its own, as a container runs it.

use clap::Parser;
use ovation_payout::{PayoutArgs, PayoutConfig, SPEC, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = match PayoutConfig::from_args(PayoutArgs::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ovation-payout: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let listen_addr = config.server.listen_addr;
    ovation_server::service_main(SPEC, listen_addr, |listener, shutdown| {
        run(config, listener, shutdown)
    })
    .await
}
