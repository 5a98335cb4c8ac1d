//! `ovation-wallet`: the wallet service on its own, as a container runs it.

use clap::Parser;
use ovation_wallet::{SPEC, WalletArgs, WalletConfig, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = WalletConfig::from(WalletArgs::parse());
    let listen_addr = config.server.listen_addr;
    ovation_server::service_main(SPEC, listen_addr, |listener, shutdown| {
        run(config, listener, shutdown)
    })
    .await
}
