//! `OVATION_ALLOW_SANDBOX`: sandbox providers (payments, payouts) move no real money, so a
//! service runs one only when this setting says so. `ovation up`, the test kits and the
//! dev overlay set it; the prod overlay does not, and a service configured there with a
//! sandbox provider refuses to start, naming the setting.

use crate::StartError;

/// The setting's name, as operators write it.
pub const ALLOW_SANDBOX_SETTING: &str = "OVATION_ALLOW_SANDBOX";

/// The setting, for a service's command line.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SandboxArgs {
    /// Permit sandbox providers, which move no real money (development, tests, demos).
    /// Never set in production: a service configured with a sandbox provider without it
    /// refuses to start.
    #[arg(long = "allow-sandbox", env = "OVATION_ALLOW_SANDBOX")]
    pub allow_sandbox: bool,
}

/// `Ok` when `allowed`; otherwise the start error naming [`ALLOW_SANDBOX_SETTING`] and
/// `what` (e.g. "the payment provider `sandbox` (OVATION_PAYMENT_PROVIDERS)").
pub fn refuse_unless_allowed(what: &str, allowed: bool) -> Result<(), StartError> {
    if allowed {
        return Ok(());
    }
    Err(StartError::Config(format!(
        "{what} is a sandbox that moves no real money; it runs only with \
         {ALLOW_SANDBOX_SETTING}=true (development and tests). Configure a real provider, \
         or set {ALLOW_SANDBOX_SETTING}=true outside production"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unless_allowed_and_names_the_setting() {
        assert!(refuse_unless_allowed("the payment provider `sandbox`", true).is_ok());
        let refused = refuse_unless_allowed("the payment provider `sandbox`", false)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("OVATION_ALLOW_SANDBOX"), "{refused}");
        assert!(
            refused.contains("the payment provider `sandbox`"),
            "{refused}"
        );
    }
}
