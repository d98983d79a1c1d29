//! The statements a Postgres connection answers itself, before the engine: settings
//! (`SET`, `RESET`, `SHOW`), transactions (`BEGIN`, `COMMIT`, `ROLLBACK`: the mesh is
//! read-only, so they only frame the client's work), cursors (`DECLARE`, `FETCH`,
//! `CLOSE`) and housekeeping (`DISCARD`, `DEALLOCATE`). Everything else is a query.

use std::time::Duration;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use meshgate_engine::{NameDefaults, VersionPins};
use pgwire::error::PgWireError;

use super::connection::Settings;
use super::dialect::SERVER_VERSION;
use super::split::Locator;
use super::sqlstate::{
    FEATURE_NOT_SUPPORTED, INVALID_PARAMETER_VALUE, UNDEFINED_OBJECT, user_error,
};

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
    CopyOut { query: String, format: CopyFormat },
    /// `DISCARD ALL`: settings back to their defaults, cursors closed.
    Discard,
    /// `DEALLOCATE [PREPARE] name` (`None`: `ALL`): prepared statements dropped.
    Deallocate(Option<String>),
    /// Accepted and answered with this tag, nothing to do (`SET TRANSACTION ...`).
    Nothing(&'static str),
}

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
        Keyword::COPY => copy(sql, &tokens),
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
fn quoted(word: &datafusion::sql::sqlparser::tokenizer::Word) -> String {
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

fn is_word(token: &Token, keyword: Keyword) -> bool {
    matches!(token, Token::Word(w) if w.keyword == keyword && w.quote_style.is_none())
}

fn unsupported(what: &str) -> PgWireError {
    user_error(
        FEATURE_NOT_SUPPORTED,
        format!("{what} is not supported: meshgate is a read-only gateway"),
    )
}

fn syntax(message: &str) -> PgWireError {
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

/// `COPY (query) TO STDOUT [WITH] [(FORMAT f, HEADER h)]`, `COPY table [(columns)] TO
/// STDOUT ...`, and the older `BINARY`, `CSV [HEADER]` spellings. `COPY ... FROM` writes.
fn copy(sql: &str, tokens: &[TokenWithSpan]) -> Result<Command, PgWireError> {
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

/// Settings a client may change and read back; `search_path` and
/// `statement_timeout` change how statements run, the others are remembered for
/// `SHOW` (what tools send at connect: encodings, date styles, application names).
const ACCEPTED: &[&str] = &[
    "application_name",
    "bytea_output",
    "client_encoding",
    "client_min_messages",
    "datestyle",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "extra_float_digits",
    "idle_in_transaction_session_timeout",
    "intervalstyle",
    "jit",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "lock_timeout",
    "meshgate.max_staleness",
    "meshgate.versions",
    "search_path",
    "standard_conforming_strings",
    "statement_timeout",
    "timezone",
    "transaction_isolation",
];

/// Applies `SET name TO value` (`None`: the default) to `settings`.
pub(crate) fn apply_set(
    settings: &mut Settings,
    name: &str,
    value: Option<&str>,
) -> Result<(), PgWireError> {
    let bad = |why: String| user_error(INVALID_PARAMETER_VALUE, why);
    if name == "all" && value.is_none() {
        *settings = Settings::default();
        return Ok(());
    }
    if !ACCEPTED.contains(&name) {
        return Err(user_error(
            UNDEFINED_OBJECT,
            format!("unrecognized configuration parameter \"{name}\""),
        ));
    }
    match (name, value) {
        ("search_path", value) => {
            settings.names = value.map(search_path).unwrap_or_default();
        }
        ("statement_timeout", value) => {
            settings.timeout = match value {
                None => None,
                Some(v) => {
                    let timeout = parse_duration(v)
                        .ok_or_else(|| bad(format!("invalid value for statement_timeout: {v}")))?;
                    (!timeout.is_zero() && timeout <= LONGEST_TIMEOUT).then_some(timeout)
                }
            };
        }
        ("meshgate.max_staleness", value) => {
            settings.max_staleness = match value {
                None => None,
                Some(v) => Some(humantime::parse_duration(v.trim()).map_err(|_| {
                    bad(format!(
                        "invalid value for meshgate.max_staleness: {v} (a duration such as 30m)"
                    ))
                })?),
            };
        }
        ("meshgate.versions", value) => {
            settings.versions = match value {
                None => VersionPins::default(),
                Some(v) => VersionPins::parse(v).map_err(|e| bad(e.to_string()))?,
            };
        }
        ("client_encoding", Some(v))
            if !matches!(
                v.to_ascii_lowercase().as_str(),
                "utf8" | "utf-8" | "unicode"
            ) =>
        {
            return Err(bad(format!(
                "client_encoding {v} is not supported: only UTF8"
            )));
        }
        ("standard_conforming_strings", Some(v)) if !v.eq_ignore_ascii_case("on") => {
            return Err(bad("standard_conforming_strings is always on".into()));
        }
        (_, None) => {
            settings.others.remove(name);
        }
        (_, Some(v)) => {
            settings.others.insert(name.to_string(), v.to_string());
        }
    }
    Ok(())
}

/// The names `search_path` sets: its first entry naming a product (`domain.product`);
/// `public`, `"$user"` and the like leave the defaults.
fn search_path(value: &str) -> NameDefaults {
    value
        .split(',')
        .map(|entry| entry.trim().trim_matches('"'))
        .find_map(|entry| entry.split_once('.'))
        .map(|(domain, product)| NameDefaults {
            catalog: Some(domain.to_string()),
            schema: Some(product.to_string()),
        })
        .unwrap_or_default()
}

/// A `statement_timeout` value: milliseconds, or a number with a unit (`5s`, `1min`).
fn parse_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(ms) = value.parse::<u64>() {
        return Some(Duration::from_millis(ms));
    }
    let split = value.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => Some(number),
        "s" => number.checked_mul(1000),
        "min" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => return None,
    }?;
    Some(Duration::from_millis(ms))
}

/// The longest `statement_timeout` taken as given; longer ones mean "no limit of my
/// own" (the engine's `query_timeout` bounds every statement anyway).
const LONGEST_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The value `SHOW name` answers, or `None` for an unknown setting.
pub(crate) fn show(settings: &Settings, name: &str) -> Option<String> {
    if let Some(value) = settings.others.get(name) {
        return Some(value.clone());
    }
    Some(match name {
        "search_path" => match (&settings.names.catalog, &settings.names.schema) {
            (Some(domain), Some(product)) => format!("\"{domain}.{product}\""),
            _ => "\"$user\", public".to_string(),
        },
        "meshgate.versions" => settings.versions.to_text(),
        "meshgate.max_staleness" => settings
            .max_staleness
            .map_or(String::new(), |d| humantime::format_duration(d).to_string()),
        "statement_timeout" => settings
            .timeout
            .map_or("0".to_string(), |t| format!("{}ms", t.as_millis())),
        "server_version" => SERVER_VERSION.to_string(),
        "server_version_num" => "160006".to_string(),
        "server_encoding" | "client_encoding" => "UTF8".to_string(),
        "datestyle" => "ISO, MDY".to_string(),
        "timezone" => "UTC".to_string(),
        "intervalstyle" => "postgres".to_string(),
        "integer_datetimes" | "standard_conforming_strings" => "on".to_string(),
        "default_transaction_read_only" | "transaction_read_only" => "on".to_string(),
        "transaction_isolation" | "default_transaction_isolation" => "read committed".to_string(),
        "is_superuser" => "off".to_string(),
        "max_identifier_length" => "63".to_string(),
        "extra_float_digits" => "1".to_string(),
        "application_name" => String::new(),
        "lc_collate" | "lc_ctype" => "C".to_string(),
        "bytea_output" => "hex".to_string(),
        "client_min_messages" => "notice".to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn search_path_names_a_product_or_nothing() {
        let mut settings = Settings::default();
        apply_set(
            &mut settings,
            "search_path",
            Some("\"sales.orders\", public"),
        )
        .unwrap();
        assert_eq!(settings.names.catalog.as_deref(), Some("sales"));
        assert_eq!(
            show(&settings, "search_path").as_deref(),
            Some("\"sales.orders\"")
        );
        apply_set(&mut settings, "search_path", Some("public")).unwrap();
        assert_eq!(settings.names, NameDefaults::default());
        assert!(apply_set(&mut settings, "work_mem", Some("1GB")).is_err());
        apply_set(&mut settings, "statement_timeout", Some("5s")).unwrap();
        assert_eq!(settings.timeout, Some(Duration::from_secs(5)));
        apply_set(
            &mut settings,
            "statement_timeout",
            Some("18446744073709551615"),
        )
        .unwrap();
        assert_eq!(settings.timeout, None);
        assert!(
            apply_set(
                &mut settings,
                "statement_timeout",
                Some("99999999999999999h")
            )
            .is_err()
        );
    }
}
