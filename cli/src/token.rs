//! `ovation token`: mint a bearer token for a local suite.

use std::path::PathBuf;

use ovation_auth::dev::existing_dev_keys;
use ovation_auth::{Role, Signer};

/// Longest validity `ovation token` grants: a day. Dev tokens should not live long.
const TTL_SECS_MAX: u64 = 86_400;

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// Subject: the user or service id the token speaks for.
    #[arg(long)]
    sub: String,
    /// A role (repeat for several): viewer, creator, admin, gateway, service:wallet,
    /// service:gifting, service:payout.
    #[arg(long = "role", required = true)]
    roles: Vec<String>,
    /// Validity in seconds (at most a day).
    #[arg(long, default_value_t = 3_600)]
    ttl_secs: u64,
    /// The data directory of the `ovation up` to mint for (its dev key is kept there).
    #[arg(long, env = "OVATION_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Sign with the first hs256 key of this keys file that may sign the roles, instead
    /// of the dev key.
    #[arg(long)]
    keys_file: Option<PathBuf>,
    /// The audience to put in `aud`: the suite's OVATION_AUTH_AUDIENCE, when it has one.
    #[arg(long, env = "OVATION_AUTH_AUDIENCE")]
    audience: Option<String>,
}

pub fn run(args: TokenArgs) -> Result<(), Box<dyn std::error::Error>> {
    ovation_auth::keys::check_subject(&args.sub).map_err(|e| format!("--sub {e}"))?;
    let roles = args
        .roles
        .iter()
        .map(|r| {
            Role::parse(r).ok_or_else(|| {
                let known: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown role {r:?}; known roles: {}", known.join(", "))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if args.ttl_secs == 0 || args.ttl_secs > TTL_SECS_MAX {
        return Err(format!("--ttl-secs must be between 1 and {TTL_SECS_MAX}").into());
    }
    let keys_file = match args.keys_file {
        Some(path) => path,
        // The suite's key, never a new one: a token under a fresh key is refused.
        None => existing_dev_keys(&args.data_dir)
            .map_err(|e| format!("{e}, or a keys file with --keys-file"))?,
    };
    let signer =
        Signer::from_keys_file(&keys_file, &roles)?.with_audience(args.audience.as_deref());
    println!("{}", signer.mint(&args.sub, &roles, args.ttl_secs));
    Ok(())
}
