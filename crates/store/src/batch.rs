//! Multi-row statements for batched operations: one statement writes or reads a whole
//! batch's rows instead of one round trip per row.
//!
//! Placeholders are numbered `$n` (both engines); a caller builds the text with these,
//! then binds the values in the same order. Batches are bounded
//! (`ovation_types::limits::BATCH_ITEMS_MAX`), so every statement stays far below both
//! engines' parameter limits (SQLite 32,766; PostgreSQL 65,535).

use crate::db::Conn;

/// Most parameters one statement built here may carry (SQLite's limit, the lower one).
pub const PARAMETERS_MAX: usize = 32_766;

/// `$first, $first+1, …` — `count` placeholders, for `IN (…)`.
pub fn placeholders(first: usize, count: usize) -> String {
    assert!(count > 0, "an empty list is not valid SQL");
    assert!(first + count - 1 <= PARAMETERS_MAX, "too many parameters");
    let mut text = String::with_capacity(count * 5);
    for n in first..first + count {
        if n > first {
            text.push_str(", ");
        }
        text.push('$');
        text.push_str(&n.to_string());
    }
    text
}

/// `($first, …), (…)` — `rows` rows of `columns` placeholders each, for `VALUES …`.
pub fn rows(first: usize, rows: usize, columns: usize) -> String {
    assert!(
        rows > 0 && columns > 0,
        "an empty VALUES list is not valid SQL"
    );
    let mut text = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            text.push_str(", ");
        }
        text.push('(');
        text.push_str(&placeholders(first + row * columns, columns));
        text.push(')');
    }
    text
}

/// A batch's keys for `IN (…)`: each once, in key order (the order rows are locked in).
pub fn distinct<'a, T: Ord + ?Sized>(keys: impl Iterator<Item = &'a T>) -> Vec<&'a T> {
    let mut keys: Vec<&T> = keys.collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The parameters of a multi-row UPDATE keyed by one column, portable to both engines
/// (SQLite has no `UPDATE … FROM (VALUES …)` with column names): row `i` binds its key and
/// then its values, `per_row` parameters in all, the first row from `$first`. `case(v)` is the
/// row's `v`-th value (1-based) chosen by key; `keys()` lists the keys for `WHERE key IN (…)`.
#[derive(Clone, Copy, Debug)]
pub struct KeyedRows {
    pub key_column: &'static str,
    pub first: usize,
    pub rows: usize,
    pub per_row: usize,
}

impl KeyedRows {
    fn key(&self, row: usize) -> usize {
        self.first + row * self.per_row
    }

    /// `CASE <key> WHEN $key THEN $value … END`.
    pub fn case(&self, value: usize) -> String {
        assert!(
            value >= 1 && value < self.per_row,
            "value {value} is not a row's value"
        );
        let mut text = format!("CASE {}", self.key_column);
        for row in 0..self.rows {
            let key = self.key(row);
            text.push_str(&format!(" WHEN ${key} THEN ${}", key + value));
        }
        text.push_str(" END");
        text
    }

    /// `$key, $key, …`: every row's key.
    pub fn keys(&self) -> String {
        (0..self.rows)
            .map(|row| format!("${}", self.key(row)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The first parameter after the rows'.
    pub fn next(&self) -> usize {
        self.first + self.rows * self.per_row
    }
}

/// What to append to a `SELECT … ORDER BY <key>` so that it locks the rows it reads, in
/// key order, for the rest of the transaction. Locking several rows in one statement in
/// one global order is what keeps two batches that share rows from deadlocking. On
/// PostgreSQL `FOR NO KEY UPDATE` (the lock an UPDATE that keeps the key takes, so it
/// queues with the single-row operations that lock by updating); on SQLite nothing: a
/// write transaction there holds the whole database from `BEGIN IMMEDIATE`.
pub fn row_lock(conn: &Conn) -> &'static str {
    if conn.backend_name().eq_ignore_ascii_case("postgres")
        || conn.backend_name().eq_ignore_ascii_case("postgresql")
    {
        " FOR NO KEY UPDATE"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_from_the_first() {
        assert_eq!(placeholders(1, 1), "$1");
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
    }

    #[test]
    fn keyed_rows_choose_each_rows_value_by_its_key() {
        let rows = KeyedRows {
            key_column: "user_id",
            first: 2,
            rows: 2,
            per_row: 3,
        };
        assert_eq!(
            rows.case(1),
            "CASE user_id WHEN $2 THEN $3 WHEN $5 THEN $6 END"
        );
        assert_eq!(
            rows.case(2),
            "CASE user_id WHEN $2 THEN $4 WHEN $5 THEN $7 END"
        );
        assert_eq!(rows.keys(), "$2, $5");
        assert_eq!(rows.next(), 8);
    }

    #[test]
    fn distinct_keys_are_sorted_once_each() {
        assert_eq!(distinct(["b", "a", "b"].into_iter()), ["a", "b"]);
    }

    #[test]
    fn rows_continue_the_numbering() {
        assert_eq!(rows(1, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(rows(2, 1, 2), "($2, $3)");
    }
}
