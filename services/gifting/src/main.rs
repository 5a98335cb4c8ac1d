//! `ovation-gifting`: the gifting service on its own, as a container runs it.

use clap::Parser;
use ovation_gifting::{GiftingArgs, GiftingConfig, SPEC, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = GiftingConfig::from(GiftingArgs::parse());
    let listen_addr = config.server.listen_addr;
    ovation_server::service_main(SPEC, listen_addr, |listener, shutdown| {
        run(config, listener, shutdown)
    })
    .await
}
