//! What an answer says, read the way tests compare it: its code, a refusal's reason and the
//! fields it names.

use tonic::Code;
use tonic_types::StatusExt;

/// The code of an answer: `Ok` for a success.
pub fn code<T>(answer: Result<T, tonic::Status>) -> Code {
    match answer {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// The ErrorInfo reason of a refusal ("" if it has none).
pub fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// The fields a refusal's BadRequest names, in its order (none without a BadRequest).
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}
