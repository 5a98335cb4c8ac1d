//! `ovation-wallet`: the wallet service on its own, as a container runs it.

use clap::Parser;
use ovation_wallet::{SPEC, WalletArgs, WalletConfig, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = WalletArgs::parse();
    let listen_addr = args.listen;
    // The settings are judged inside: a refusal (a sandbox not allowed, a provider not
    // built) exits non-zero with the message, as any start failure does.
    ovation_server::service_main(SPEC, listen_addr, |listener, shutdown| async move {
        run(WalletConfig::from_args(args)?, listener, shutdown).await
    })
    .await
}
