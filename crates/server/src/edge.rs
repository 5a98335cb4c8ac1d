//! Proto ↔ domain conversions every service needs at its gRPC edge. Parsing returns the
//! domain type or a [`ovation_types::Violation`] description; never panics.

use ovation_proto::common::Money as ProtoMoney;
use std::time::Duration;

use ovation_types::{
    IdempotencyKey, Money, Parsed, ResourceId, TimeWindow, UnixMillis, Violations,
};
use prost_types::Timestamp;

use crate::ApiError;

/// The `idempotency_key` field every mutating request carries.
pub fn idempotency_key(v: &mut Violations, raw: &str) -> Option<IdempotencyKey> {
    v.check("idempotency_key", IdempotencyKey::parse(raw))
}

/// A mutating request's key and command, or every violation collected in `v`.
pub fn keyed<C>(
    v: Violations,
    key: Option<IdempotencyKey>,
    build: impl FnOnce() -> Option<C>,
) -> Parsed<(IdempotencyKey, C)> {
    v.finish(|| Some((key?, build()?)))
}

/// An id field that may be empty (proto3 strings cannot be unset): empty is `None`.
pub fn optional_id(raw: &str) -> Result<Option<ResourceId>, String> {
    if raw.is_empty() {
        Ok(None)
    } else {
        ResourceId::parse(raw).map(Some)
    }
}

/// The deadline an incoming call carries (`grpc-timeout`: at most 8 digits and a unit, as
/// the gRPC HTTP/2 protocol defines it), if any.
pub fn incoming_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3_600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_timeout_is_read_in_its_unit() {
        let deadline = |raw: &str| {
            let mut metadata = tonic::metadata::MetadataMap::new();
            metadata.insert("grpc-timeout", raw.parse().expect("ascii"));
            incoming_deadline(&metadata)
        };
        assert_eq!(deadline("1500m"), Some(Duration::from_millis(1_500)));
        assert_eq!(deadline("2S"), Some(Duration::from_secs(2)));
        assert_eq!(deadline("3x"), None);
        assert_eq!(deadline("bogus"), None);
        assert_eq!(deadline("123456789m"), None, "more than 8 digits");
        assert_eq!(
            incoming_deadline(&tonic::metadata::MetadataMap::new()),
            None
        );
    }
}

/// A batch RPC's items answered in the request's order: each item as parsed (a malformed
/// one is answered with its own INVALID_ARGUMENT), the well-formed ones run together by
/// `run`, whose answers (one per item it was given, in order) are put back in place.
/// `Err` only when the batch as a whole failed (nothing was applied).
pub async fn answer_batch<C, T, E, Fut>(
    parsed: Vec<Parsed<C>>,
    run: impl FnOnce(Vec<C>) -> Fut,
) -> Result<Vec<Result<T, ApiError>>, ApiError>
where
    Fut: std::future::Future<Output = Result<Vec<Result<T, E>>, ApiError>>,
    ApiError: From<E>,
{
    let mut well_formed = Vec::with_capacity(parsed.len());
    let mut slots = Vec::with_capacity(parsed.len());
    for item in parsed {
        match item {
            Ok(cmd) => {
                well_formed.push(cmd);
                slots.push(None);
            }
            Err(violations) => slots.push(Some(ApiError::InvalidArgument(violations))),
        }
    }
    let mut answers = if well_formed.is_empty() {
        Vec::new()
    } else {
        run(well_formed).await?
    }
    .into_iter();
    Ok(slots
        .into_iter()
        .map(|slot| match slot {
            Some(refused) => Err(refused),
            None => match answers.next() {
                Some(answer) => answer.map_err(ApiError::from),
                None => Err(ApiError::Internal(
                    "a batch answered fewer items than it was given".into(),
                )),
            },
        })
        .collect())
}

#[cfg(test)]
mod batch_tests {
    use ovation_types::Violation;

    use super::*;

    #[tokio::test]
    async fn malformed_items_are_answered_in_place_and_the_rest_run_together() {
        let parsed: Vec<Parsed<u32>> = vec![
            Ok(1),
            Err(vec![Violation::new("items[1].coins", "must be > 0")]),
            Ok(3),
        ];
        let answers = answer_batch(parsed, |cmds: Vec<u32>| async move {
            assert_eq!(cmds, vec![1, 3], "only the well-formed items run");
            Ok::<_, ApiError>(cmds.into_iter().map(Ok::<u32, ApiError>).collect())
        })
        .await
        .unwrap();
        assert_eq!(answers.len(), 3);
        assert_eq!(answers[0].as_ref().unwrap(), &1);
        assert_eq!(
            answers[1].as_ref().unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(answers[2].as_ref().unwrap(), &3);

        let short = answer_batch(vec![Ok(1u32), Ok(2)], |_cmds: Vec<u32>| async {
            Ok::<_, ApiError>(vec![Ok::<u32, ApiError>(1)])
        })
        .await
        .unwrap();
        assert_eq!(short[1].as_ref().unwrap_err().code(), tonic::Code::Internal);
    }
}
