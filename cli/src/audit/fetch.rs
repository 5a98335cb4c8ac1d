//! The audit's reads from a live suite: admin gRPC calls to wallet, payout and gifting
//! (no database is touched), in pages of 500 (see the module doc of `audit`).

use std::collections::HashSet;
use std::error::Error;
use std::ops::ControlFlow;

use futures::StreamExt;
use ovation_proto::gifting::gifting_service_client::GiftingServiceClient;
use ovation_proto::payout::payout_service_client::PayoutServiceClient;
use ovation_proto::wallet::wallet_service_client::WalletServiceClient;
use ovation_proto::{gifting as gpb, payout as ppb, wallet as wpb};
use ovation_server::edge::to_timestamp;
use ovation_types::UnixMillis;
use prost_types::Timestamp;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::Addresses;
use super::checks::LedgerSummary;
use super::clawbacks::{ClawbackEvidence, CreatorFacts};
use super::facts::{CreditFacts, DebitFacts, Facts, SagaFacts};
use super::report::Report;
use super::window::{MILLIS_MAX, Window};

const PAGE: i32 = 500;
/// Most operation ids one ListDebits or ListCredits by id may name.
const IDS_PER_CALL: usize = 500;
/// Sagas looked up by id at once.
const LOOKUPS_IN_FLIGHT: usize = 16;

/// Puts the admin token on every call.
#[derive(Clone)]
struct Admin(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Admin {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

type Wallet = WalletServiceClient<InterceptedService<Channel, Admin>>;
type Payout = PayoutServiceClient<InterceptedService<Channel, Admin>>;
type Gifting = GiftingServiceClient<InterceptedService<Channel, Admin>>;

async fn channel(url: &str) -> Result<Channel, Box<dyn Error>> {
    Ok(Channel::from_shared(url.to_owned())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?)
}

/// The three services the audit reads, as an admin.
pub struct Suite {
    wallet: Wallet,
    payout: Payout,
    gifting: Gifting,
}

impl Suite {
    pub async fn connect(addresses: &Addresses, token: &str) -> Result<Suite, Box<dyn Error>> {
        let admin = Admin(format!("Bearer {token}").parse()?);
        let wallet = channel(&addresses.wallet_url).await?;
        let payout = channel(&addresses.payout_url).await?;
        let gifting = channel(&addresses.gifting_url).await?;
        Ok(Suite {
            wallet: WalletServiceClient::with_interceptor(wallet, admin.clone()),
            payout: PayoutServiceClient::with_interceptor(payout, admin.clone()),
            gifting: GiftingServiceClient::with_interceptor(gifting, admin),
        })
    }

    /// Both ledgers' summaries (I1, I2 cover them whole): wallet's coins, payout's diamonds;
    /// and payout's per-creator figures (I6).
    pub async fn ledgers(&self) -> Result<([LedgerSummary; 2], CreatorFacts), tonic::Status> {
        let coins = (self.wallet.clone())
            .get_ledger_summary(wpb::GetLedgerSummaryRequest {})
            .await?
            .into_inner();
        let diamonds = (self.payout.clone())
            .get_ledger_summary(ppb::GetLedgerSummaryRequest {})
            .await?
            .into_inner();
        let creators = CreatorFacts::from(&diamonds);
        Ok(([coins.into(), diamonds.into()], creators))
    }

    /// What I6 is judged on, read whole: payout's clawbacks, wallet's clawback orders, and
    /// the credits they name (by id).
    pub async fn clawback_evidence(
        &self,
        creators: CreatorFacts,
        report: &mut Report,
    ) -> Result<ClawbackEvidence, tonic::Status> {
        let mut evidence = ClawbackEvidence {
            creators,
            ..ClawbackEvidence::default()
        };
        let page = |page_token: String| {
            let mut payout = self.payout.clone();
            async move {
                let request = ppb::ListClawbacksRequest {
                    page_size: PAGE,
                    page_token,
                    ..Default::default()
                };
                let page = payout.list_clawbacks(request).await?.into_inner();
                Ok::<_, tonic::Status>((page.clawbacks, page.next_page_token))
            }
        };
        page_through(page, |c: ppb::Clawback| {
            evidence.clawbacks.push(c.into());
            ControlFlow::Continue(())
        })
        .await?;
        let page = |page_token: String| {
            let mut wallet = self.wallet.clone();
            async move {
                let request = wpb::ListClawbackOrdersRequest {
                    page_size: PAGE,
                    page_token,
                    ..Default::default()
                };
                let page = wallet.list_clawback_orders(request).await?.into_inner();
                Ok::<_, tonic::Status>((page.orders, page.next_page_token))
            }
        };
        page_through(page, |o: wpb::ClawbackOrder| {
            evidence.orders.push(o.into());
            ControlFlow::Continue(())
        })
        .await?;
        let credits = by_ids(&self.payout, &evidence.credits_needed()).await?;
        evidence.credits = credits
            .into_iter()
            .map(|c| (c.operation_id.clone(), c))
            .collect();
        report.notes.push(format!(
            "read {} clawbacks and {} clawback orders (whole, not by window)",
            evidence.clawbacks.len(),
            evidence.orders.len()
        ));
        Ok(evidence)
    }

    /// What `window` is judged on: its sagas, the debits and credits read around it, and
    /// those looked up by id; notes what was read.
    pub async fn facts(
        &self,
        window: &Window,
        report: &mut Report,
    ) -> Result<Facts, tonic::Status> {
        let (sagas, skipped_sagas) = self.window_sagas(window).await?;
        // Wallet filters debits by time: it sends none before the read range.
        let (debits, _) = read_around(&self.wallet, window).await?;
        let (credits, skipped_credits) = read_around(&self.payout, window).await?;
        let mut facts = Facts {
            sagas,
            debits,
            credits,
            sagas_elsewhere: HashSet::new(),
        };
        report.notes.push(format!(
            "read {} sagas, {} debits, {} credits",
            facts.sagas.len(),
            facts.debits.len(),
            facts.credits.len()
        ));
        if skipped_sagas + skipped_credits > 0 {
            report.notes.push(format!(
                "paged past {skipped_sagas} sagas and {skipped_credits} credits created before the \
                 window (ListSagas and ListCredits have no time filter yet)"
            ));
        }
        self.look_up_unmatched(window, &mut facts, report).await?;
        Ok(facts)
    }

    /// The window's sagas, oldest first; and how many before it were paged past (gifting
    /// filters by creation time, an older gifting ignores the filter: the check here
    /// still holds).
    async fn window_sagas(&self, window: &Window) -> Result<(Vec<SagaFacts>, u64), tonic::Status> {
        let (start_time, end_time) = time_filter(window.since, window.until);
        let (mut sagas, mut skipped) = (Vec::new(), 0);
        let page = |page_token: String| {
            let mut gifting = self.gifting.clone();
            async move {
                let request = gpb::ListSagasRequest {
                    statuses: vec![],
                    page_size: PAGE,
                    page_token,
                    start_time,
                    end_time,
                };
                let page = gifting.list_sagas(request).await?.into_inner();
                Ok::<_, tonic::Status>((page.sagas, page.next_page_token))
            }
        };
        page_through(page, |saga: gpb::Saga| {
            let saga = SagaFacts::from(saga.receipt.unwrap_or_default());
            if window.until.is_some_and(|u| saga.created_at_ms >= u) {
                return ControlFlow::Break(());
            }
            if window.contains(saga.created_at_ms) {
                sagas.push(saga);
            } else {
                skipped += 1;
            }
            ControlFlow::Continue(())
        })
        .await?;
        Ok((sagas, skipped))
    }

    /// Lookups by id: the window's sagas whose debit or credit came after the slack (only
    /// a bounded read can miss them), and the sagas of strays created in the window.
    async fn look_up_unmatched(
        &self,
        window: &Window,
        facts: &mut Facts,
        report: &mut Report,
    ) -> Result<(), tonic::Status> {
        let unmatched = facts.unmatched(window);
        if !window.is_everything() {
            let debits = by_ids(&self.wallet, &unmatched.sagas_without_debit).await?;
            let credits = by_ids(&self.payout, &unmatched.sagas_without_credit).await?;
            if debits.len() + credits.len() > 0 {
                report.notes.push(format!(
                    "{} debits and {} credits of the window's sagas came after the slack \
                     (read by id)",
                    debits.len(),
                    credits.len()
                ));
            }
            facts.debits.extend(debits);
            facts.credits.extend(credits);
        }
        facts.sagas_elsewhere = self.sagas_known(unmatched.strays).await?;
        Ok(())
    }

    /// Which of `ids` are sagas gifting knows (by id, a few at once).
    async fn sagas_known(&self, ids: Vec<String>) -> Result<HashSet<String>, tonic::Status> {
        let answers: Vec<Result<Option<String>, tonic::Status>> = futures::stream::iter(ids)
            .map(|saga_id| {
                let mut gifting = self.gifting.clone();
                async move {
                    let request = gpb::GetSentGiftRequest {
                        saga_id: saga_id.clone(),
                    };
                    match gifting.get_sent_gift(request).await {
                        Ok(_) => Ok(Some(saga_id)),
                        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
                        Err(status) => Err(status),
                    }
                }
            })
            .buffer_unordered(LOOKUPS_IN_FLIGHT)
            .collect()
            .await;
        let mut known = HashSet::new();
        for answer in answers {
            if let Some(id) = answer? {
                known.insert(id);
            }
        }
        Ok(known)
    }
}

/// `[from, until)` as a listing's time filter; the services take 1970 to 9999, so a bound
/// beyond is clamped or left out (the client-side filter still holds).
fn time_filter(from: Option<i64>, until: Option<i64>) -> (Option<Timestamp>, Option<Timestamp>) {
    (
        from.map(|t| to_timestamp(UnixMillis(t.max(0)))),
        until
            .filter(|t| *t <= MILLIS_MAX)
            .map(|t| to_timestamp(UnixMillis(t))),
    )
}

/// One page of a listing: its rows and the token of the next page (empty after the last).
type Page<T> = (Vec<T>, String);

/// Reads a listing page by page from the first, handing each row to `row` until it
/// breaks or the pages end.
async fn page_through<T, Fut>(
    mut page: impl FnMut(String) -> Fut,
    mut row: impl FnMut(T) -> ControlFlow<()>,
) -> Result<(), tonic::Status>
where
    Fut: Future<Output = Result<Page<T>, tonic::Status>>,
{
    let mut token = String::new();
    loop {
        let (rows, next) = page(token).await?;
        for r in rows {
            if row(r).is_break() {
                return Ok(());
            }
        }
        if next.is_empty() {
            return Ok(());
        }
        token = next;
    }
}

/// One ListDebits or ListCredits call: a page between two instants, or operation ids.
#[derive(Default)]
struct PostingQuery {
    operation_ids: Vec<String>,
    page_size: i32,
    page_token: String,
    start_time: Option<Timestamp>,
    end_time: Option<Timestamp>,
}

/// Wallet's debits and payout's credits, which list alike: the postings of the gift sagas,
/// by time or by operation id (= saga id).
trait Postings {
    type Posting;
    fn list(
        &self,
        query: PostingQuery,
    ) -> impl Future<Output = Result<Page<Self::Posting>, tonic::Status>>;
    /// When the service posted it (Unix ms).
    fn created_at_ms(posting: &Self::Posting) -> i64;
}

impl Postings for Wallet {
    type Posting = DebitFacts;

    async fn list(&self, q: PostingQuery) -> Result<Page<DebitFacts>, tonic::Status> {
        let request = wpb::ListDebitsRequest {
            operation_ids: q.operation_ids,
            page_size: q.page_size,
            page_token: q.page_token,
            start_time: q.start_time,
            end_time: q.end_time,
        };
        let page = self.clone().list_debits(request).await?.into_inner();
        let debits = page.debits.into_iter().map(DebitFacts::from).collect();
        Ok((debits, page.next_page_token))
    }

    fn created_at_ms(debit: &DebitFacts) -> i64 {
        debit.created_at_ms
    }
}

impl Postings for Payout {
    type Posting = CreditFacts;

    async fn list(&self, q: PostingQuery) -> Result<Page<CreditFacts>, tonic::Status> {
        let request = ppb::ListCreditsRequest {
            operation_ids: q.operation_ids,
            page_size: q.page_size,
            page_token: q.page_token,
            start_time: q.start_time,
            end_time: q.end_time,
        };
        let page = self.clone().list_credits(request).await?.into_inner();
        let credits = page.credits.into_iter().map(CreditFacts::from).collect();
        Ok((credits, page.next_page_token))
    }

    fn created_at_ms(credit: &CreditFacts) -> i64 {
        credit.created_at_ms
    }
}

/// The postings created in the window's read range (`[since − slack, until + slack)`),
/// oldest first, stopping at the first one after it; and how many before it were paged
/// past (a service that ignores the time filter sends them).
async fn read_around<P: Postings>(
    postings: &P,
    window: &Window,
) -> Result<(Vec<P::Posting>, u64), tonic::Status> {
    let (start_time, end_time) = time_filter(window.read_from(), window.read_until());
    let (mut kept, mut skipped) = (Vec::new(), 0);
    let page = move |page_token: String| {
        postings.list(PostingQuery {
            page_size: PAGE,
            page_token,
            start_time,
            end_time,
            ..PostingQuery::default()
        })
    };
    page_through(page, |posting| {
        let at = P::created_at_ms(&posting);
        if window.read_until().is_some_and(|u| at >= u) {
            return ControlFlow::Break(());
        }
        if window.reads(at) {
            kept.push(posting);
        } else {
            skipped += 1;
        }
        ControlFlow::Continue(())
    })
    .await?;
    Ok((kept, skipped))
}

/// The postings of `operation_ids`, read by id, a bounded number per call.
async fn by_ids<P: Postings>(
    postings: &P,
    operation_ids: &[String],
) -> Result<Vec<P::Posting>, tonic::Status> {
    let mut found = Vec::new();
    for ids in operation_ids.chunks(IDS_PER_CALL) {
        let query = PostingQuery {
            operation_ids: ids.to_vec(),
            ..PostingQuery::default()
        };
        let (page, _) = postings.list(query).await?;
        found.extend(page);
    }
    Ok(found)
}
