//! `POST /v1/query`: a statement in, its results streamed out in the format the
//! request accepts.
//!
//! The body is the SQL text, or, with `Content-Type: application/json`, an object
//! `{"sql": "...", "parameters": [...]}` whose positional parameters bind to `$1..$n`
//! (or `?`). The statement is planned and executed by the engine under the caller's
//! session, like any other door's, with the bounds the `x-meshgate-timeout` and
//! `x-meshgate-max-staleness` headers ask for. The first batch is awaited before the
//! response starts, so that a failing query (a missing table, a broken product, a
//! storage failure on the first read) is answered with its status code; a failure
//! later in the stream cuts the response off (the client sees it incomplete), and the
//! audit record says why. A client that disconnects stops its query.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use datafusion::common::ScalarValue;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use meshgate_catalog::Principal;
use meshgate_engine::{
    DeprecatedRead, Error as EngineError, ErrorClass, Execution, MAX_SQL_BYTES, PlanningRecord,
    PreparedStatement, QueryOptions, QueryRequest, SentBytes, Statement,
};
use serde::Deserialize;

use crate::options::{DEPRECATED_HEADER, deprecated_header_value};

use super::Door;
use super::failure::Failure;
use super::format::{Encoder, ResultFormat};
use crate::error::Error;
use crate::options::query_options;
use crate::stall::{BoxedStream, close_when_stalled};

/// How the audit names the planning of a query through this door.
pub(crate) const QUERY_RPC: &str = "HTTP/POST /v1/query";
/// How the audit names the sending of its results.
const RESULTS_RPC: &str = "HTTP/POST /v1/query (results)";
/// The response header carrying the query's id (also in error bodies).
pub const QUERY_ID_HEADER: &str = "x-meshgate-query-id";
/// The largest request body: the longest SQL the engine takes, JSON-escaped, and its
/// parameters.
const MAX_BODY_BYTES: usize = 2 * MAX_SQL_BYTES + 64 * 1024;

/// A query sent as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonQuery {
    sql: String,
    #[serde(default)]
    parameters: Vec<serde_json::Value>,
}

/// The handler of `POST /v1/query`.
pub(crate) async fn post_query(
    State(door): State<Arc<Door>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match door.query(&headers, body).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    }
}

/// A query whose results have started: the stream (its first batch taken), that batch,
/// and the query's id and byte counter.
pub(crate) struct Started {
    pub(crate) batches: SendableRecordBatchStream,
    pub(crate) first: Option<arrow::array::RecordBatch>,
    pub(crate) query_id: String,
    pub(crate) sent: SentBytes,
    /// The deprecated products the query reads.
    pub(crate) deprecated: Vec<DeprecatedRead>,
}

impl Door {
    async fn query(self: &Arc<Self>, headers: &HeaderMap, body: Body) -> Result<Response, Failure> {
        let principal = self.caller(headers, QUERY_RPC).await?;
        let request = async {
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
            let format = ResultFormat::negotiate(accept)
                .map_err(|e| Failure::bad_request(StatusCode::NOT_ACCEPTABLE, e.to_string()))?;
            let options = query_options(headers).map_err(|e| Failure::of(e, None))?;
            let body = self.read_body(headers, body).await?;
            Ok::<_, Failure>((format, options, statement_of(headers, &body)?))
        };
        let (format, options, statement) = request
            .await
            .inspect_err(|failure| self.refused(QUERY_RPC, &principal, failure))?;
        let mut started = self
            .start(principal, statement, options, (QUERY_RPC, RESULTS_RPC))
            .await?;
        let query_id = started.query_id.clone();
        let deprecated = std::mem::take(&mut started.deprecated);
        if let Some(why) = format.unfit_column(&started.batches.schema()) {
            // Dropping the started stream stops the query (audited as cancelled).
            let mut failure = Failure::bad_request(StatusCode::NOT_ACCEPTABLE, why);
            failure.query_id = Some(query_id);
            return Err(failure);
        }
        let idle = self.stream_idle_timeout;
        let body = encoded(started, format).map_err(|e| Failure::of(e, Some(&query_id)))?;
        let body = close_when_stalled(body, idle, Some(query_id.clone()), move |idle| {
            Err(std::io::Error::other(format!(
                "the result stream was closed: its client read nothing for {}",
                humantime::format_duration(idle)
            )))
        });
        let mut response = Response::new(Body::from_stream(body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(id) = HeaderValue::from_str(&query_id) {
            headers.insert(QUERY_ID_HEADER, id);
        }
        add_deprecation_headers(headers, &deprecated);
        Ok(response)
    }

    /// Plans `statement` for `principal` and starts its execution, up to its first
    /// batch; audited under `rpcs` (planning, results). A query planned under a view
    /// that changed before it started is planned once more.
    pub(crate) async fn start(
        self: &Arc<Self>,
        principal: Principal,
        statement: Statement,
        options: QueryOptions,
        rpcs: (&'static str, &'static str),
    ) -> Result<Started, Failure> {
        let mut attempts = 0;
        let (mut batches, sent, query_id, deprecated) = loop {
            attempts += 1;
            // Each attempt is its own query, with its own id and audit records.
            let query_id = uuid::Uuid::new_v4().to_string();
            let fail = |e: EngineError| Failure::of(Error::from(e), Some(&query_id));
            let span = tracing::info_span!(
                "http_query",
                query_id = %query_id,
                subject = %principal.subject,
                tables = tracing::field::Empty,
                rows = tracing::field::Empty,
                bytes = tracing::field::Empty,
                outcome = tracing::field::Empty,
                code = tracing::field::Empty,
                "otel.status_code" = tracing::field::Empty,
            );
            let request = QueryRequest {
                principal: principal.clone(),
                statement: statement.clone(),
                options: options.clone(),
                query_id: query_id.clone(),
                rpc: rpcs.0,
                span: span.clone(),
                planning_record: PlanningRecord::OnFailure,
            };
            let planned = Arc::new(self.engine.plan(request).await.map_err(fail)?);
            let deprecated = planned.deprecated().to_vec();
            let sent = SentBytes::default();
            let execution = Execution {
                principal: &principal,
                options: options.clone(),
                rpc: rpcs.1,
                span,
                sent: sent.clone(),
                part: 0,
            };
            match self.engine.execute(planned, execution).await {
                Ok(batches) => break (batches, sent, query_id, deprecated),
                Err(EngineError::ViewChanged) if attempts < 2 => continue,
                Err(e) => return Err(fail(e)),
            }
        };
        let fail = |e: EngineError| Failure::of(Error::from(e), Some(&query_id));
        let first = match batches.next().await {
            Some(Ok(batch)) => Some(batch),
            Some(Err(e)) => return Err(fail(e.into())),
            None => None,
        };
        Ok(Started {
            batches,
            first,
            query_id,
            sent,
            deprecated,
        })
    }

    /// The request body, read within the request timeout and the size limit.
    async fn read_body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, Failure> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let too_large = || {
            Failure::bad_request(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        };
        if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
            return Err(too_large());
        }
        match tokio::time::timeout(
            self.request_timeout,
            axum::body::to_bytes(body, MAX_BODY_BYTES),
        )
        .await
        {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(_)) => Err(Failure::bad_request(
                StatusCode::BAD_REQUEST,
                format!(
                    "the request body could not be read: cut off, or larger than \
                     {MAX_BODY_BYTES} bytes"
                ),
            )),
            Err(_) => Err(Failure::bad_request(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body was not received within {}",
                    humantime::format_duration(self.request_timeout)
                ),
            )),
        }
    }
}

/// One `x-meshgate-deprecated` header per deprecated product read, and `Sunset`
/// (RFC 8594): when the first of them stops serving.
fn add_deprecation_headers(headers: &mut HeaderMap, deprecated: &[DeprecatedRead]) {
    for read in deprecated {
        if let Ok(value) = HeaderValue::from_str(&deprecated_header_value(read)) {
            headers.append(DEPRECATED_HEADER, value);
        }
    }
    if let Some(ends) = deprecated.iter().map(|d| d.ends_at).min()
        && let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(ends))
    {
        headers.insert("sunset", value);
    }
}

/// The statement a request body holds: SQL text, or a JSON query with parameters.
fn statement_of(headers: &HeaderMap, body: &[u8]) -> Result<Statement, Failure> {
    let bad = |message: String| Failure::bad_request(StatusCode::BAD_REQUEST, message);
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    let (sql, parameters) = if json {
        let query: JsonQuery = serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "the body is not a JSON query {{\"sql\": \"...\", \"parameters\": [...]}}: {e}"
            ))
        })?;
        (query.sql, query.parameters)
    } else {
        let sql = std::str::from_utf8(body)
            .map_err(|_| bad("the SQL is not UTF-8 text".into()))?
            .to_string();
        (sql, Vec::new())
    };
    if sql.trim().is_empty() {
        return Err(bad(
            "no statement: send the SQL as the request body, or JSON with `sql`".into(),
        ));
    }
    if parameters.is_empty() {
        return Ok(Statement::Sql(sql));
    }
    let values = parameters
        .iter()
        .enumerate()
        .map(|(i, value)| scalar_of(i, value))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Statement::Prepared(PreparedStatement::with_parameters(
        &sql, values,
    )))
}

/// The value of JSON parameter `index` (zero-based); the engine casts it to the type
/// its placeholder takes.
fn scalar_of(index: usize, value: &serde_json::Value) -> Result<ScalarValue, Failure> {
    use serde_json::Value;
    Ok(match value {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => ScalarValue::Int64(Some(i)),
            (None, Some(u), _) => ScalarValue::UInt64(Some(u)),
            (None, None, Some(f)) => ScalarValue::Float64(Some(f)),
            _ => ScalarValue::Null,
        },
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        Value::Array(_) | Value::Object(_) => {
            return Err(Failure::bad_request(
                StatusCode::BAD_REQUEST,
                format!(
                    "parameter ${}: arrays and objects cannot be bound; send a string, \
                     number, boolean or null",
                    index + 1
                ),
            ));
        }
    })
}

/// The response body of a started query in `format`: its opening, its batches as they
/// come, its closing. Bytes are counted as they are handed to the connection; a
/// failure of the stream ends the body with an error (the connection is cut, so the
/// client cannot take a partial result for a whole one).
fn encoded(
    started: Started,
    format: ResultFormat,
) -> Result<BoxedStream<Result<Bytes, std::io::Error>>, Error> {
    let Started {
        batches,
        first,
        query_id: _,
        sent,
        deprecated: _,
    } = started;
    let schema = batches.schema();
    let (encoder, opening) = Encoder::start(format, &schema)?;
    sent.add(opening.len() as u64);
    struct Sending {
        batches: SendableRecordBatchStream,
        first: Option<arrow::array::RecordBatch>,
        encoder: Encoder,
        sent: SentBytes,
        done: bool,
    }
    let state = Sending {
        batches,
        first,
        encoder,
        sent,
        done: false,
    };
    let rest = futures::stream::unfold(state, move |mut s| {
        let schema = Arc::clone(&schema);
        async move {
            if s.done {
                return None;
            }
            let next = match s.first.take() {
                Some(batch) => Some(Ok(batch)),
                None => s.batches.next().await,
            };
            let item = match next {
                Some(Ok(batch)) => s.encoder.batch(&batch),
                Some(Err(e)) => {
                    // The engine records its own error; the client sees the cut.
                    s.done = true;
                    let error = Error::from(e);
                    return Some((Err(std::io::Error::other(error.client_message())), s));
                }
                None => {
                    s.done = true;
                    s.encoder.finish(&schema)
                }
            };
            let item = match item {
                Ok(bytes) => {
                    s.sent.add(bytes.len() as u64);
                    Ok(bytes)
                }
                Err(e) => {
                    s.done = true;
                    s.sent.fail(ErrorClass::Internal.name());
                    tracing::error!(error = %e, "encoding query results failed");
                    Err(std::io::Error::other("encoding the results failed"))
                }
            };
            Some((item, s))
        }
    });
    let opening = futures::stream::once(async move { Ok(opening) });
    Ok(Box::pin(opening.chain(rest)))
}
