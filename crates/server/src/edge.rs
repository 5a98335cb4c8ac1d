//! Proto ↔ domain conversions every service needs at its gRPC edge. Parsing returns the
//! domain type or a [`ovation_types::Violation`] description; never panics.

use ovation_proto::common::Money as ProtoMoney;
use ovation_types::{Money, TimeWindow, UnixMillis, Violations};
use prost_types::Timestamp;

/// A required timestamp field.
pub fn timestamp(ts: Option<&Timestamp>) -> Result<UnixMillis, String> {
    match ts {
        Some(ts) => UnixMillis::from_parts(ts.seconds, ts.nanos),
        None => Err("is required".into()),
    }
}

/// An optional timestamp field: unset is `None`, set must be in range.
pub fn optional_timestamp(ts: Option<&Timestamp>) -> Result<Option<UnixMillis>, String> {
    ts.map(|ts| UnixMillis::from_parts(ts.seconds, ts.nanos))
        .transpose()
}

/// The `start_time` / `end_time` fields of a list request as a [`TimeWindow`], violations
/// into `v` (each must be a valid instant; `end_time` after `start_time`).
pub fn time_window(
    v: &mut Violations,
    start: Option<&Timestamp>,
    end: Option<&Timestamp>,
) -> Option<TimeWindow> {
    let start = v.check("start_time", optional_timestamp(start));
    let end = v.check("end_time", optional_timestamp(end));
    if let (Some(Some(start)), Some(Some(end))) = (start, end)
        && end <= start
    {
        v.add("end_time", "must be after start_time");
        return None;
    }
    Some(TimeWindow {
        start: start?,
        end: end?,
    })
}

pub fn to_timestamp(ms: UnixMillis) -> Timestamp {
    let (seconds, nanos) = ms.to_parts();
    Timestamp { seconds, nanos }
}

/// Parses `field` (a Money message) into `v`, naming sub-fields in violations.
pub fn money(v: &mut Violations, field: &str, m: Option<&ProtoMoney>) -> Option<Money> {
    let Some(m) = m else {
        v.add(field, "is required");
        return None;
    };
    match Money::parse(&m.currency_code, m.amount_minor) {
        Ok(money) => Some(money),
        Err((sub, description)) => {
            v.add(format!("{field}.{sub}"), description);
            None
        }
    }
}

pub fn to_money(m: &Money) -> ProtoMoney {
    ProtoMoney {
        currency_code: m.currency.as_str().to_owned(),
        amount_minor: m.amount_minor(),
    }
}
