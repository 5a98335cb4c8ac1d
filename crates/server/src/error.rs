//! [`ApiError`]: the one error type services return from their gRPC layer. It becomes a
//! `tonic::Status` with the right code, a clear message and rich details.

use ovation_proto::reasons;
use ovation_store::StoreError;
use ovation_types::Violation;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// `google.rpc.ErrorInfo.domain` of every Ovation error.
pub const ERROR_DOMAIN: &str = "ovation.dev";

/// An error a caller can act on. `reason` strings are stable UPPER_SNAKE_CASE codes
/// (sent as `google.rpc.ErrorInfo.reason`), named by the constants of
/// [`ovation_proto::reasons`]; messages are for humans.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid credentials (UNAUTHENTICATED). Nothing else in the request was looked at.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials, but not allowed to do this (PERMISSION_DENIED).
    #[error("{0}")]
    PermissionDenied(String),
    /// Bad input: every violated field (INVALID_ARGUMENT + BadRequest).
    #[error("invalid request: {}", join(.0))]
    InvalidArgument(Vec<Violation>),
    /// The thing named does not exist (NOT_FOUND).
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    /// The thing named does not exist, with a contract reason of its own (NOT_FOUND).
    #[error("{message}")]
    NotFoundBecause {
        reason: &'static str,
        message: String,
    },
    /// It exists already, or an idempotency key was reused (ALREADY_EXISTS).
    #[error("{message}")]
    AlreadyExists {
        reason: &'static str,
        message: String,
    },
    /// The system is not in a state that allows this (FAILED_PRECONDITION).
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
    },
    /// A cap or quota is hit (RESOURCE_EXHAUSTED).
    #[error("{message}")]
    ResourceExhausted {
        reason: &'static str,
        message: String,
    },
    /// A concurrent change won; re-read and retry (ABORTED).
    #[error("{message}")]
    Aborted {
        reason: &'static str,
        message: String,
    },
    /// A transient fault; the same request may succeed later (UNAVAILABLE).
    #[error("{message}")]
    Unavailable { message: String },
    /// Our bug. The caller sees a generic message; the details go to the log.
    #[error("internal error: {0}")]
    Internal(String),
}

fn join(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        ApiError::NotFound {
            kind,
            id: id.into(),
        }
    }

    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument(vec![Violation::new(field, description)])
    }

    pub fn failed_precondition(reason: &'static str, message: impl Into<String>) -> Self {
        ApiError::FailedPrecondition {
            reason,
            message: message.into(),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::NotFound { .. } | ApiError::NotFoundBecause { .. } => Code::NotFound,
            ApiError::AlreadyExists { .. } => Code::AlreadyExists,
            ApiError::FailedPrecondition { .. } => Code::FailedPrecondition,
            ApiError::ResourceExhausted { .. } => Code::ResourceExhausted,
            ApiError::Aborted { .. } => Code::Aborted,
            ApiError::Unavailable { .. } => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::PermissionDenied(_) => "PERMISSION_DENIED",
            ApiError::InvalidArgument(_) => "INVALID_ARGUMENT",
            ApiError::NotFound { .. } => "NOT_FOUND",
            ApiError::AlreadyExists { reason, .. }
            | ApiError::NotFoundBecause { reason, .. }
            | ApiError::FailedPrecondition { reason, .. }
            | ApiError::ResourceExhausted { reason, .. }
            | ApiError::Aborted { reason, .. } => reason,
            ApiError::Unavailable { .. } => "UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL",
        }
    }
}

impl From<Vec<Violation>> for ApiError {
    fn from(v: Vec<Violation>) -> Self {
        ApiError::InvalidArgument(v)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(cause) => ApiError::Unavailable {
                message: format!("database unavailable, retry later: {cause}"),
            },
            StoreError::KeyReused => ApiError::AlreadyExists {
                reason: reasons::common::IDEMPOTENCY_KEY_REUSED,
                message: "this idempotency key was already used with different parameters".into(),
            },
            StoreError::KeyInProgress => ApiError::Aborted {
                reason: reasons::common::IDEMPOTENCY_KEY_IN_PROGRESS,
                message: "a request with this idempotency key is still in progress; retry".into(),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = e.code();
        let mut details = ErrorDetails::new();
        let message = match &e {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error; it has been logged".to_owned()
            }
            ApiError::InvalidArgument(violations) => {
                details.set_bad_request(
                    violations
                        .iter()
                        .map(|v| FieldViolation::new(v.field.clone(), v.description.clone()))
                        .collect::<Vec<_>>(),
                );
                e.to_string()
            }
            _ => e.to_string(),
        };
        details.set_error_info(e.reason(), ERROR_DOMAIN, std::collections::HashMap::new());
        Status::with_error_details(code, message, details)
    }
}

/// One item of a batch RPC refused: what the single-item RPC would have answered, as an
/// `ItemError` in the batch's response (the batch itself succeeds).
impl From<ApiError> for ovation_proto::common::ItemError {
    fn from(e: ApiError) -> Self {
        let message = match &e {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error in a batch item");
                "internal error; it has been logged".to_owned()
            }
            _ => e.to_string(),
        };
        ovation_proto::common::ItemError {
            code: i32::from(e.code()),
            reason: e.reason().to_owned(),
            message,
        }
    }
}

/// Refuses a batch RPC's request whose item count is out of bounds (1..=`BATCH_ITEMS_MAX`).
pub fn check_batch_len(items: usize) -> Result<(), ApiError> {
    let max = ovation_types::limits::BATCH_ITEMS_MAX;
    if (1..=max).contains(&items) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "items",
            format!("must hold 1..={max} items, not {items}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_become_bad_request_details() {
        let status: Status = ApiError::InvalidArgument(vec![
            Violation::new("coin_price", "must be greater than 0"),
            Violation::new("name", "is required"),
        ])
        .into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("coin_price"));
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        assert_eq!(bad.field_violations.len(), 2);
        assert_eq!(bad.field_violations[0].field, "coin_price");
        assert_eq!(details.error_info().unwrap().domain, ERROR_DOMAIN);
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status: Status = ApiError::Internal("table gifts is gone".into()).into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("gifts"));
    }

    #[test]
    fn a_batch_item_error_carries_the_single_rpcs_code_and_reason() {
        let item: ovation_proto::common::ItemError =
            ApiError::failed_precondition(reasons::wallet::INSUFFICIENT_COINS, "not enough coins")
                .into();
        assert_eq!(item.code, i32::from(Code::FailedPrecondition));
        assert_eq!(item.reason, "INSUFFICIENT_COINS");
        assert_eq!(item.message, "not enough coins");
        let hidden: ovation_proto::common::ItemError =
            ApiError::Internal("disk on fire".into()).into();
        assert!(!hidden.message.contains("disk"));
        assert!(check_batch_len(0).is_err());
        assert!(check_batch_len(1).is_ok());
        assert!(check_batch_len(ovation_types::limits::BATCH_ITEMS_MAX).is_ok());
        assert!(check_batch_len(ovation_types::limits::BATCH_ITEMS_MAX + 1).is_err());
    }

    #[test]
    fn reused_keys_are_already_exists() {
        let status: Status = ApiError::from(StoreError::KeyReused).into();
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "IDEMPOTENCY_KEY_REUSED"
        );
    }
}
