//! A simple-protocol query split into its statements (at the semicolons that end
//! them, not those inside strings, identifiers or comments), in one pass over the text.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The statements of `query`, trimmed, empty ones left out. Text that does not
/// tokenize is one statement (its parse error is reported when it is planned).
pub(crate) fn statements(query: &str) -> Vec<&str> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, query).tokenize_with_location() else {
        return Some(query.trim())
            .filter(|s| !s.is_empty())
            .into_iter()
            .collect();
    };
    let mut locator = Locator::new(query);
    let mut statements = Vec::new();
    let mut from = 0;
    for token in tokens {
        if token.token == Token::SemiColon {
            let at = locator.offset(token.span.start.line, token.span.start.column);
            statements.push(&query[from..at]);
            from = at + 1;
        }
    }
    statements.push(&query[from..]);
    statements
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The byte offsets of token locations (1-based line, character column) in a text,
/// asked for in increasing order: each call continues where the last one stopped.
pub(crate) struct Locator<'a> {
    text: &'a str,
    /// Where the scan stands: byte offset, and its line and column.
    at: usize,
    line: u64,
    column: u64,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self {
            text,
            at: 0,
            line: 1,
            column: 1,
        }
    }

    /// The byte offset of `line`, `column` (at or after the last one asked for); the
    /// text's length when past its end.
    pub(crate) fn offset(&mut self, line: u64, column: u64) -> usize {
        for c in self.text[self.at..].chars() {
            if (self.line, self.column) >= (line, column) {
                break;
            }
            self.at += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
        self.at
    }
}

#[cfg(test)]
mod tests {
    use super::statements;

    #[test]
    fn semicolons_inside_strings_and_identifiers_do_not_split() {
        assert_eq!(
            statements("SET a = 1; SELECT ';' AS \"x;y\" -- c;\n ; "),
            vec!["SET a = 1", "SELECT ';' AS \"x;y\" -- c;"]
        );
        assert_eq!(statements("  ;; "), Vec::<&str>::new());
        assert_eq!(
            statements("SELECT 'é'; SELECT 2"),
            vec!["SELECT 'é'", "SELECT 2"]
        );
        assert_eq!(
            statements("SELECT 1;\nSELECT 'a\nb';SELECT 3"),
            vec!["SELECT 1", "SELECT 'a\nb'", "SELECT 3"]
        );
    }

    #[test]
    fn many_statements_split_in_linear_time() {
        let query = "SELECT 1;".repeat(20_000);
        assert_eq!(statements(&query).len(), 20_000);
    }
}
