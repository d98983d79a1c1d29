//! The statements a Postgres connection answers itself, before the engine: settings
//! (`SET`, `RESET`, `SHOW`), transactions (`BEGIN`, `COMMIT`, `ROLLBACK`: the mesh is
//! read-only, so they only frame the client's work), cursors (`DECLARE`, `FETCH`,
//! `CLOSE`) and housekeeping (`DISCARD`, `DEALLOCATE`). Everything else is a query.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use pgwire::error::PgWireError;

use super::split::Locator;
use super::sqlstate::{FEATURE_NOT_SUPPORTED, INVALID_PARAMETER_VALUE, user_error};

/// A statement the connection answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `SET name TO value` (`None`: back to the default, as `RESET` and `SET ... TO
    /// DEFAULT` ask).
    Set { name: String, value: Option<String> },
    /// `SHOW name`.
    Show(String),
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END`.
    Commit,
    /// `ROLLBACK`, `ABORT`.
    Rollback,
    /// `DECLARE name CURSOR ... FOR query`.
    Declare { name: String, query: String },
    /// `FETCH [FORWARD] [n | ALL] [FROM | IN] name` (`None`: all).
    Fetch { name: String, count: Option<usize> },
    /// `CLOSE name` (`None`: `CLOSE ALL`).
    Close(Option<String>),
    /// `COPY (query) TO STDOUT` or `COPY table TO STDOUT`, in `format`.
    CopyOut {
        query: String,
        format: super::copy_command::CopyFormat,
    },
    /// `DISCARD ALL`: settings back to their defaults, cursors closed.
    Discard,
    /// `DEALLOCATE [PREPARE] name` (`None`: `ALL`): prepared statements dropped.
    Deallocate(Option<String>),
    /// Accepted and answered with this tag, nothing to do (`SET TRANSACTION ...`).
    Nothing(&'static str),
}

/// The command `sql` is, if it is one the connection answers itself.
pub(crate) fn recognize(sql: &str) -> Option<Result<Command, PgWireError>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let tokens: Vec<TokenWithSpan> = tokens
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let mut words = tokens.iter().map(|t| &t.token).peekable();
    let (first, first_word) = match words.peek()? {
        Token::Word(w) => (w.keyword, w.value.to_ascii_lowercase()),
        _ => return None,
    };
    if first_word == "move" {
        return Some(Err(unsupported("MOVE")));
    }
    let command = match first {
        Keyword::SET => set(&tokens[1..]),
        Keyword::RESET => reset(&tokens[1..]),
        Keyword::SHOW => Ok(Command::Show(setting_name(&tokens[1..]))),
        Keyword::BEGIN | Keyword::START => Ok(Command::Begin),
        Keyword::COMMIT | Keyword::END => Ok(Command::Commit),
        Keyword::ROLLBACK | Keyword::ABORT => {
            if tokens.iter().any(|t| is_word(&t.token, Keyword::SAVEPOINT)) {
                Err(unsupported("savepoints"))
            } else {
                Ok(Command::Rollback)
            }
        }
        Keyword::DECLARE => declare(sql, &tokens),
        Keyword::FETCH => fetch(&tokens[1..]),
        Keyword::CLOSE => Ok(Command::Close(match tokens.get(1).map(|t| &t.token) {
            Some(Token::Word(w)) if w.keyword == Keyword::ALL && w.quote_style.is_none() => None,
            Some(Token::Word(w)) => Some(identifier(w)),
            _ => return Some(Err(syntax("CLOSE takes a cursor name or ALL"))),
        })),
        Keyword::DISCARD => Ok(Command::Discard),
        Keyword::COPY => super::copy_command::copy(sql, &tokens),
        Keyword::DEALLOCATE => {
            let rest: Vec<&Token> = tokens[1..]
                .iter()
                .map(|t| &t.token)
                .filter(|t| !is_word(t, Keyword::PREPARE) && **t != Token::SemiColon)
                .collect();
            match rest.as_slice() {
                [all] if is_word(all, Keyword::ALL) => Ok(Command::Deallocate(None)),
                [Token::Word(w)] => Ok(Command::Deallocate(Some(identifier(w)))),
                _ => Err(syntax("DEALLOCATE takes a statement name or ALL")),
            }
        }
        _ => return None,
    };
    Some(command)
}

/// A word as SQL writes it again: a quoted identifier stays quoted (its quotes
/// doubled), so that it cannot end early.
pub(super) fn quoted(word: &datafusion::sql::sqlparser::tokenizer::Word) -> String {
    match word.quote_style {
        Some(_) => format!("\"{}\"", word.value.replace('"', "\"\"")),
        None => word.value.clone(),
    }
}

/// A name as Postgres reads it: folded to lower case unless quoted.
fn identifier(word: &datafusion::sql::sqlparser::tokenizer::Word) -> String {
    match word.quote_style {
        Some(_) => word.value.clone(),
        None => word.value.to_lowercase(),
    }
}

pub(super) fn is_word(token: &Token, keyword: Keyword) -> bool {
    matches!(token, Token::Word(w) if w.keyword == keyword && w.quote_style.is_none())
}

pub(super) fn unsupported(what: &str) -> PgWireError {
    user_error(
        FEATURE_NOT_SUPPORTED,
        format!("{what} is not supported: meshgate is a read-only gateway"),
    )
}

pub(super) fn syntax(message: &str) -> PgWireError {
    user_error(super::sqlstate::SYNTAX_ERROR, message)
}

/// The setting named by `tokens` (`TIME ZONE`, `TRANSACTION ISOLATION LEVEL`, a name,
/// a dotted name such as `meshgate.versions`).
fn setting_name(tokens: &[TokenWithSpan]) -> String {
    named_setting(tokens).0
}

/// The setting named at the start of `tokens`, and how many tokens name it.
fn named_setting(tokens: &[TokenWithSpan]) -> (String, usize) {
    let word = |i: usize| match tokens.get(i).map(|t| &t.token) {
        Some(Token::Word(w)) => Some(w.value.to_ascii_lowercase()),
        _ => None,
    };
    match (word(0), word(1)) {
        (Some(time), Some(zone)) if time == "time" && zone == "zone" => ("timezone".into(), 2),
        (Some(transaction), Some(isolation))
            if transaction == "transaction" && isolation == "isolation" =>
        {
            ("transaction_isolation".into(), 4)
        }
        (Some(first), _) => {
            let mut name = first;
            let mut used = 1;
            while matches!(tokens.get(used).map(|t| &t.token), Some(Token::Period))
                && let Some(part) = word(used + 1)
            {
                name = format!("{name}.{part}");
                used += 2;
            }
            (name, used)
        }
        (None, _) => (String::new(), 0),
    }
}

/// `SET [SESSION | LOCAL] name {TO | =} value[, ...]`, `SET TIME ZONE value`.
fn set(tokens: &[TokenWithSpan]) -> Result<Command, PgWireError> {
    let mut rest = tokens;
    if let Some(t) = rest.first()
        && (is_word(&t.token, Keyword::SESSION) || is_word(&t.token, Keyword::LOCAL))
    {
        rest = &rest[1..];
    }
    if let Some(t) = rest.first()
        && (is_word(&t.token, Keyword::TRANSACTION) || is_word(&t.token, Keyword::CHARACTERISTICS))
    {
        return Ok(Command::Nothing("SET"));
    }
    let (name, skip) = named_setting(rest);
    if name.is_empty() {
        return Err(syntax("SET takes a setting name"));
    }
    let mut values = &rest[skip.min(rest.len())..];
    if let Some(t) = values.first()
        && (is_word(&t.token, Keyword::TO) || matches!(t.token, Token::Eq))
    {
        values = &values[1..];
    }
    let items: Vec<String> = values
        .split(|t| matches!(t.token, Token::Comma | Token::SemiColon))
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.iter()
                .map(|t| match &t.token {
                    Token::Word(w) => w.value.clone(),
                    Token::SingleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<String>()
        })
        .collect();
    if items.is_empty() {
        return Err(syntax("SET takes a value"));
    }
    let is_default = items.len() == 1
        && values
            .first()
            .is_some_and(|t| is_word(&t.token, Keyword::DEFAULT));
    Ok(Command::Set {
        name,
        value: (!is_default).then(|| items.join(", ")),
    })
}

/// `RESET name`, `RESET ALL`.
fn reset(tokens: &[TokenWithSpan]) -> Result<Command, PgWireError> {
    match setting_name(tokens).as_str() {
        "" => Err(syntax("RESET takes a setting name or ALL")),
        name => Ok(Command::Set {
            name: name.to_string(),
            value: None,
        }),
    }
}

/// `DECLARE name [BINARY] [ASENSITIVE | INSENSITIVE] [[NO] SCROLL] CURSOR [{WITH |
/// WITHOUT} HOLD] FOR query`.
fn declare(sql: &str, tokens: &[TokenWithSpan]) -> Result<Command, PgWireError> {
    let name = match tokens.get(1).map(|t| &t.token) {
        Some(Token::Word(w)) => identifier(w),
        _ => return Err(syntax("DECLARE takes a cursor name")),
    };
    let Some(at) = tokens.iter().position(|t| is_word(&t.token, Keyword::FOR)) else {
        return Err(syntax("DECLARE ... CURSOR takes FOR and a query"));
    };
    if tokens[..at]
        .iter()
        .any(|t| is_word(&t.token, Keyword::BINARY))
    {
        return Err(unsupported("BINARY cursors"));
    }
    let Some(query) = tokens.get(at + 1) else {
        return Err(syntax("DECLARE ... CURSOR FOR takes a query"));
    };
    let start = Locator::new(sql).offset(query.span.start.line, query.span.start.column);
    Ok(Command::Declare {
        name,
        query: sql[start..].trim().trim_end_matches(';').to_string(),
    })
}

/// `FETCH [NEXT | FORWARD [n | ALL] | n | ALL] [FROM | IN] name`.
fn fetch(tokens: &[TokenWithSpan]) -> Result<Command, PgWireError> {
    let mut count = Some(1);
    let mut name = None;
    for t in tokens {
        match &t.token {
            Token::Word(w) if w.quote_style.is_none() && w.keyword == Keyword::ALL => count = None,
            Token::Word(w)
                if w.quote_style.is_none()
                    && matches!(
                        w.keyword,
                        Keyword::NEXT | Keyword::FORWARD | Keyword::FROM | Keyword::IN
                    ) => {}
            Token::Word(w)
                if w.quote_style.is_none()
                    && matches!(
                        w.keyword,
                        Keyword::PRIOR
                            | Keyword::BACKWARD
                            | Keyword::FIRST
                            | Keyword::LAST
                            | Keyword::ABSOLUTE
                            | Keyword::RELATIVE
                    ) =>
            {
                return Err(unsupported("scrolling a cursor backwards or to a position"));
            }
            Token::Number(n, _) => {
                count = Some(n.parse::<usize>().map_err(|_| {
                    user_error(
                        INVALID_PARAMETER_VALUE,
                        format!("FETCH count {n} is not valid"),
                    )
                })?);
            }
            Token::Word(w) => name = Some(identifier(w)),
            Token::SemiColon => {}
            _ => return Err(syntax("FETCH takes a count and a cursor name")),
        }
    }
    match name {
        Some(name) => Ok(Command::Fetch { name, count }),
        None => Err(syntax("FETCH takes a cursor name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg_door::copy_command::CopyFormat;

    fn command(sql: &str) -> Command {
        recognize(sql).expect("a command").expect("valid")
    }

    #[test]
    fn settings_and_transactions_are_recognized() {
        assert_eq!(
            command("SET search_path TO \"sales.orders\""),
            Command::Set {
                name: "search_path".into(),
                value: Some("sales.orders".into())
            }
        );
        assert_eq!(
            command("set time zone 'UTC'"),
            Command::Set {
                name: "timezone".into(),
                value: Some("UTC".into())
            }
        );
        assert_eq!(
            command("SET extra_float_digits = 3"),
            Command::Set {
                name: "extra_float_digits".into(),
                value: Some("3".into())
            }
        );
        assert_eq!(
            command("SHOW TRANSACTION ISOLATION LEVEL"),
            Command::Show("transaction_isolation".into())
        );
        assert_eq!(
            command("SET meshgate.versions = 'clinical.labs.results@v3'"),
            Command::Set {
                name: "meshgate.versions".into(),
                value: Some("clinical.labs.results@v3".into())
            }
        );
        assert_eq!(
            command("SHOW meshgate.versions"),
            Command::Show("meshgate.versions".into())
        );
        assert_eq!(command("BEGIN"), Command::Begin);
        assert_eq!(command("commit;"), Command::Commit);
        assert!(recognize("SELECT 1").is_none());
        assert!(recognize("select * from settings").is_none());
    }

    #[test]
    fn cursors_are_recognized() {
        assert_eq!(
            command(
                "DECLARE \"c1\" NO SCROLL CURSOR WITHOUT HOLD FOR\n  SELECT a FROM t WHERE b = 'for'"
            ),
            Command::Declare {
                name: "c1".into(),
                query: "SELECT a FROM t WHERE b = 'for'".into()
            }
        );
        assert_eq!(
            command("FETCH FORWARD 100 FROM \"c1\""),
            Command::Fetch {
                name: "c1".into(),
                count: Some(100)
            }
        );
        assert_eq!(
            command("FETCH ALL IN c1"),
            Command::Fetch {
                name: "c1".into(),
                count: None
            }
        );
        assert_eq!(command("CLOSE ALL"), Command::Close(None));
        assert_eq!(
            command("close MyCursor"),
            Command::Close(Some("mycursor".into()))
        );
        assert_eq!(command("DISCARD ALL"), Command::Discard);
        assert_eq!(
            command("COPY (SELECT a, (b) FROM t) TO STDOUT (FORMAT binary)"),
            Command::CopyOut {
                query: "SELECT a, (b) FROM t".into(),
                format: CopyFormat::Binary
            }
        );
        assert_eq!(
            command(
                "copy billing.claims.claims (claim_id, payer) to stdout with (format csv, header true)"
            ),
            Command::CopyOut {
                query: "SELECT claim_id, payer FROM billing.claims.claims".into(),
                format: CopyFormat::Csv { header: true }
            }
        );
        assert!(recognize("COPY t FROM STDIN").expect("a command").is_err());
        assert_eq!(
            command("COPY \"a\"\" UNION SELECT 1 --\" TO STDOUT"),
            Command::CopyOut {
                query: "SELECT * FROM \"a\"\" UNION SELECT 1 --\"".into(),
                format: CopyFormat::Text
            }
        );
        assert!(recognize("COPY a b TO STDOUT").expect("a command").is_err());
        assert!(
            recognize("COPY t (a b, , c) TO STDOUT")
                .expect("a command")
                .is_err()
        );
        assert_eq!(
            command("COPY t TO STDOUT (FORMAT csv, HEADER 0)"),
            Command::CopyOut {
                query: "SELECT * FROM t".into(),
                format: CopyFormat::Csv { header: false }
            }
        );
        assert_eq!(
            command("DEALLOCATE PREPARE \"S_1\""),
            Command::Deallocate(Some("S_1".into()))
        );
        assert_eq!(command("deallocate all"), Command::Deallocate(None));
    }
}
