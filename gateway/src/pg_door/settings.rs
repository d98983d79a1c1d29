//! The settings a Postgres connection takes with `SET` and answers with `SHOW`: those
//! that change how statements run (`search_path`, `statement_timeout`,
//! `meshgate.max_staleness`, `meshgate.versions`) and those tools send at connect,
//! remembered as given.

use std::time::Duration;

use meshgate_engine::{NameDefaults, VersionPins};
use pgwire::error::PgWireError;

use super::connection::Settings;
use super::dialect::SERVER_VERSION;
use super::sqlstate::{INVALID_PARAMETER_VALUE, UNDEFINED_OBJECT, user_error};

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
