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

/// A verified caller: who (`subject`), as what (`roles`), and through whom (`actor`, the
/// gateway's id when a gateway acts for a user).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    subject: String,
    roles: Vec<Role>,
    actor: Option<String>,
    unchecked: bool,
}

impl Caller {
    pub fn new(subject: impl Into<String>, roles: Vec<Role>, actor: Option<String>) -> Self {
        Caller {
            subject: subject.into(),
            roles,
            actor,
            unchecked: false,
        }
    }

    /// The caller of a server run with `--insecure-no-auth`: every role, no identity.
    /// Exists for experiments only; the server says so loudly at start.
    pub fn unchecked() -> Self {
        Caller {
            subject: "anonymous".into(),
            roles: Role::ALL.to_vec(),
            actor: None,
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
