//! The envelope every Stripe event shares.
//!
//! Stripe sends `{"id": "evt_…", "object": "event", "type": "payment_intent.succeeded",
//! "created": <unix secs>, "livemode": false, "data": {"object": {…}}, …}`; `data.object`
//! is the API object the event is about (a PaymentIntent, a Charge, a Dispute, a
//! Transfer, …), read by the service that handles the type.

use serde::Deserialize;

/// A Stripe event: its id (the key of exactly-once application), its type and the object.
#[derive(Clone, Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub livemode: bool,
    /// The connected account an event of a Connect webhook endpoint is about (`acct_…`);
    /// `None` for the platform's own events.
    #[serde(default)]
    pub account: Option<String>,
    pub data: EventData,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

impl Event {
    /// Parses a raw (already verified) body.
    pub fn parse(body: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// A string field of `data.object` (e.g. `"id"`, `"payment_intent"`), if present.
    pub fn object_str(&self, field: &str) -> Option<&str> {
        self.data.object.get(field).and_then(|v| v.as_str())
    }

    /// A string in `data.object.metadata` (e.g. the `purchase_id` we put on an intent).
    pub fn object_metadata(&self, key: &str) -> Option<&str> {
        self.data
            .object
            .get("metadata")
            .and_then(|m| m.get(key))
            .and_then(|v| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_envelope_and_reads_the_object() {
        let body = br#"{"id":"evt_1","object":"event","type":"payment_intent.succeeded","created":1700000000,"livemode":false,
            "data":{"object":{"id":"pi_1","object":"payment_intent","metadata":{"purchase_id":"p-1"}}}}"#;
        let event = Event::parse(body).unwrap();
        assert_eq!(event.id, "evt_1");
        assert_eq!(event.event_type, "payment_intent.succeeded");
        assert_eq!(event.object_str("id"), Some("pi_1"));
        assert_eq!(event.object_metadata("purchase_id"), Some("p-1"));
        assert_eq!(event.object_metadata("other"), None);
    }

    #[test]
    fn refuses_a_body_without_an_id() {
        assert!(Event::parse(br#"{"type":"x","data":{"object":{}}}"#).is_err());
        assert!(Event::parse(b"not json").is_err());
    }
}
