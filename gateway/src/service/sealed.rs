//! Self-contained handles: a ticket, a prepared-statement handle or a session cookie
//! carries, sealed with the replicas' shared [`HandleKeys`], what any replica needs to
//! serve it: the statement, its bound values and options, the snapshot it was planned
//! on, whose it is and until when. Nothing in it is readable or alterable without a key;
//! a handle that does not open, is another principal's, or is past its expiry is
//! unknown (`NOT_FOUND`), whatever the reason.
//!
//! The handle also names (by a random id) what the issuing process keeps of it (the
//! plan, the prepared statement): redeemed there, nothing is planned again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;
use meshgate_engine::{NameDefaults, PreparedParts, PreparedStatement, ResultParts, Statement};
use prost::Message;

use super::handles::Id;
use crate::error::{Error, Result};
use crate::handle_keys::{HandleKeys, HandlePurpose};

/// What every sealed handle holds around its body.
#[derive(Clone, PartialEq, Message)]
struct Envelope {
    /// The id of what the issuing process keeps of the handle.
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    /// SHA-256 of the fingerprint of the principal it was issued to (a digest keeps
    /// handles small whatever the principal's roles and attributes).
    #[prost(bytes = "vec", tag = "2")]
    owner: Vec<u8>,
    /// When it was issued (milliseconds since the Unix epoch).
    #[prost(uint64, tag = "3")]
    issued_ms: u64,
    /// When it stops opening (milliseconds since the Unix epoch).
    #[prost(uint64, tag = "4")]
    expires_ms: u64,
    /// What the handle stands for.
    #[prost(bytes = "vec", tag = "5")]
    body: Vec<u8>,
}

/// A handle opened: the id of its entry where it was issued, its body, and whether it
/// is past its expiry.
pub(super) struct Opened {
    pub(super) id: Id,
    pub(super) body: Vec<u8>,
    pub(super) expired: bool,
}

/// The digest of an owner's fingerprint that handles carry.
fn owner_digest(owner: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, owner.as_bytes())
        .as_ref()
        .to_vec()
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seals `body` for `owner` under `id`, to open until `ttl` from now.
pub(super) fn seal(
    keys: &HandleKeys,
    purpose: HandlePurpose,
    id: &[u8],
    owner: &str,
    ttl: Duration,
    body: Vec<u8>,
) -> Result<Bytes> {
    let issued_ms = now_ms();
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let envelope = Envelope {
        id: id.to_vec(),
        owner: owner_digest(owner),
        issued_ms,
        expires_ms: issued_ms.saturating_add(ttl_ms),
        body,
    };
    keys.seal(purpose, &envelope.encode_to_vec())
        .map_err(|e| Error::internal(e.to_string()))
}

/// The handle `sealed` opened for `owner`, if it opens, is `owner`'s and has not
/// expired.
pub(super) fn open(
    keys: &HandleKeys,
    purpose: HandlePurpose,
    sealed: &[u8],
    owner: &str,
) -> Option<Opened> {
    open_even_expired(keys, purpose, sealed, owner).filter(|opened| !opened.expired)
}

/// The handle `sealed` opened for `owner`, if it opens and is `owner`'s, expired or not
/// (for handles whose entry, kept where they were issued, lives on while in use).
pub(super) fn open_even_expired(
    keys: &HandleKeys,
    purpose: HandlePurpose,
    sealed: &[u8],
    owner: &str,
) -> Option<Opened> {
    let plaintext = keys.open(purpose, sealed)?;
    let envelope = Envelope::decode(plaintext.as_slice()).ok()?;
    if envelope.owner != owner_digest(owner) {
        return None;
    }
    let id: Id = envelope.id.as_slice().try_into().ok()?;
    Some(Opened {
        id,
        body: envelope.body,
        expired: now_ms() >= envelope.expires_ms,
    })
}

/// A prepared statement as a handle carries it.
#[derive(Clone, PartialEq, Message)]
pub(super) struct PreparedBody {
    #[prost(string, tag = "1")]
    sql: String,
    /// The parameter schema, as an Arrow IPC stream without batches.
    #[prost(bytes = "vec", tag = "2")]
    parameter_schema: Vec<u8>,
    /// The bound row, as an Arrow IPC stream; empty when nothing is bound.
    #[prost(bytes = "vec", tag = "3")]
    bound: Vec<u8>,
    /// Whether names resolve as fixed when it was prepared (`catalog`, `schema`).
    #[prost(bool, tag = "4")]
    names_fixed: bool,
    #[prost(string, optional, tag = "5")]
    catalog: Option<String>,
    #[prost(string, optional, tag = "6")]
    schema: Option<String>,
}

impl PreparedBody {
    /// The body of `statement`.
    pub(super) fn of(statement: &PreparedStatement) -> Result<Self> {
        let parts = statement.to_parts()?;
        let (names_fixed, catalog, schema) = match parts.names {
            Some(names) => (true, names.catalog, names.schema),
            None => (false, None, None),
        };
        Ok(Self {
            sql: parts.sql,
            parameter_schema: ipc_stream(&parts.parameter_schema, None)?,
            bound: match &parts.bound {
                Some(row) => ipc_stream(&row.schema(), Some(row))?,
                None => Vec::new(),
            },
            names_fixed,
            catalog,
            schema,
        })
    }

    /// The prepared statement this body describes; `None` if it does not decode.
    pub(super) fn statement(&self) -> Option<PreparedStatement> {
        let (parameter_schema, _) = read_ipc_stream(&self.parameter_schema)?;
        let bound = if self.bound.is_empty() {
            None
        } else {
            read_ipc_stream(&self.bound)?.1
        };
        let names = self.names_fixed.then(|| NameDefaults {
            catalog: self.catalog.clone(),
            schema: self.schema.clone(),
        });
        PreparedStatement::from_parts(PreparedParts {
            sql: self.sql.clone(),
            parameter_schema,
            bound,
            names,
        })
        .ok()
    }
}

/// A ticket's body: the statement as it was planned, the options that shaped its plan,
/// when it must be done and the snapshot it was planned on.
#[derive(Clone, PartialEq, Message)]
pub(super) struct TicketBody {
    /// SQL text, when the statement was not a prepared one.
    #[prost(string, optional, tag = "1")]
    sql: Option<String>,
    /// The prepared statement, when it was one.
    #[prost(message, optional, tag = "2")]
    prepared: Option<PreparedBody>,
    #[prost(string, optional, tag = "3")]
    catalog: Option<String>,
    #[prost(string, optional, tag = "4")]
    schema: Option<String>,
    /// The session's version pins, as `VersionPins::parse` takes them.
    #[prost(string, tag = "5")]
    versions: String,
    #[prost(uint64, optional, tag = "6")]
    max_staleness_ms: Option<u64>,
    /// When the query must be done (milliseconds since the Unix epoch).
    #[prost(uint64, tag = "7")]
    deadline_ms: u64,
    /// The plan's snapshot (`PlanSnapshot`).
    #[prost(bytes = "vec", tag = "8")]
    snapshot: Vec<u8>,
    /// The query's id, as its first planning's audit record names it.
    #[prost(string, tag = "9")]
    query_id: String,
    /// Which part of a result served in parts the ticket redeems.
    #[prost(message, optional, tag = "10")]
    part: Option<PartBody>,
}

/// One part of a result served in parts, and how the plan was split (`ResultParts`).
#[derive(Clone, PartialEq, Message)]
struct PartBody {
    #[prost(uint32, tag = "1")]
    part: u32,
    #[prost(uint32, tag = "2")]
    parts: u32,
    #[prost(uint32, tag = "3")]
    partitions: u32,
    #[prost(uint32, tag = "4")]
    target_partitions: u32,
    #[prost(bytes = "vec", tag = "5")]
    layout: Vec<u8>,
}

/// What a ticket stands for, opened.
pub(super) struct TicketContents {
    pub(super) statement: Statement,
    pub(super) names: NameDefaults,
    pub(super) versions: String,
    pub(super) max_staleness: Option<Duration>,
    /// Time left until the query's deadline (zero: passed).
    pub(super) time_left: Duration,
    pub(super) snapshot: Vec<u8>,
    pub(super) query_id: String,
    /// The part it redeems (0 when the result is served whole), and how the result was
    /// split into parts.
    pub(super) part: (usize, Option<ResultParts>),
}

impl TicketBody {
    /// The body of a ticket for `statement`, planned with these options, to be done
    /// within `time_left`, on `snapshot`.
    pub(super) fn new(
        statement: &Statement,
        names: &NameDefaults,
        versions: String,
        max_staleness: Option<Duration>,
        time_left: Duration,
        snapshot: &[u8],
        query_id: String,
    ) -> Result<Self> {
        let (sql, prepared) = match statement {
            Statement::Sql(sql) => (Some(sql.clone()), None),
            Statement::Prepared(p) => (None, Some(PreparedBody::of(p)?)),
        };
        Ok(Self {
            sql,
            prepared,
            catalog: names.catalog.clone(),
            schema: names.schema.clone(),
            versions,
            max_staleness_ms: max_staleness.map(millis),
            deadline_ms: now_ms().saturating_add(millis(time_left)),
            snapshot: snapshot.to_vec(),
            query_id,
            part: None,
        })
    }

    /// The body of the ticket of part `part` of a result served as `parts`.
    pub(super) fn for_part(&self, part: usize, parts: &ResultParts) -> Self {
        let small = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            part: Some(PartBody {
                part: small(part),
                parts: small(parts.parts),
                partitions: small(parts.partitions),
                target_partitions: small(parts.target_partitions),
                layout: parts.layout.to_vec(),
            }),
            ..self.clone()
        }
    }

    /// The contents of an opened ticket; `None` if they do not decode.
    pub(super) fn contents(body: &[u8]) -> Option<TicketContents> {
        let body = Self::decode(body).ok()?;
        let statement = match (body.sql, &body.prepared) {
            (Some(sql), None) => Statement::Sql(sql),
            (None, Some(prepared)) => Statement::Prepared(prepared.statement()?),
            _ => return None,
        };
        Some(TicketContents {
            statement,
            names: NameDefaults {
                catalog: body.catalog,
                schema: body.schema,
            },
            versions: body.versions,
            max_staleness: body.max_staleness_ms.map(Duration::from_millis),
            time_left: Duration::from_millis(body.deadline_ms.saturating_sub(now_ms())),
            snapshot: body.snapshot,
            query_id: body.query_id,
            part: match body.part {
                None => (0, None),
                Some(part) => (
                    part.part as usize,
                    Some(ResultParts {
                        parts: part.parts as usize,
                        partitions: part.partitions as usize,
                        target_partitions: part.target_partitions as usize,
                        layout: part.layout.try_into().ok()?,
                    }),
                ),
            },
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `schema` and `row` as an Arrow IPC stream.
fn ipc_stream(schema: &SchemaRef, row: Option<&RecordBatch>) -> Result<Vec<u8>> {
    let encoding = |e: arrow::error::ArrowError| Error::internal(format!("sealing a handle: {e}"));
    let mut writer = StreamWriter::try_new(Vec::new(), schema).map_err(encoding)?;
    if let Some(row) = row {
        writer.write(row).map_err(encoding)?;
    }
    writer.into_inner().map_err(encoding)
}

/// The schema and first batch of an Arrow IPC stream; `None` if it does not decode.
fn read_ipc_stream(bytes: &[u8]) -> Option<(SchemaRef, Option<RecordBatch>)> {
    let mut reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).ok()?;
    let schema: Arc<Schema> = reader.schema();
    let batch = match reader.next() {
        Some(batch) => Some(batch.ok()?),
        None => None,
    };
    Some((schema, batch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    fn keys() -> HandleKeys {
        HandleKeys::parse("k 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
            .unwrap()
    }

    #[test]
    fn a_handle_opens_only_for_its_owner_until_it_expires() {
        let keys = keys();
        let id = [7u8; super::super::handles::ID_LEN];
        let sealed = seal(
            &keys,
            HandlePurpose::Ticket,
            &id,
            "ann",
            Duration::from_secs(60),
            b"body".to_vec(),
        )
        .unwrap();
        let opened = open(&keys, HandlePurpose::Ticket, &sealed, "ann").unwrap();
        assert_eq!((opened.id, opened.body.as_slice()), (id, &b"body"[..]));
        assert!(open(&keys, HandlePurpose::Ticket, &sealed, "bob").is_none());
        assert!(open(&keys, HandlePurpose::Session, &sealed, "ann").is_none());
        let expired = seal(
            &keys,
            HandlePurpose::Ticket,
            &id,
            "ann",
            Duration::ZERO,
            Vec::new(),
        )
        .unwrap();
        assert!(open(&keys, HandlePurpose::Ticket, &expired, "ann").is_none());
    }

    #[test]
    fn a_ticket_carries_its_prepared_statement_and_options() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("$1", DataType::Int64, true),
            Field::new("$2", DataType::Null, true),
        ]));
        let mut statement = PreparedStatement::from_parts(PreparedParts {
            sql: "SELECT * FROM t WHERE a = $1 AND b = $2".into(),
            parameter_schema: schema,
            bound: None,
            names: Some(NameDefaults {
                catalog: Some("clinical".into()),
                schema: None,
            }),
        })
        .unwrap();
        let row = RecordBatch::try_from_iter([
            (
                "a",
                Arc::new(Int64Array::from(vec![42])) as arrow::array::ArrayRef,
            ),
            ("b", Arc::new(StringArray::from(vec!["x"])) as _),
        ])
        .unwrap();
        statement.bind(&[row]).unwrap();
        let body = TicketBody::new(
            &Statement::Prepared(statement.clone()),
            &NameDefaults::default(),
            "clinical.labs.results@v3".into(),
            Some(Duration::from_secs(60)),
            Duration::from_secs(30),
            &[1; 32],
            "q1".into(),
        )
        .unwrap();
        let opened = TicketBody::contents(&body.encode_to_vec()).unwrap();
        let Statement::Prepared(restored) = opened.statement else {
            panic!("not a prepared statement");
        };
        let (before, after) = (statement.to_parts().unwrap(), restored.to_parts().unwrap());
        assert_eq!(before.sql, after.sql);
        assert_eq!(before.parameter_schema, after.parameter_schema);
        assert_eq!(before.bound, after.bound);
        assert_eq!(before.names, after.names);
        assert_eq!(opened.versions, "clinical.labs.results@v3");
        assert_eq!(opened.max_staleness, Some(Duration::from_secs(60)));
        assert!(opened.time_left > Duration::from_secs(25));
        assert_eq!(opened.snapshot, vec![1; 32]);
        assert!(TicketBody::contents(b"\xff\xff").is_none());
    }
}
