//! `ovation-catalog`: the catalog service on its own, as a container runs it.

use clap::Parser;
use ovation_catalog::{CatalogArgs, CatalogConfig, SPEC, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = CatalogConfig::from(CatalogArgs::parse());
    let listen_addr = config.server.listen_addr;
    ovation_server::service_main(SPEC, listen_addr, |listener, shutdown| {
        run(config, listener, shutdown)
    })
    .await
}
