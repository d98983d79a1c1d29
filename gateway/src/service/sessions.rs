//! Flight SQL sessions: options a client sets once (`SetSessionOptions`) for the calls
//! that follow, as ADBC's current catalog and schema and the JDBC driver's `catalog=`
//! property do.
//!
//! A session is named by the `arrow_flight_session_id` cookie, which the answer to the
//! first `SetSessionOptions` sets (clients send it back with their cookie middleware:
//! the JDBC driver always, ADBC with `adbc.flight.sql.rpc.with_cookie_middleware`).
//! The cookie is the session: its options, sealed with the replicas' handle keys
//! ([`super::sealed`]), so any replica serves it and none keeps anything. Each
//! `SetSessionOptions` answers with a new cookie; a session expires
//! `handles.session_ttl` after its options were last set. Sessions belong to the
//! principal that made them (another principal's cookie names no session), hold at most
//! [`MAX_SESSION_BYTES`] of options (so the cookie fits in a request's headers), and
//! carry no authority: every call is still authenticated by its token, and a session's
//! catalog only says where partly qualified names resolve. `CloseSession` asks the
//! client to forget its cookie, and the replica that closed it refuses it from then
//! on; another replica cannot know, and serves it (for its principal only) until it
//! expires.
//!
//! Options: `catalog` and `schema` (a domain and a product: `visits` is then
//! `<catalog>.<schema>.visits`), `max_staleness` and `timeout` (durations such as
//! `30m`, as the `x-meshgate-*` headers take them; a header on a call wins over the
//! session's value), and `versions` (`domain.product.table@v3, ...`: those tables are
//! read at that version by every call of the session, for repeatable reads). Unknown options get the protocol's `INVALID_NAME` and bad values
//! `INVALID_VALUE`, per option; the others are still set.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use meshgate_catalog::Principal;
use meshgate_engine::{NameDefaults, QueryOptions, VersionPins};
use prost::Message;

use super::handles::Id;
use super::sealed;
use super::session_messages::{
    CLOSED, CloseSessionResult, GetSessionOptionsResult, INVALID_NAME, INVALID_VALUE, OptionValue,
    SessionOptionValue, SetSessionOptionError, SetSessionOptionsRequest, SetSessionOptionsResult,
};
use super::state::GatewayState;
use crate::error::{Error, Result};
use crate::handle_keys::HandlePurpose;
use crate::options::query_options;

/// The cookie naming a session (the name Arrow's own session middlewares use).
pub(super) const SESSION_COOKIE: &str = "arrow_flight_session_id";
/// The session actions.
pub(super) const SET_SESSION_OPTIONS: &str = "SetSessionOptions";
pub(super) const GET_SESSION_OPTIONS: &str = "GetSessionOptions";
pub(super) const CLOSE_SESSION: &str = "CloseSession";

/// The longest option value accepted.
const MAX_VALUE_LEN: usize = 4096;
/// Most options one request may set: there are four, so this only bounds what a
/// request makes the server answer.
const MAX_OPTIONS_PER_REQUEST: usize = 32;
/// Most bytes a session's options take together: the cookie carries them, and headers
/// are bounded (gRPC clients refuse past 8 KiB of metadata).
pub(super) const MAX_SESSION_BYTES: usize = 3 * 1024;

/// A session's options as its cookie carries them: the text of each, as set.
#[derive(Clone, PartialEq, Message)]
struct SessionBody {
    #[prost(string, optional, tag = "1")]
    catalog: Option<String>,
    #[prost(string, optional, tag = "2")]
    schema: Option<String>,
    #[prost(string, optional, tag = "3")]
    max_staleness: Option<String>,
    #[prost(string, optional, tag = "4")]
    timeout: Option<String>,
    #[prost(string, optional, tag = "5")]
    versions: Option<String>,
}

/// A session's options, as set (their text is kept to answer `GetSessionOptions`).
#[derive(Debug, Clone, Default)]
pub(super) struct SessionValues {
    catalog: Option<String>,
    schema: Option<String>,
    max_staleness: Option<(Duration, String)>,
    timeout: Option<(Duration, String)>,
    versions: Option<(VersionPins, String)>,
}

/// What a session action answers: its result, and the cookie to set, if a session was
/// made.
#[derive(Debug)]
pub(super) struct SessionAnswer {
    pub(super) result: arrow_flight::Result,
    pub(super) set_cookie: Option<String>,
}

impl SessionValues {
    /// Sets `name` to `value` (none: removes it); the protocol's error code if not.
    fn set(&mut self, name: &str, value: Option<&OptionValue>) -> std::result::Result<(), i32> {
        let text = match value {
            None => None,
            Some(OptionValue::String(text)) if text.len() <= MAX_VALUE_LEN => Some(text.trim()),
            Some(_) => return Err(INVALID_VALUE),
        };
        let duration = |text: &str, positive: bool| {
            humantime::parse_duration(text)
                .ok()
                .filter(|d| !positive || !d.is_zero())
                .map(|d| (d, text.to_string()))
                .ok_or(INVALID_VALUE)
        };
        let identifier = |text: &str| {
            let ok = !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
            ok.then(|| text.to_string()).ok_or(INVALID_VALUE)
        };
        match name {
            "catalog" => self.catalog = text.map(identifier).transpose()?,
            "schema" => self.schema = text.map(identifier).transpose()?,
            "max_staleness" => self.max_staleness = text.map(|t| duration(t, false)).transpose()?,
            "timeout" => self.timeout = text.map(|t| duration(t, true)).transpose()?,
            "versions" => {
                self.versions = text
                    .map(|t| {
                        let pins = VersionPins::parse(t).map_err(|_| INVALID_VALUE)?;
                        Ok::<_, i32>((pins.clone(), pins.to_text()))
                    })
                    .transpose()?
                    .filter(|(pins, _)| !pins.is_empty());
            }
            _ => return Err(INVALID_NAME),
        }
        Ok(())
    }

    /// The options as a cookie carries them.
    fn body(&self) -> SessionBody {
        SessionBody {
            catalog: self.catalog.clone(),
            schema: self.schema.clone(),
            max_staleness: self.max_staleness.as_ref().map(|d| d.1.clone()),
            timeout: self.timeout.as_ref().map(|d| d.1.clone()),
            versions: self.versions.as_ref().map(|v| v.1.clone()),
        }
    }

    /// The options a cookie carried; `None` if they no longer parse.
    fn from_body(body: SessionBody) -> Option<Self> {
        let mut values = Self::default();
        for (name, text) in [
            ("catalog", body.catalog),
            ("schema", body.schema),
            ("max_staleness", body.max_staleness),
            ("timeout", body.timeout),
            ("versions", body.versions),
        ] {
            if let Some(text) = text {
                values.set(name, Some(&OptionValue::String(text))).ok()?;
            }
        }
        Some(values)
    }

    /// The options as `GetSessionOptions` reports them.
    fn reported(&self) -> HashMap<String, SessionOptionValue> {
        let text = |value: &str| SessionOptionValue {
            option_value: Some(OptionValue::String(value.to_string())),
        };
        let mut options = HashMap::new();
        for (name, value) in [
            ("catalog", self.catalog.as_deref()),
            ("schema", self.schema.as_deref()),
            (
                "max_staleness",
                self.max_staleness.as_ref().map(|d| d.1.as_str()),
            ),
            ("timeout", self.timeout.as_ref().map(|d| d.1.as_str())),
            ("versions", self.versions.as_ref().map(|v| v.1.as_str())),
        ] {
            if let Some(value) = value {
                options.insert(name.to_string(), text(value));
            }
        }
        options
    }
}

/// The session handle named by the request's cookies, if any.
fn session_cookie(headers: &HeaderMap) -> Option<Vec<u8>> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name.trim() == SESSION_COOKIE)
                .then(|| URL_SAFE_NO_PAD.decode(value.trim()).unwrap_or_default())
        })
}

impl GatewayState {
    /// The options of a call of `principal`: its session's, under the call's headers.
    /// A cookie naming no live session of the principal is refused, so that a
    /// freshness bound or a catalog is never silently dropped.
    pub(super) fn call_options(
        &self,
        principal: &Principal,
        headers: &HeaderMap,
    ) -> Result<QueryOptions> {
        let mut options = query_options(headers)?;
        let Some(handle) = session_cookie(headers) else {
            return Ok(options);
        };
        let session = self.session(principal, &handle)?;
        options.max_staleness = options.max_staleness.or(session.max_staleness.map(|d| d.0));
        options.timeout = options.timeout.or(session.timeout.map(|d| d.0));
        if options.versions.is_empty()
            && let Some((pins, _)) = session.versions
        {
            options.versions = pins;
        }
        options.names = NameDefaults {
            catalog: session.catalog,
            schema: session.schema,
        };
        Ok(options)
    }

    fn session(&self, principal: &Principal, cookie: &[u8]) -> Result<SessionValues> {
        self.live_session(principal, cookie)
            .map(|(_, values)| values)
            .ok_or_else(|| {
                Error::unknown_handle(
                    "the Flight SQL session is unknown or expired (handles.session_ttl): \
                 set its options again, or reconnect",
                )
            })
    }

    /// The id and options of the session `cookie` names for `principal`, unless it is
    /// not one, expired or was closed here.
    fn live_session(&self, principal: &Principal, cookie: &[u8]) -> Option<(Id, SessionValues)> {
        let owner = principal.fingerprint();
        let opened = sealed::open(&self.keys, HandlePurpose::Session, cookie, &owner)
            .filter(|opened| self.closed_sessions.get(&opened.id, &owner).is_err())?;
        let values = SessionValues::from_body(SessionBody::decode(opened.body.as_slice()).ok()?)?;
        Some((opened.id, values))
    }

    /// `SetSessionOptions`: sets what it can, reports per option what it cannot, and
    /// makes the session (with its cookie) on first use, or when the cookie names no
    /// live session of the principal (expired: the client starts afresh).
    pub(super) fn set_session_options(
        &self,
        principal: &Principal,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<SessionAnswer> {
        let request = SetSessionOptionsRequest::decode(body)
            .map_err(|_| Error::invalid_argument("SetSessionOptions: malformed request"))?;
        if request.session_options.len() > MAX_OPTIONS_PER_REQUEST {
            return Err(Error::invalid_argument(format!(
                "SetSessionOptions: {} options in one request; the server has five",
                request.session_options.len()
            )));
        }
        let owner = principal.fingerprint();
        // A live session keeps its id across settings, so closing it closes every
        // cookie it had.
        let live = session_cookie(headers).and_then(|cookie| self.live_session(principal, &cookie));
        let (id, mut values) = match live {
            Some((id, values)) => (id, values),
            None => (*uuid::Uuid::new_v4().as_bytes(), SessionValues::default()),
        };
        let mut errors = HashMap::new();
        for (name, value) in &request.session_options {
            let before = values.clone();
            let set = values
                .set(name, value.option_value.as_ref())
                .and_then(|()| {
                    // Too much to carry in a cookie: this option is refused, as too long.
                    if values.body().encoded_len() > MAX_SESSION_BYTES {
                        values = before;
                        return Err(INVALID_VALUE);
                    }
                    Ok(())
                });
            if let Err(code) = set {
                // Names are echoed back; an overlong one is not worth echoing whole.
                let name: String = name.chars().take(MAX_VALUE_LEN).collect();
                errors.insert(name, SetSessionOptionError { value: code });
            }
        }
        let sealed = sealed::seal(
            &self.keys,
            HandlePurpose::Session,
            &id,
            &owner,
            self.ttls.session,
            values.body().encode_to_vec(),
        )?;
        Ok(SessionAnswer {
            result: encoded(&SetSessionOptionsResult { errors }),
            set_cookie: Some(cookie(&sealed)),
        })
    }

    /// `GetSessionOptions`: the options set (none without a session).
    pub(super) fn get_session_options(
        &self,
        principal: &Principal,
        headers: &HeaderMap,
    ) -> Result<arrow_flight::Result> {
        let values = match session_cookie(headers) {
            Some(handle) => self.session(principal, &handle)?,
            None => SessionValues::default(),
        };
        Ok(encoded(&GetSessionOptionsResult {
            session_options: values.reported(),
        }))
    }

    /// `CloseSession`: forgets the session, and asks the client to forget its cookie.
    pub(super) fn close_session(
        &self,
        principal: &Principal,
        headers: &HeaderMap,
    ) -> Result<SessionAnswer> {
        // The cookie holds the whole session: forgetting it is closing it. (Another
        // principal's cookie opens no session of the caller's: nothing to close.)
        let cookie = session_cookie(headers);
        if let Some((id, _)) = cookie
            .as_deref()
            .and_then(|c| self.live_session(principal, c))
        {
            self.closed_sessions.put(id, &principal.fingerprint(), ());
        }
        let closed = cookie.is_some();
        Ok(SessionAnswer {
            result: encoded(&CloseSessionResult { status: CLOSED }),
            set_cookie: closed.then(|| format!("{SESSION_COOKIE}=; Max-Age=0")),
        })
    }
}

fn cookie(sealed: &[u8]) -> String {
    format!("{SESSION_COOKIE}={}", URL_SAFE_NO_PAD.encode(sealed))
}

fn encoded(message: &impl Message) -> arrow_flight::Result {
    arrow_flight::Result {
        body: message.encode_to_vec().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> Option<OptionValue> {
        Some(OptionValue::String(value.into()))
    }

    #[test]
    fn options_are_checked_one_by_one() {
        let mut values = SessionValues::default();
        assert_eq!(values.set("catalog", text("clinical").as_ref()), Ok(()));
        assert_eq!(values.set("schema", text("encounters").as_ref()), Ok(()));
        assert_eq!(values.set("max_staleness", text("30m").as_ref()), Ok(()));
        assert_eq!(
            values.set("timeout", text("0s").as_ref()),
            Err(INVALID_VALUE)
        );
        assert_eq!(
            values.set("timeout", Some(&OptionValue::Int64(5))),
            Err(INVALID_VALUE)
        );
        assert_eq!(
            values.set("catalog", text("a.b").as_ref()),
            Err(INVALID_VALUE)
        );
        assert_eq!(
            values.set("colour", text("blue").as_ref()),
            Err(INVALID_NAME)
        );
        let reported = values.reported();
        assert_eq!(reported.len(), 3, "{reported:?}");
        assert_eq!(values.set("schema", None), Ok(()), "no value removes");
        assert_eq!(values.reported().len(), 2);
        assert_eq!(values.catalog.as_deref(), Some("clinical"));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        assert_eq!(session_cookie(&headers), None);
        headers.insert(
            http::header::COOKIE,
            format!("a=b; {SESSION_COOKIE}=Cv8; c=d").parse().unwrap(),
        );
        assert_eq!(session_cookie(&headers), Some(vec![0x0a, 0xff]));
    }
}
