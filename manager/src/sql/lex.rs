//! SQL as text: what litemux needs to know of a statement before, or without, asking SQLite.
//!
//! Only white space, comments and keywords are read here; what a statement does is
//! SQLite's to say (see [`classify`](super::classify)).

/// The first keyword of `sql`, upper-cased, skipping white space and comments.
pub(crate) fn first_keyword(sql: &str) -> Option<String> {
    let word = first_word(sql);
    (!word.is_empty()).then(|| word.to_ascii_uppercase())
}

/// Whether `sql`'s first keyword begins, ends or names a transaction or a savepoint, without
/// allocating (it is asked of every statement a transaction lends its connection for).
pub(crate) fn controls_transaction(sql: &str) -> bool {
    let word = first_word(sql);
    TRANSACTION_CONTROL
        .iter()
        .any(|keyword| keyword.eq_ignore_ascii_case(word))
}

/// The letters `sql` starts with, after white space and comments; empty if none.
fn first_word(sql: &str) -> &str {
    let rest = skip_trivia(sql);
    let end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The keywords that begin transaction control statements.
pub(crate) const TRANSACTION_CONTROL: [&str; 6] =
    ["BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"];

/// Whether `sql` holds anything but white space, comments and semicolons.
pub(crate) fn has_statement(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = skip_trivia(rest);
        match rest.strip_prefix(';') {
            Some(after) => rest = after,
            None => return !rest.is_empty(),
        }
    }
}

fn skip_trivia(mut sql: &str) -> &str {
    loop {
        let trimmed = sql.trim_start();
        if let Some(comment) = trimmed.strip_prefix("--") {
            sql = comment.find('\n').map_or("", |end| &comment[end..]);
        } else if let Some(comment) = trimmed.strip_prefix("/*") {
            sql = comment.find("*/").map_or("", |end| &comment[end + 2..]);
        } else {
            return trimmed;
        }
    }
}

/// Quotes `name` as an SQL identifier (for savepoint names given by callers).
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_see_through_comments() {
        assert_eq!(
            first_keyword("  -- x\n /* y */ begin immediate").as_deref(),
            Some("BEGIN")
        );
        assert_eq!(first_keyword("/* unterminated"), None);
        assert!(!has_statement(" ; -- c\n ; /* */ "));
        assert!(has_statement("; SELECT 1"));
    }

    #[test]
    fn transaction_control_is_told_by_its_first_keyword() {
        for sql in [
            "COMMIT",
            "  -- done\n commit;",
            "/* x */End",
            "ROLLBACK TO a",
            "savepoint a",
            "RELEASE a",
            "BEGIN IMMEDIATE",
        ] {
            assert!(controls_transaction(sql), "{sql}");
        }
        for sql in [
            "SELECT 'COMMIT'",
            "ENDING",
            "",
            "-- COMMIT",
            "UPDATE t SET end = 1",
        ] {
            assert!(!controls_transaction(sql), "{sql}");
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
