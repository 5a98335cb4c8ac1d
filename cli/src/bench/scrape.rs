//! RPC counts from the suite's Prometheus endpoints: a plain HTTP/1.1 GET of `/metrics`
//! (the endpoint is plaintext and local; no client library needed) and the
//! `ovation_rpc_requests_total{service,method,code}` samples of its text.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response read from one endpoint.
const SCRAPE_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// The counter scraped (`ovation_metrics::names::RPC_REQUESTS_TOTAL`).
const RPC_REQUESTS_TOTAL: &str = "ovation_rpc_requests_total";

/// RPCs handled, by `service/method` (every code together).
pub type RpcCounts = BTreeMap<String, u64>;

/// `http://host:port/path` → (`host:port`, `/path`).
pub fn split_http_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (!authority.is_empty()).then_some((authority, path))
}

/// The RPC counters of every endpoint, summed (each process counts only the calls it
/// served, so endpoints of separate processes never count one call twice).
pub async fn rpc_counts(urls: &[String]) -> Result<RpcCounts, String> {
    let mut all = RpcCounts::new();
    for url in urls {
        let text = tokio::time::timeout(SCRAPE_TIMEOUT, get(url))
            .await
            .map_err(|_| format!("{url} did not answer in {} s", SCRAPE_TIMEOUT.as_secs()))??;
        for (k, n) in parse_rpc_counts(&text) {
            *all.entry(k).or_default() += n;
        }
    }
    Ok(all)
}

async fn get(url: &str) -> Result<String, String> {
    let (authority, path) =
        split_http_url(url).ok_or_else(|| format!("not an http:// URL: {url}"))?;
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .take(SCRAPE_BYTES_MAX)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    http_body(&raw).map_err(|e| format!("{url}: {e}"))
}

/// The body of a whole HTTP/1.1 response, if its status is 200 (chunked or not).
pub fn http_body(raw: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the response has no end of headers")?;
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("answered {status}"));
    }
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if chunked {
        dechunk(body)
    } else {
        Ok(body.to_owned())
    }
}

fn dechunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size_line, rest) = body.split_once("\r\n").ok_or("a truncated chunk")?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| "a bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("a truncated chunk")?;
        out.push_str(chunk);
        body = rest.get(size..).ok_or("a truncated chunk")?;
        body = body.strip_prefix("\r\n").ok_or("a chunk without its end")?;
    }
}

/// `ovation_rpc_requests_total{service="…",method="…",code="…"} 12` samples, summed over
/// codes by `service/method`.
pub fn parse_rpc_counts(text: &str) -> RpcCounts {
    let mut counts = RpcCounts::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(RPC_REQUESTS_TOTAL) else {
            continue;
        };
        let Some((labels, value)) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) else {
            continue;
        };
        let labels = parse_labels(labels);
        let Some(n) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
        else {
            continue;
        };
        let (Some(service), Some(method)) = (labels.get("service"), labels.get("method")) else {
            continue;
        };
        // Counters are whole numbers; the text may print them as floats.
        *counts.entry(format!("{service}/{method}")).or_default() += n.round() as u64;
    }
    counts
}

/// `a="x",b="y"` → {a: x, b: y} (`\"` and `\\` unescaped).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        if key.is_empty() || chars.next() != Some('"') {
            return labels;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
    }
}

/// After minus before, per key (keys only after count from 0).
pub fn delta(before: &RpcCounts, after: &RpcCounts) -> RpcCounts {
    after
        .iter()
        .map(|(k, &n)| {
            (
                k.clone(),
                n.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|&(_, n)| n > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "# HELP ovation_rpc_requests_total RPCs handled.\n\
# TYPE ovation_rpc_requests_total counter\n\
ovation_rpc_requests_total{service=\"ovation.gifting.v1.GiftingService\",method=\"SendGift\",code=\"OK\"} 2000\n\
ovation_rpc_requests_total{service=\"ovation.gifting.v1.GiftingService\",method=\"SendGift\",code=\"UNAVAILABLE\"} 3\n\
ovation_rpc_requests_total{service=\"ovation.wallet.v1.WalletService\",method=\"DebitCoins\",code=\"OK\"} 2.0e3\n\
ovation_rpc_requests_total{service=\"we\\\"ird\",method=\"M\",code=\"OK\"} 1\n\
ovation_rpc_duration_seconds_count{service=\"ovation.wallet.v1.WalletService\",method=\"DebitCoins\"} 2000\n\
ovation_rpc_requests_total{code=\"OK\"} 5\n\
# EOF\n";

    #[test]
    fn rpc_counters_are_summed_over_codes_by_method() {
        let counts = parse_rpc_counts(EXPOSITION);
        assert_eq!(
            counts.get("ovation.gifting.v1.GiftingService/SendGift"),
            Some(&2_003)
        );
        assert_eq!(
            counts.get("ovation.wallet.v1.WalletService/DebitCoins"),
            Some(&2_000)
        );
        assert_eq!(counts.get("we\"ird/M"), Some(&1));
        assert_eq!(counts.len(), 3);

        let mut before = counts.clone();
        before.insert("ovation.wallet.v1.WalletService/DebitCoins".into(), 500);
        let d = delta(&before, &counts);
        assert_eq!(
            d.get("ovation.wallet.v1.WalletService/DebitCoins"),
            Some(&1_500)
        );
        assert!(!d.contains_key("ovation.gifting.v1.GiftingService/SendGift"));
    }

    #[test]
    fn http_responses_plain_and_chunked() {
        assert_eq!(
            split_http_url("http://127.0.0.1:9464/metrics"),
            Some(("127.0.0.1:9464", "/metrics"))
        );
        assert_eq!(split_http_url("http://h:1"), Some(("h:1", "/")));
        assert_eq!(split_http_url("https://h:1/x"), None);
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(http_body(plain).unwrap(), "hello");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        assert_eq!(http_body(chunked).unwrap(), "hello world");
        let missing = b"HTTP/1.1 404 Not Found\r\n\r\n";
        assert!(http_body(missing).unwrap_err().contains("404"));
        assert!(
            http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel").is_err()
        );
    }
}
