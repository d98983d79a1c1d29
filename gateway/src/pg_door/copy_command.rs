//! `COPY ... TO STDOUT` as a client writes it: the query (or table and columns) and
//! the format asked for. `COPY ... FROM` writes, and is refused.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use pgwire::error::PgWireError;

use super::commands::{Command, is_word, quoted, syntax, unsupported};
use super::split::Locator;
use super::sqlstate::user_error;

/// The format of `COPY ... TO STDOUT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyFormat {
    /// Tab-separated text, `\N` for null.
    Text,
    /// Comma-separated values, with a header line when asked.
    Csv { header: bool },
    /// PGCOPY binary (what ADBC's Postgres driver reads).
    Binary,
}

/// `COPY (query) TO STDOUT [WITH] [(FORMAT f, HEADER h)]`, `COPY table [(columns)] TO
/// STDOUT ...`, and the older `BINARY`, `CSV [HEADER]` spellings. `COPY ... FROM` writes.
pub(super) fn copy(sql: &str, tokens: &[TokenWithSpan]) -> Result<Command, PgWireError> {
    let mut at = 1;
    let query = if matches!(tokens.get(at).map(|t| &t.token), Some(Token::LParen)) {
        let mut depth = 0usize;
        let close = tokens[at..].iter().position(|t| {
            match t.token {
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                _ => {}
            }
            depth == 0
        });
        let Some(close) = close.map(|c| c + at) else {
            return Err(syntax("COPY (query): the parenthesis is not closed"));
        };
        let mut locator = Locator::new(sql);
        let open_at = locator.offset(tokens[at].span.start.line, tokens[at].span.start.column);
        let close_at = locator.offset(
            tokens[close].span.start.line,
            tokens[close].span.start.column,
        );
        at = close + 1;
        sql[open_at + 1..close_at].trim().to_string()
    } else {
        let mut name = String::new();
        let mut expect_word = true;
        while let Some(token) = tokens.get(at) {
            match &token.token {
                Token::Word(w)
                    if expect_word
                        && !is_word(&token.token, Keyword::TO)
                        && !is_word(&token.token, Keyword::FROM) =>
                {
                    name.push_str(&quoted(w));
                }
                Token::Period if !expect_word => name.push('.'),
                _ => break,
            }
            expect_word = !expect_word;
            at += 1;
        }
        if name.is_empty() || expect_word {
            return Err(syntax("COPY takes a table or a (query)"));
        }
        let mut columns = "*".to_string();
        if matches!(tokens.get(at).map(|t| &t.token), Some(Token::LParen)) {
            let mut names = Vec::new();
            at += 1;
            loop {
                match (
                    tokens.get(at).map(|t| &t.token),
                    tokens.get(at + 1).map(|t| &t.token),
                ) {
                    (Some(Token::Word(w)), Some(Token::Comma)) => names.push(quoted(w)),
                    (Some(Token::Word(w)), Some(Token::RParen)) => {
                        names.push(quoted(w));
                        at += 2;
                        break;
                    }
                    _ => {
                        return Err(syntax(
                            "COPY table (columns): write column names, separated by commas",
                        ));
                    }
                }
                at += 2;
            }
            columns = names.join(", ");
        }
        format!("SELECT {columns} FROM {name}")
    };
    match tokens.get(at).map(|t| &t.token) {
        Some(t) if is_word(t, Keyword::TO) => {}
        Some(t) if is_word(t, Keyword::FROM) => {
            return Err(user_error(
                super::sqlstate::INSUFFICIENT_PRIVILEGE,
                "COPY ... FROM statements are not allowed: meshgate is a read-only gateway",
            ));
        }
        _ => return Err(syntax("COPY takes TO STDOUT")),
    }
    if !tokens
        .get(at + 1)
        .is_some_and(|t| is_word(&t.token, Keyword::STDOUT))
    {
        return Err(unsupported("COPY to a file or program (only TO STDOUT)"));
    }
    let mut format = CopyFormat::Text;
    let mut header = false;
    let words: Vec<String> = tokens[at + 2..]
        .iter()
        .filter_map(|t| match &t.token {
            Token::Word(w) => Some(w.value.to_ascii_lowercase()),
            Token::SingleQuotedString(s) => Some(s.to_ascii_lowercase()),
            Token::Number(n, _) => Some(n.clone()),
            _ => None,
        })
        .collect();
    let mut words = words.iter().map(String::as_str).peekable();
    while let Some(word) = words.next() {
        match word {
            "with" => {}
            "format" => match words.next() {
                Some("text") => format = CopyFormat::Text,
                Some("csv") => format = CopyFormat::Csv { header },
                Some("binary") => format = CopyFormat::Binary,
                other => {
                    return Err(syntax(&format!(
                        "COPY format {} is not known (text, csv, binary)",
                        other.unwrap_or("")
                    )));
                }
            },
            "binary" => format = CopyFormat::Binary,
            "csv" => format = CopyFormat::Csv { header },
            "header" => {
                header = !matches!(words.peek(), Some(&("false" | "off" | "0")));
                if matches!(
                    words.peek(),
                    Some(&("true" | "false" | "on" | "off" | "0" | "1"))
                ) {
                    words.next();
                }
            }
            other => return Err(unsupported(&format!("COPY option {other}"))),
        }
    }
    if let CopyFormat::Csv { .. } = format {
        format = CopyFormat::Csv { header };
    }
    Ok(Command::CopyOut { query, format })
}
