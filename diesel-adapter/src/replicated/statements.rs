//! The statements of an SQL text, each as its words: what routing and the refusals of
//! `refused.rs` judge a statement by, without parsing SQL.

/// One statement of a script.
pub(super) struct Statement<'a> {
    /// Its text, trimmed.
    pub(super) text: &'a str,
    /// Its keywords and identifiers in upper case, skipping comments, string literals and
    /// dollar-quoted bodies (which cannot hide a keyword: a function body's `BEGIN` is not the
    /// script's). A quoted identifier keeps its quotes (`"UPDATE"`): see [`name`].
    pub(super) words: Vec<String>,
}

/// The statements of `sql`, split at the semicolons outside literals and comments; empty
/// statements are left out.
pub(super) fn statements<'a>(sql: &'a str) -> Vec<Statement<'a>> {
    let mut statements = Vec::new();
    let mut words = Vec::new();
    let mut start = 0;
    let mut chars = sql.char_indices().peekable();
    let finish = |statements: &mut Vec<Statement<'a>>, text: &'a str, words: &mut Vec<String>| {
        if !words.is_empty() {
            statements.push(Statement {
                text: text.trim(),
                words: std::mem::take(words),
            });
        }
    };
    while let Some((at, c)) = chars.next() {
        match c {
            ';' => {
                finish(&mut statements, &sql[start..at], &mut words);
                start = at + 1;
            }
            '-' if sql[at..].starts_with("--") => {
                for (_, c) in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if sql[at..].starts_with("/*") => {
                chars.next();
                let mut depth = 1;
                while depth > 0 {
                    match chars.next() {
                        Some((i, '*')) if sql[i..].starts_with("*/") => {
                            chars.next();
                            depth -= 1;
                        }
                        Some((i, '/')) if sql[i..].starts_with("/*") => {
                            chars.next();
                            depth += 1;
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            }
            '\'' => {
                // '' inside is two quotes in a row: leaving and re-entering is the same.
                for (_, inner) in chars.by_ref() {
                    if inner == c {
                        break;
                    }
                }
            }
            '"' => {
                // A quoted identifier is a word too, kept in its quotes: it names a function
                // or schema as the bare word does (`"pg_advisory_lock"(1)`, `"pg_temp".t`),
                // but is never a keyword (`"update"` is a column).
                let mut word = String::from('"');
                for (_, inner) in chars.by_ref() {
                    if inner == '"' {
                        break;
                    }
                    word.extend(inner.to_uppercase());
                }
                word.push('"');
                words.push(word);
            }
            '$' => {
                // `$tag$ ... $tag$` (a function body); `$1` is a parameter.
                if let Some(tag) = dollar_tag(&sql[at..]) {
                    let body = at + tag.len();
                    let end = sql[body..]
                        .find(tag)
                        .map_or(sql.len(), |i| body + i + tag.len());
                    while chars.peek().is_some_and(|&(i, _)| i < end) {
                        chars.next();
                    }
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut word = c.to_uppercase().collect::<String>();
                while let Some(&(_, next)) = chars.peek() {
                    if next.is_alphanumeric() || next == '_' || next == '$' {
                        word.extend(next.to_uppercase());
                        chars.next();
                    } else {
                        break;
                    }
                }
                words.push(word);
            }
            _ => {}
        }
    }
    finish(&mut statements, &sql[start..], &mut words);
    statements
}

/// The name a word gives, quoted or not: `"pg_temp"` and `pg_temp` both name `PG_TEMP`.
/// For names of functions and schemas only; keywords are never quoted.
pub(super) fn name(word: &str) -> &str {
    word.strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .unwrap_or(word)
}

/// The opening `$tag$` of a dollar-quoted string at the start of `text`, if it is one.
pub(super) fn dollar_tag(text: &str) -> Option<&str> {
    let rest = &text[1..];
    let len = rest.find('$')?;
    let tag = &rest[..len];
    let valid = tag
        .chars()
        .enumerate()
        .all(|(i, c)| c.is_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()));
    valid.then(|| &text[..len + 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> Vec<Vec<String>> {
        statements(sql).into_iter().map(|s| s.words).collect()
    }

    #[test]
    fn statements_split_at_semicolons_outside_literals_and_bodies() {
        let sql = "SET a = ';'; -- x;\n/* ; */ CREATE FUNCTION f() RETURNS void \
                   LANGUAGE plpgsql AS $body$ BEGIN PERFORM 1; END $body$;; SELECT $1, $$;$$";
        let split = statements(sql);
        let texts: Vec<&str> = split.iter().map(|s| s.text).collect();
        assert_eq!(texts[0], "SET a = ';'");
        assert_eq!(split.len(), 3, "{texts:?}");
        assert_eq!(
            split[1].words,
            [
                "CREATE", "FUNCTION", "F", "RETURNS", "VOID", "LANGUAGE", "PLPGSQL", "AS"
            ]
        );
        assert_eq!(split[2].words, ["SELECT"]);
        assert_eq!(words("a$b $1x"), [["A$B", "X"]]);
        assert_eq!(
            words("SELECT \"pg_catalog\".\"Update\"(1)"),
            [["SELECT", "\"PG_CATALOG\"", "\"UPDATE\""]]
        );
        assert_eq!(name("\"PG_TEMP\""), "PG_TEMP");
        assert_eq!(name("PG_TEMP"), "PG_TEMP");
        assert_eq!(words("SELECT $unterminated$ BEGIN"), [["SELECT"]]);
        assert!(statements(" ; -- only\n ;").is_empty());
    }
}
