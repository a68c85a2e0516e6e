//! SQL as text: what litemux needs to know of a statement before, or without, asking SQLite.
//!
//! Only white space, comments and keywords are read here; what a statement does is
//! SQLite's to say (see [`classify`](super::classify)).

/// The first keyword of `sql`, upper-cased, skipping white space and comments.
pub(crate) fn first_keyword(sql: &str) -> Option<String> {
    let rest = skip_trivia(sql);
    let word: String = rest
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (!word.is_empty()).then_some(word)
}

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
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
