//! `ovation-wallet`: the wallet service on its own, as a container runs it.

use clap::Parser;
use ovation_server::{Shutdown, bind};
use ovation_wallet::{SPEC, WalletArgs, WalletConfig, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = WalletConfig::from(WalletArgs::parse());
    let _telemetry = match ovation_telemetry::init(SPEC.name) {
        Ok(guard) => Some(guard),
        Err(e) => {
            eprintln!("telemetry disabled: {e}");
            None
        }
    };
    let started = async {
        let listener = bind(config.server.listen_addr).await?;
        run(config, listener, Shutdown::on_signals()).await
    };
    match started.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "wallet stopped with an error");
            eprintln!("ovation-wallet: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
