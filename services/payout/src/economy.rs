//! The payout rate and minimum, the diamond maturity and the payout controls (daily cap,
//! review threshold, account cooling-off), read from the catalog
//! (`GetEconomyParameters`) as `service:payout`, with this service's identity, the trace
//! context and a deadline on every call (`ovation_server::peer::Outbound`). Read at every
//! payout request, clawback and balance read, not cached: the rate is fixed at request
//! time and recorded with its economy version, maturity is judged by the current version,
//! and these calls are rare enough that a read each costs nothing. Credits never read it
//! (the gift's hot path gains no catalog call): a credit records its time, and maturity is
//! judged when diamonds are read or moved.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use ovation_proto::catalog as catalog_pb;
use ovation_proto::catalog::catalog_service_client::CatalogServiceClient;
use ovation_proto::reasons;
use ovation_server::ApiError;
use ovation_server::peer::{Outbound, PeerAddress, PeerError, ServiceIdentity, channel};
use ovation_types::{Diamonds, Money};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::domain::{Maturity, PayoutControls, PayoutRate};

/// The economy as payout uses it: the rate a payout is priced at, how long credited
/// diamonds stay pending, and the controls a payout request passes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EconomyTerms {
    pub rate: PayoutRate,
    pub maturity: Maturity,
    pub controls: PayoutControls,
}

/// Longest one catalog read may take (the request's own deadline may be shorter).
pub const CATALOG_DEADLINE: Duration = Duration::from_secs(5);

/// Reads the payout economy from the catalog.
#[derive(Clone, Debug)]
pub struct Economy {
    client: CatalogServiceClient<InterceptedService<Channel, Outbound>>,
    /// The diamond maturity last read (hours; -1 before the first read): what balance
    /// reads and clawbacks go on with while the catalog is unreachable.
    last_maturity_hours: Arc<AtomicI64>,
}

impl Economy {
    /// A lazily connecting client: a catalog down at start-up is retried per call.
    pub fn connect(
        catalog: &PeerAddress,
        identity: Arc<ServiceIdentity>,
    ) -> Result<Self, PeerError> {
        Ok(Economy {
            client: CatalogServiceClient::with_interceptor(
                channel(catalog)?,
                Outbound::new(identity),
            ),
            last_maturity_hours: Arc::new(AtomicI64::new(-1)),
        })
    }

    /// The current diamond maturity; while the catalog cannot be read, the one last read
    /// (maturity changes rarely, and only moves when diamonds become cashable, which a
    /// payout request, reading the catalog itself, judges again). UNAVAILABLE if it was
    /// never read.
    pub async fn maturity(&self, left: Option<Duration>) -> Result<Maturity, ApiError> {
        match self.terms(left).await {
            Ok(terms) => Ok(terms.maturity),
            Err(e) => {
                let last = self.last_maturity_hours.load(Ordering::Relaxed);
                match Maturity::hours(last) {
                    Ok(maturity) if last >= 0 => {
                        tracing::warn!(error = %e, hours = last,
                            "catalog unreadable: judging maturity by the last value read");
                        Ok(maturity)
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// The latest payout rate, minimum and diamond maturity, within `left` (the incoming
    /// request's own deadline, if it set one) and never longer than [`CATALOG_DEADLINE`].
    pub async fn terms(&self, left: Option<Duration>) -> Result<EconomyTerms, ApiError> {
        let mut request =
            tonic::Request::new(catalog_pb::GetEconomyParametersRequest { version: 0 });
        request.set_timeout(left.map_or(CATALOG_DEADLINE, |l| l.min(CATALOG_DEADLINE)));
        let reply = self
            .client
            .clone()
            .get_economy_parameters(request)
            .await
            .map_err(catalog_error)?;
        let economy = reply
            .into_inner()
            .economy_parameters
            .ok_or_else(|| ApiError::Internal("catalog returned no economy parameters".into()))?;
        let terms = terms_from(&economy).map_err(|e| {
            ApiError::Internal(format!("catalog economy parameters are invalid: {e}"))
        })?;
        self.last_maturity_hours
            .store(terms.maturity.get_hours(), Ordering::Relaxed);
        Ok(terms)
    }
}

fn terms_from(e: &catalog_pb::EconomyParameters) -> Result<EconomyTerms, String> {
    Ok(EconomyTerms {
        rate: rate_from(e)?,
        maturity: Maturity::hours(i64::from(e.diamond_maturity_hours))?,
        // A catalog older than the controls sends 0s: no cap, no review, no cooling-off.
        controls: PayoutControls::parse(
            e.payout_daily_cap_diamonds,
            e.payout_review_threshold_diamonds,
            i64::from(e.payout_account_cooling_off_hours),
        )?,
    })
}

fn rate_from(e: &catalog_pb::EconomyParameters) -> Result<PayoutRate, String> {
    let per_unit = e.payout_per_unit.as_ref().ok_or("no payout_per_unit")?;
    if e.version < 1 {
        return Err(format!("version {} is not a version", e.version));
    }
    Ok(PayoutRate {
        economy_version: e.version,
        per_unit: Money::parse(&per_unit.currency_code, per_unit.amount_minor)
            .map_err(|(field, e)| format!("payout_per_unit.{field}: {e}"))?,
        diamonds_per_unit: Diamonds::parse(e.diamonds_per_payout_unit)
            .map_err(|e| format!("diamonds_per_payout_unit: {e}"))?,
        minimum: Diamonds::parse(e.payout_minimum_diamonds)
            .map_err(|e| format!("payout_minimum_diamonds: {e}"))?,
    })
}

/// A failed catalog read, as the caller of RequestPayout sees it: transient faults are
/// UNAVAILABLE (retry with the same key), an unconfigured economy is FAILED_PRECONDITION,
/// anything else is our misconfiguration (INTERNAL, logged).
fn catalog_error(status: tonic::Status) -> ApiError {
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Cancelled
        | Code::Unknown => ApiError::Unavailable {
            message: format!(
                "the catalog (payout rate) is unavailable, retry later: {}",
                status.message()
            ),
        },
        Code::FailedPrecondition | Code::NotFound => ApiError::failed_precondition(
            reasons::payout::ECONOMY_NOT_CONFIGURED,
            format!("the catalog has no payout rate: {}", status.message()),
        ),
        _ => ApiError::Internal(format!(
            "catalog refused GetEconomyParameters ({:?}): {}",
            status.code(),
            status.message()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovation_proto::common::Money as ProtoMoney;

    #[test]
    fn economy_parameters_become_a_rate() {
        let mut e = catalog_pb::EconomyParameters {
            version: 2,
            creator_share_bps: 5_000,
            payout_per_unit: Some(ProtoMoney {
                currency_code: "USD".into(),
                amount_minor: 500,
            }),
            diamonds_per_payout_unit: 1_000,
            payout_minimum_diamonds: 1_000,
            diamond_maturity_hours: 72,
            create_time: None,
            payout_daily_cap_diamonds: 100_000,
            payout_review_threshold_diamonds: 0,
            payout_account_cooling_off_hours: 48,
        };
        let terms = terms_from(&e).unwrap();
        assert_eq!(terms.rate.economy_version, 2);
        assert_eq!(terms.rate.per_unit.amount_minor(), 500);
        assert_eq!(terms.maturity.get_hours(), 72);
        assert_eq!(terms.controls.daily_cap.map(|d| d.get()), Some(100_000));
        assert_eq!(terms.controls.review_threshold, None, "0: never reviewed");
        assert_eq!(terms.controls.cooling_off.get_hours(), 48);
        e.payout_account_cooling_off_hours = 8_761;
        assert!(terms_from(&e).is_err());
        e.payout_account_cooling_off_hours = 0;
        e.payout_daily_cap_diamonds = -1;
        assert!(terms_from(&e).is_err());
        e.payout_daily_cap_diamonds = 0;
        e.diamond_maturity_hours = 8_761;
        assert!(terms_from(&e).is_err());
        e.diamond_maturity_hours = 0;
        e.diamonds_per_payout_unit = 0;
        assert!(terms_from(&e).is_err());
    }

    #[test]
    fn transient_catalog_faults_are_unavailable() {
        assert_eq!(
            catalog_error(tonic::Status::unavailable("down")).code(),
            Code::Unavailable
        );
        assert_eq!(
            catalog_error(tonic::Status::failed_precondition("none")).code(),
            Code::FailedPrecondition
        );
        assert_eq!(
            catalog_error(tonic::Status::permission_denied("no")).code(),
            Code::Internal
        );
    }
}
