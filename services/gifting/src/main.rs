//! `ovation-gifting`: the gifting service on its own, as a container runs it.

use clap::Parser;
use ovation_gifting::{GiftingArgs, GiftingConfig, SPEC, run};
use ovation_server::{Shutdown, bind};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = GiftingConfig::from(GiftingArgs::parse());
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
            tracing::error!(error = %e, "gifting stopped with an error");
            eprintln!("ovation-gifting: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
