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
use super::commands::CopyFormat;
use super::query::{Run, fields_of};

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
        // A CSV header goes out with the first row (each COPY message is one row).
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
        let columns = begun.schema.fields().len();
        let code = i8::from(format == CopyFormat::Binary);
        // An empty result still has its header line.
        let any = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&any);
        let alone = futures::stream::iter(header_alone.map(|h| Ok(CopyData::new(h))))
            .take_while(move |_| futures::future::ready(!seen.load(Ordering::Relaxed)));
        let data = data
            .inspect(move |_| any.store(true, Ordering::Relaxed))
            .chain(alone);
        Ok(Response::CopyOut(CopyResponse::new(code, columns, data)))
    }
}

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
        // The binary trailer is not a row (nor is a CSV header line sent alone, which
        // only an empty result has: it is counted, the one miscount).
        rows += usize::from(data.data.as_ref() != [0xFF, 0xFF]);
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
