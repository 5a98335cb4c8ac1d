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
    fn rows_continue_the_numbering() {
        assert_eq!(rows(1, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(rows(2, 1, 2), "($2, $3)");
    }
}
