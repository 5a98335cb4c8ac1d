//! Pagination: bounded page sizes and opaque page tokens.

use crate::limits::{PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, PAGE_TOKEN_CHARS_MAX};

/// A page size: 0 in a request means the default (50); at most 500.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSize(u32);

impl PageSize {
    pub fn parse(raw: i32) -> Result<Self, String> {
        match raw {
            0 => Ok(PageSize(PAGE_SIZE_DEFAULT)),
            n if n < 0 => Err("must not be negative".into()),
            n if n as u32 > PAGE_SIZE_MAX => Err(format!("must be at most {PAGE_SIZE_MAX}")),
            n => Ok(PageSize(n as u32)),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// Rows to fetch: one more than the page, to learn whether a next page exists.
    pub fn fetch_limit(self) -> i64 {
        i64::from(self.0) + 1
    }

    /// Cuts rows fetched with [`PageSize::fetch_limit`] to this page and returns the
    /// token of the next page (empty on the last), continuing after the last row kept.
    pub fn cut<T>(self, rows: &mut Vec<T>, cursor: impl Fn(&T) -> String) -> String {
        if rows.len() as u64 > u64::from(self.0) {
            rows.truncate(self.0 as usize);
            rows.last()
                .map(|r| PageToken::after(&cursor(r)))
                .unwrap_or_default()
        } else {
            String::new()
        }
    }
}

/// An opaque continuation token: the cursor of the last row served, hex-encoded so
/// callers treat it as opaque and cannot smuggle anything but a cursor through it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageToken(Option<String>);

impl PageToken {
    /// Parses a request's `page_token`: empty means the first page.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Ok(PageToken(None));
        }
        if raw.len() > PAGE_TOKEN_CHARS_MAX || !raw.len().is_multiple_of(2) {
            return Err("is not a page token this service issued".into());
        }
        let bytes = (0..raw.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&raw[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| "is not a page token this service issued".to_string())?;
        let cursor =
            String::from_utf8(bytes).map_err(|_| "is not a page token this service issued")?;
        Ok(PageToken(Some(cursor)))
    }

    /// The token that continues after `cursor`.
    pub fn after(cursor: &str) -> String {
        cursor.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// The cursor to continue after, if this is not the first page.
    pub fn cursor(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// A keyset cursor of rows ordered by (instant, id): "at:id".
    pub fn keyset_cursor(at: i64, id: &str) -> String {
        format!("{at}:{id}")
    }

    /// The (instant, id) to continue after, for lists paged by [`PageToken::keyset_cursor`].
    pub fn keyset(&self) -> Result<Option<(i64, String)>, String> {
        self.0
            .as_deref()
            .map(|c| {
                let invalid = || "is not a page token this service issued".to_string();
                let (at, id) = c.split_once(':').ok_or_else(invalid)?;
                Ok((at.parse::<i64>().map_err(|_| invalid())?, id.to_owned()))
            })
            .transpose()
    }

    /// The cursor as a number (for lists paged by version or sequence).
    pub fn cursor_i64(&self) -> Result<Option<i64>, String> {
        self.0
            .as_deref()
            .map(|c| {
                c.parse::<i64>()
                    .map_err(|_| "is not a page token this service issued".to_string())
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes() {
        assert_eq!(PageSize::parse(0).unwrap().get(), 50);
        assert_eq!(PageSize::parse(500).unwrap().get(), 500);
        assert!(PageSize::parse(501).is_err());
        assert!(PageSize::parse(-1).is_err());
    }

    #[test]
    fn pages_are_cut_with_a_token_after_their_last_row() {
        let size = PageSize::parse(2).unwrap();
        let mut rows = vec![1, 2, 3];
        let next = size.cut(&mut rows, |r| PageToken::keyset_cursor(10, &r.to_string()));
        assert_eq!(rows, [1, 2]);
        assert_eq!(
            PageToken::parse(&next).unwrap().keyset().unwrap(),
            Some((10, "2".into()))
        );
        let mut last = vec![1, 2];
        assert_eq!(size.cut(&mut last, |r| r.to_string()), "");
        assert!(
            PageToken::parse(&PageToken::after("nocolon"))
                .unwrap()
                .keyset()
                .is_err()
        );
    }

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let token = PageToken::after("rose");
        assert_eq!(PageToken::parse(&token).unwrap().cursor(), Some("rose"));
        assert_eq!(PageToken::parse("").unwrap().cursor(), None);
        assert!(PageToken::parse("zz").is_err());
        assert!(PageToken::parse("abc").is_err());
        assert!(PageToken::parse(&"ab".repeat(200)).is_err());
    }
}
