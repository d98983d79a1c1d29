//! A simple-protocol query split into its statements (at the semicolons that end
//! them, not those inside strings, identifiers or comments).

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The statements of `query`, trimmed, empty ones left out. Text that does not
/// tokenize is one statement (its parse error is reported when it is planned).
pub(crate) fn statements(query: &str) -> Vec<&str> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, query).tokenize_with_location() else {
        return vec![query.trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
    };
    let mut statements = Vec::new();
    let mut from = 0;
    for token in tokens {
        if token.token == Token::SemiColon {
            let at = byte_offset(query, token.span.start.line, token.span.start.column);
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

/// The byte offset in `text` of a token's 1-based `line` and character `column`.
pub(crate) fn byte_offset(text: &str, line: u64, column: u64) -> usize {
    let mut offset = 0;
    for (number, line_text) in text.split_inclusive('\n').enumerate() {
        if number as u64 + 1 == line {
            let chars = column.saturating_sub(1) as usize;
            return offset
                + line_text
                    .char_indices()
                    .nth(chars)
                    .map_or(line_text.len(), |(at, _)| at);
        }
        offset += line_text.len();
    }
    text.len()
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
    }
}
