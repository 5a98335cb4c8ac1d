//! Roles and the verified caller.

/// What a caller is. Tokens carry roles as strings (`"viewer"`, `"service:gifting"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A viewer: their own wallet, their own gifts.
    Viewer,
    /// A creator: their own earnings and payouts.
    Creator,
    /// An operator: catalog writes, verification, reversals, audit reads.
    Admin,
    /// The platform's gateway, acting for the user named in the token's `sub`.
    Gateway,
    /// The wallet service (reads the catalog).
    WalletService,
    /// The gifting service (debits and refunds coins, credits diamonds).
    GiftingService,
    /// The payout service (reads the catalog).
    PayoutService,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Viewer,
        Role::Creator,
        Role::Admin,
        Role::Gateway,
        Role::WalletService,
        Role::GiftingService,
        Role::PayoutService,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Creator => "creator",
            Role::Admin => "admin",
            Role::Gateway => "gateway",
            Role::WalletService => "service:wallet",
            Role::GiftingService => "service:gifting",
            Role::PayoutService => "service:payout",
        }
    }

    pub fn parse(raw: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == raw)
    }

    /// Service identities call on behalf of the system, not of a person.
    pub fn is_service(self) -> bool {
        matches!(
            self,
            Role::WalletService | Role::GiftingService | Role::PayoutService
        )
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subject's age as the token's issuer verified it (the `age_verified_adult` claim):
/// set by an identity provider or the platform's gateway after an age check, never by the
/// user. Services use it for the age rule (minors neither buy nor spend coins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VerifiedAge {
    Adult,
    Minor,
}

impl VerifiedAge {
    /// The claim's value: `true` is an adult, `false` a minor.
    pub fn from_adult_claim(adult: bool) -> Self {
        if adult {
            VerifiedAge::Adult
        } else {
            VerifiedAge::Minor
        }
    }
}

/// A verified caller: who (`subject`), as what (`roles`), through whom (`actor`, the
/// gateway's id when a gateway acts for a user), and the subject's age if the token's
/// issuer verified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    subject: String,
    roles: Vec<Role>,
    actor: Option<String>,
    verified_age: Option<VerifiedAge>,
    unchecked: bool,
}

impl Caller {
    pub fn new(subject: impl Into<String>, roles: Vec<Role>, actor: Option<String>) -> Self {
        Caller {
            subject: subject.into(),
            roles,
            actor,
            verified_age: None,
            unchecked: false,
        }
    }

    /// The same caller, with the age its token's issuer verified (`None`: not verified).
    pub fn with_verified_age(self, verified_age: Option<VerifiedAge>) -> Self {
        Caller {
            verified_age,
            ..self
        }
    }

    /// The caller of a server run with `--insecure-no-auth`: every role, no identity.
    /// Exists for experiments only; the server says so loudly at start.
    pub fn unchecked() -> Self {
        Caller {
            subject: "anonymous".into(),
            roles: Role::ALL.to_vec(),
            actor: None,
            verified_age: None,
            unchecked: true,
        }
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    pub fn actor(&self) -> Option<&str> {
        self.actor.as_deref()
    }

    /// The subject's age per the token (`age_verified_adult`); `None` when the token does
    /// not say. It describes the subject: meaningful for a user's own token (or the
    /// gateway's for them), not for an operator acting on someone else's account.
    pub fn verified_age(&self) -> Option<VerifiedAge> {
        self.verified_age
    }

    pub fn has(&self, role: Role) -> bool {
        self.unchecked || self.roles.contains(&role)
    }

    pub fn has_any(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.has(*r))
    }

    /// True when the caller may act as user `user_id`: it is that user (a viewer or
    /// creator token for them, possibly presented by a gateway), or auth is off.
    pub fn is_user(&self, user_id: &str) -> bool {
        self.unchecked
            || (self.subject == user_id
                && self.has_any(&[Role::Viewer, Role::Creator, Role::Gateway]))
    }

    /// Service identities are not rate limited: their load is the users' load.
    pub fn is_service(&self) -> bool {
        self.unchecked || self.roles.iter().any(|r| r.is_service())
    }

    /// Who this caller is as the owner of idempotency keys: `service:<subject>` for a
    /// service identity, `user:<subject>` for a person (a gateway acting for a user is that
    /// user), `anonymous` with auth off. Two principals never share a key.
    pub fn principal(&self) -> String {
        if self.unchecked {
            "anonymous".to_owned()
        } else if self.roles.iter().any(|r| r.is_service()) {
            format!("service:{}", self.subject)
        } else {
            format!("user:{}", self.subject)
        }
    }
}
