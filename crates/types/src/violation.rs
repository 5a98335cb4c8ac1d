use std::fmt;

/// One broken rule on one input field: what `google.rpc.BadRequest.FieldViolation` carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The request field, as named in the .proto (`gift_id`, `prices[1].amount_minor`).
    pub field: String,
    /// What is wrong, for a human.
    pub description: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Violation {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Collects every violation of a request, so the caller learns of all bad fields at once.
///
/// ```
/// use ovation_types::{Name, ResourceId, Violations};
/// let mut v = Violations::default();
/// let id = v.check("gift_id", ResourceId::parse("rose"));
/// let name = v.check("name", Name::parse(""));
/// let parsed = v.finish(|| Some((id?, name?)));
/// assert_eq!(parsed.unwrap_err().len(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// Records the error of `parsed` against `field`; returns the value when it parsed.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(description) => {
                self.0.push(Violation::new(field, description));
                None
            }
        }
    }

    /// The reason to journal for an action by the authenticated `actor`, from a request's
    /// `reason` (already parsed) and optional `actor` field (`reported`), which is only ever
    /// a note ([`crate::reason_noting_reported_actor`]). Both fields are checked, so one
    /// answer names every bad field.
    pub fn noted_reason(
        &mut self,
        reason: Result<crate::Text, String>,
        reported: &str,
        actor: &str,
    ) -> Option<crate::Text> {
        let reported_ok = reported.trim().is_empty()
            || self.check("actor", crate::Name::parse(reported)).is_some();
        let reason = self.check("reason", reason)?;
        if !reported_ok {
            return None;
        }
        self.check(
            "actor",
            crate::reason_noting_reported_actor(&reason, reported, actor),
        )
    }

    /// Records a violation that is not about parsing one value (e.g. a cross-field rule).
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation::new(field, description));
    }

    /// `Ok(build())` when nothing was violated, else every violation. `build` sees only
    /// `Some` values when there is no violation, so its `?`s never fire in practice; if one
    /// did, that is reported as a violation rather than a panic.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, Vec<Violation>> {
        if !self.0.is_empty() {
            return Err(self.0);
        }
        build().ok_or_else(|| vec![Violation::new("", "request could not be parsed")])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A request parsed into a domain value, or every field it violates.
pub type Parsed<T> = Result<T, Vec<Violation>>;

impl From<Violations> for Vec<Violation> {
    fn from(v: Violations) -> Self {
        v.0
    }
}
