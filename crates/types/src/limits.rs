//! Every bound on input, in one place (documented in docs/limits.md). Units are in the names.

/// Longest id (user, creator, stream, gift, package, ...), in characters.
pub const ID_CHARS_MAX: usize = 64;
/// Longest display name, in characters.
pub const NAME_CHARS_MAX: usize = 128;
/// Longest free text (messages, reasons, URLs), in characters.
pub const TEXT_CHARS_MAX: usize = 500;
/// Longest idempotency key, in characters.
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 255;
/// Page size used when a request leaves it at 0.
pub const PAGE_SIZE_DEFAULT: u32 = 50;
/// Largest page size a request may ask for.
pub const PAGE_SIZE_MAX: u32 = 500;
/// Largest amount of coins or diamonds in one operation.
pub const AMOUNT_MAX: i64 = 1_000_000_000_000;
/// Largest money amount in minor units in one operation (10^13 cents = 100 billion USD).
pub const MONEY_MINOR_MAX: i64 = 10_000_000_000_000;
/// Basis points in a whole (100 %).
pub const BPS_WHOLE: i32 = 10_000;
/// Largest quantity of one gift in one send.
pub const GIFT_QUANTITY_MAX: i32 = 99;
/// Longest page token, in characters (tokens are ours; anything longer is forged).
pub const PAGE_TOKEN_CHARS_MAX: usize = 256;
/// Most items in one batch RPC (DebitCoinsBatch, CreditDiamondsBatch).
pub const BATCH_ITEMS_MAX: usize = 256;
