//! Bounded strings.

use crate::limits::{ID_CHARS_MAX, IDEMPOTENCY_KEY_CHARS_MAX, NAME_CHARS_MAX, TEXT_CHARS_MAX};

/// An identifier of a user, creator, stream, gift, package, promotion, ...:
/// 1..=64 characters of `[A-Za-z0-9_.:-]`. Safe in URLs, logs and SQL text columns.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId(String);

impl ResourceId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("is required".into());
        }
        if raw.len() > ID_CHARS_MAX {
            return Err(format!("must be at most {ID_CHARS_MAX} characters"));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        {
            return Err("may contain only letters, digits and _ - . :".into());
        }
        Ok(ResourceId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for ResourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: 1..=128 characters, no control characters, not only whitespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.trim().is_empty() {
            return Err("is required and must not be blank".into());
        }
        bounded(raw, NAME_CHARS_MAX)?;
        Ok(Name(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Free text (a message, a reason, a URL): 0..=500 characters, no control characters
/// other than newline and tab.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Text(String);

impl Text {
    pub fn parse(raw: &str) -> Result<Self, String> {
        bounded(raw, TEXT_CHARS_MAX)?;
        Ok(Text(raw.to_owned()))
    }

    /// Like [`Text::parse`], but empty is refused.
    pub fn parse_required(raw: &str) -> Result<Self, String> {
        if raw.trim().is_empty() {
            return Err("is required and must not be blank".into());
        }
        Self::parse(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The reason to journal for an action whose actor is the authenticated caller (`actor`).
/// A request may still name someone (`reported`: the operator a ticket came from, the
/// guardian a user acts for): that is a note on the reason, " (reported by: <name>)", never
/// the actor; naming the caller themself adds nothing. `reported` is a [`Name`] when given;
/// the noted reason must still be [`Text`]. Errors name the `actor` field.
pub fn reason_noting_reported_actor(
    reason: &Text,
    reported: &str,
    actor: &str,
) -> Result<Text, String> {
    if reported.trim().is_empty() || reported == actor {
        return Ok(reason.clone());
    }
    let reported = Name::parse(reported)?;
    let noted = if reason.as_str().is_empty() {
        format!("reported by: {}", reported.as_str())
    } else {
        format!("{} (reported by: {})", reason.as_str(), reported.as_str())
    };
    Text::parse(&noted).map_err(|_| {
        format!(
            "the reason with the note \" (reported by: …)\" must be at most {TEXT_CHARS_MAX} \
             characters"
        )
    })
}

/// The caller's key that makes a mutating request safe to retry (docs/economy.md,
/// "Idempotency keys"): 1..=255 printable ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("is required: every mutating request takes an idempotency key".into());
        }
        if raw.len() > IDEMPOTENCY_KEY_CHARS_MAX {
            return Err(format!(
                "must be at most {IDEMPOTENCY_KEY_CHARS_MAX} characters"
            ));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("may contain only printable ASCII without spaces".into());
        }
        Ok(IdempotencyKey(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn bounded(raw: &str, chars_max: usize) -> Result<(), String> {
    // Count chars lazily: a 4 MB string must not be walked to the end to be refused.
    if raw.chars().nth(chars_max).is_some() {
        return Err(format!("must be at most {chars_max} characters"));
    }
    if raw
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reported_actor_is_a_note_on_the_reason() {
        let reason = Text::parse("chargeback").unwrap();
        let noted = |reason: &Text, reported: &str, actor: &str| {
            reason_noting_reported_actor(reason, reported, actor).map(Text::into_string)
        };
        assert_eq!(noted(&reason, "", "admin-1").unwrap(), "chargeback");
        assert_eq!(noted(&reason, "admin-1", "admin-1").unwrap(), "chargeback");
        assert_eq!(
            noted(&reason, "ops-jane", "admin-1").unwrap(),
            "chargeback (reported by: ops-jane)"
        );
        assert_eq!(
            noted(&Text::default(), "guardian", "rita").unwrap(),
            "reported by: guardian"
        );
        assert!(noted(&reason, &"x".repeat(200), "admin-1").is_err());
        let long = Text::parse(&"r".repeat(TEXT_CHARS_MAX)).unwrap();
        assert!(noted(&long, "ops-jane", "admin-1").is_err());
    }

    #[test]
    fn ids_are_bounded_and_plain() {
        assert!(ResourceId::parse("rose").is_ok());
        assert!(ResourceId::parse("user:42_a-b.c").is_ok());
        assert!(ResourceId::parse("").is_err());
        assert!(ResourceId::parse(&"a".repeat(64)).is_ok());
        assert!(ResourceId::parse(&"a".repeat(65)).is_err());
        assert!(ResourceId::parse("a b").is_err());
        assert!(ResourceId::parse("é").is_err());
    }

    #[test]
    fn names_count_characters_not_bytes() {
        assert!(Name::parse(&"é".repeat(128)).is_ok());
        assert!(Name::parse(&"é".repeat(129)).is_err());
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse("a\u{0}b").is_err());
    }

    #[test]
    fn idempotency_keys() {
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
    }
}
