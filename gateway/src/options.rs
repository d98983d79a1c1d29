//! What a request asks of its statement through headers, the same on every door that
//! speaks HTTP (Flight's gRPC metadata, the HTTP door): a freshness bound
//! (`x-meshgate-max-staleness`), a lower time limit (`x-meshgate-timeout`) and tables
//! pinned to a version (`x-meshgate-versions`); and what the answer tells of the
//! products read (`x-meshgate-deprecated`).

use std::time::Duration;

use http::HeaderMap;
use meshgate_engine::{QueryOptions, TIMEOUT_HEADER, VersionPins};

use crate::error::{Error, Result};

/// The request header by which a caller bounds the age of the data it reads.
pub const MAX_STALENESS_HEADER: &str = "x-meshgate-max-staleness";

/// The request header by which a caller pins tables to a version
/// (`domain.product.table@v3, ...`).
pub(crate) const VERSIONS_HEADER: &str = "x-meshgate-versions";

/// The response header naming each deprecated product a statement reads, one value
/// per product: `clinical.encounters_v1; until=2027-03-31; successor=clinical.encounters`.
pub(crate) const DEPRECATED_HEADER: &str = "x-meshgate-deprecated";

/// The [`DEPRECATED_HEADER`] value telling of `read`: `clinical.encounters_v1;
/// until=2027-03-31; successor=clinical.encounters` (no successor when the reader may not
/// read it).
pub(crate) fn deprecated_header_value(read: &meshgate_engine::DeprecatedRead) -> String {
    match &read.successor {
        Some(successor) => format!(
            "{}; until={}; successor={successor}",
            read.product, read.until
        ),
        None => format!("{}; until={}", read.product, read.until),
    }
}

/// The options carried by `metadata`; malformed values are `INVALID_ARGUMENT`.
pub(crate) fn query_options(metadata: &HeaderMap) -> Result<QueryOptions> {
    Ok(QueryOptions {
        max_staleness: max_staleness(metadata)?,
        timeout: requested_timeout(metadata)?,
        versions: versions(metadata)?,
        ..QueryOptions::default()
    })
}

/// The versions a request pins, if any.
fn versions(metadata: &HeaderMap) -> Result<VersionPins> {
    let Some(value) = metadata.get(VERSIONS_HEADER) else {
        return Ok(VersionPins::default());
    };
    let text = value
        .to_str()
        .map_err(|_| Error::invalid_argument(format!("{VERSIONS_HEADER}: not text")))?;
    Ok(VersionPins::parse(text)?)
}

/// The freshness bound a request asks for, if any. A malformed value is an
/// `INVALID_ARGUMENT`: a caller who asked for fresh data must not get old data by typo.
fn max_staleness(metadata: &HeaderMap) -> Result<Option<Duration>> {
    let Some(value) = metadata.get(MAX_STALENESS_HEADER) else {
        return Ok(None);
    };
    let bad_bound = |why: &str| {
        Error::invalid_argument(format!(
            "{MAX_STALENESS_HEADER}: expected a duration such as 30m, 1h or 2d ({why})"
        ))
    };
    let text = value.to_str().map_err(|_| bad_bound("not text"))?;
    humantime::parse_duration(text.trim())
        .map(Some)
        .map_err(|e| bad_bound(&e.to_string()))
}

/// The time limit a request asks for, if any; malformed values are `INVALID_ARGUMENT`.
fn requested_timeout(metadata: &HeaderMap) -> Result<Option<Duration>> {
    let Some(value) = metadata.get(TIMEOUT_HEADER) else {
        return Ok(None);
    };
    let parsed = value
        .to_str()
        .ok()
        .and_then(|text| humantime::parse_duration(text.trim()).ok())
        .filter(|d| !d.is_zero());
    match parsed {
        Some(d) => Ok(Some(d)),
        None => Err(Error::invalid_argument(format!(
            "{TIMEOUT_HEADER}: expected a positive duration such as 500ms, 30s or 5m"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_are_parsed_from_the_headers() {
        let mut metadata = HeaderMap::new();
        let none = query_options(&metadata).unwrap();
        assert_eq!((none.max_staleness, none.timeout), (None, None));
        metadata.insert(MAX_STALENESS_HEADER, "1h".parse().unwrap());
        metadata.insert(TIMEOUT_HEADER, "30s".parse().unwrap());
        let both = query_options(&metadata).unwrap();
        assert_eq!(both.max_staleness, Some(Duration::from_secs(3600)));
        assert_eq!(both.timeout, Some(Duration::from_secs(30)));
        metadata.insert(MAX_STALENESS_HEADER, "soon".parse().unwrap());
        let error = query_options(&metadata).unwrap_err();
        assert_eq!(error.code_name(), "InvalidArgument", "{error}");
        metadata.insert(MAX_STALENESS_HEADER, "1h".parse().unwrap());
        metadata.insert(TIMEOUT_HEADER, "0s".parse().unwrap());
        assert!(query_options(&metadata).is_err());
    }
}
