//! `COPY ... TO STDOUT`: a query's rows as the COPY protocol sends them (text, CSV or
//! PGCOPY binary, which ADBC's Postgres driver reads), streamed batch by batch.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::datatypes::Schema;
use bytes::Bytes;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{
    CopyCsvOptions, CopyEncoder, CopyResponse, CopyTextOptions, Response, Tag,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};

use super::Door;
use super::copy_command::CopyFormat;
use super::query::{Run, fields_of};
use super::sqlstate::user_error;

impl Door {
    /// Starts `run` and answers with its rows as COPY data in `format`.
    pub(crate) async fn copy_out(
        &self,
        run: Run<'_>,
        format: CopyFormat,
    ) -> PgWireResult<Response> {
        let begun = self.begin(run).await?;
        let wire = match format {
            CopyFormat::Binary => Format::UnifiedBinary,
            _ => Format::UnifiedText,
        };
        let fields = Arc::new(fields_of(&begun.schema, &wire)?);
        let mut encoder = match format {
            CopyFormat::Binary => CopyEncoder::new_binary(Arc::clone(&fields)),
            CopyFormat::Text => {
                CopyEncoder::new_text(Arc::clone(&fields), CopyTextOptions::default())
            }
            CopyFormat::Csv { .. } => {
                CopyEncoder::new_csv(Arc::clone(&fields), CopyCsvOptions::default())
            }
        };
        let columns = begun.schema.fields().len();
        if columns > MAX_COPY_COLUMNS {
            return Err(user_error(
                "54011",
                format!("COPY of {columns} columns; at most {MAX_COPY_COLUMNS} are taken"),
            ));
        }
        // A CSV header goes out with the first row (each COPY message is one row), and
        // so does the PGCOPY header (pgwire's encoder writes it before the first row);
        // an empty result sends either alone.
        let mut header = match format {
            CopyFormat::Csv { header: true } => Some(csv_header(&begun.schema)),
            _ => None,
        };
        let header_alone = header.clone();
        let schema = Arc::clone(&begun.schema);
        let data = self.encoded(begun.batches, begun.watch, move |batch| {
            let mut out = Vec::with_capacity(batch.num_rows());
            let mut bytes = 0;
            for row in 0..batch.num_rows() {
                let encoded = (0..batch.num_columns()).try_for_each(|column| {
                    arrow_pg::encoder::encode_value(
                        &mut encoder,
                        batch.column(column),
                        row,
                        schema.field(column),
                        &fields[column],
                    )
                });
                match encoded {
                    Ok(()) => {
                        let mut data = arrow_pg::encoder::Encoder::take_row(&mut encoder);
                        if let Some(first) = header.take() {
                            data = CopyData::new(Bytes::from(
                                [first.as_ref(), data.data.as_ref()].concat(),
                            ));
                        }
                        bytes += data.data.len();
                        out.push(Ok(data));
                    }
                    Err(e) => {
                        out.push(Err(e));
                        break;
                    }
                }
            }
            (out, bytes)
        });
        let code = i8::from(format == CopyFormat::Binary);
        // An empty result still has its header line.
        let any = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&any);
        let binary = format == CopyFormat::Binary;
        // After the rows: a CSV header alone if there were none; for binary, the
        // trailer, with the PGCOPY header in the same message if there were no rows
        // (readers such as ADBC's take the header and what follows from one message).
        let last = futures::stream::once(async move {
            let empty = !seen.load(Ordering::Relaxed);
            match (binary, empty) {
                (true, true) => Some(Bytes::from([PGCOPY_HEADER.as_slice(), &TRAILER].concat())),
                (true, false) => Some(Bytes::from_static(&TRAILER)),
                (false, true) => header_alone,
                (false, false) => None,
            }
        })
        .filter_map(|last| futures::future::ready(last.map(|b| Ok(CopyData::new(b)))));
        let data = data
            .inspect(move |_| any.store(true, Ordering::Relaxed))
            .chain(last);
        // Built as text so that pgwire adds no trailer of its own; then marked binary.
        let mut response = CopyResponse::new(0, columns, data);
        response.format = code;
        Ok(Response::CopyOut(response))
    }
}

/// The most columns a COPY sends (Postgres's own limit on a table's columns).
const MAX_COPY_COLUMNS: usize = 1664;

/// The PGCOPY binary header: signature, flags, header extension length (19 bytes).
const PGCOPY_HEADER: &[u8; 19] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The PGCOPY trailer: a tuple with -1 fields.
const TRAILER: [u8; 2] = [0xFF, 0xFF];

/// The header line of CSV output: the column names, quoted where CSV needs it.
fn csv_header(schema: &Schema) -> Bytes {
    let names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            let name = f.name();
            if name.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", name.replace('"', "\"\""))
            } else {
                name.clone()
            }
        })
        .collect();
    Bytes::from(format!("{}\n", names.join(",")))
}

/// Sends a COPY OUT answer: its data as it comes, then `CopyDone` and `COPY n`. A
/// failure of the stream is returned, and the connection answers it with an error,
/// as Postgres does during COPY OUT.
pub(crate) async fn send_copy_out<C>(client: &mut C, response: CopyResponse) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let formats = response.column_formats();
    let CopyResponse {
        format,
        columns,
        mut data_stream,
        ..
    } = response;
    let columns = i16::try_from(columns).unwrap_or(i16::MAX);
    client
        .feed(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
            format, columns, formats,
        )))
        .await?;
    let mut rows = 0usize;
    while let Some(data) = data_stream.next().await {
        let data = data?;
        // Neither the binary trailer nor a binary header with it is a row (a CSV
        // header line sent alone, which only an empty result has, is counted: the one
        // miscount).
        let bytes = data.data.as_ref();
        let empty_binary = bytes.len() == PGCOPY_HEADER.len() + TRAILER.len()
            && bytes.starts_with(PGCOPY_HEADER)
            && bytes.ends_with(&TRAILER);
        rows += usize::from(bytes != TRAILER && !empty_binary);
        client.feed(PgWireBackendMessage::CopyData(data)).await?;
    }
    client
        .feed(PgWireBackendMessage::CopyDone(CopyDone::new()))
        .await?;
    client
        .feed(PgWireBackendMessage::CommandComplete(
            Tag::new("COPY").with_rows(rows).into(),
        ))
        .await?;
    Ok(())
}
