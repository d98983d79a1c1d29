//! The formats results are sent in, chosen by the request's `Accept` header, and their
//! encoders: each batch is encoded as it comes, so nothing is buffered beyond one batch.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;

/// Arrow's IPC stream format (the default).
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// One JSON object per row and line.
const NDJSON: &str = "application/x-ndjson";
/// The same, by its other registered name.
const JSONL: &str = "application/jsonl";
/// Comma-separated values with a header line.
const CSV: &str = "text/csv";

/// The formats offered, in order of preference.
const ALL: &[ResultFormat] = &[
    ResultFormat::ArrowStream,
    ResultFormat::NdJson,
    ResultFormat::Csv,
];

/// A result format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResultFormat {
    /// `application/vnd.apache.arrow.stream`: types kept exactly.
    ArrowStream,
    /// `application/x-ndjson` (or `application/jsonl`).
    NdJson,
    /// `text/csv`, with a header line.
    Csv,
}

/// The `Accept` header names no format this door sends.
#[derive(Debug, thiserror::Error)]
#[error("none of the formats accepted ({0}) is offered: ask for {ARROW_STREAM}, {NDJSON} or {CSV}")]
pub(crate) struct NotAcceptable(pub(crate) String);

impl ResultFormat {
    /// The format `accept` prefers among those offered. Each format takes the weight
    /// (`q`) of the most specific media range that covers it (`text/csv` over `text/*`
    /// over `*/*`, as HTTP says); the heaviest wins, then the one named first, then
    /// Arrow, NDJSON, CSV in that order. `q=0` refuses; no header means Arrow.
    pub(crate) fn negotiate(accept: Option<&str>) -> Result<Self, NotAcceptable> {
        let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
            return Ok(Self::ArrowStream);
        };
        // (q, specificity, formats covered) of each media range, in header order.
        let ranges: Vec<(f32, u8, &[Self])> = accept
            .split(',')
            .take(64)
            .map(|range| {
                let mut parts = range.split(';');
                let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                let specificity = match media.as_str() {
                    "*/*" => 0,
                    m if m.ends_with("/*") => 1,
                    _ => 2,
                };
                (q, specificity, Self::covered_by(&media))
            })
            .collect();
        let mut weighed: Vec<(f32, usize, usize, Self)> =
            ALL.iter()
                .enumerate()
                .filter_map(|(order, format)| {
                    // The most specific ranges covering the format; among them (aliases,
                    // repeats) the heaviest, then the first.
                    let covering = || {
                        ranges
                            .iter()
                            .enumerate()
                            .filter(|(_, (_, _, formats))| formats.contains(format))
                    };
                    let specificity = covering().map(|(_, (_, s, _))| *s).max()?;
                    let (position, (q, _, _)) = covering()
                        .filter(|(_, (_, s, _))| *s == specificity)
                        .reduce(|best, next| if next.1.0 > best.1.0 { next } else { best })?;
                    (*q > 0.0).then_some((*q, position, order, *format))
                })
                .collect();
        weighed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        weighed
            .first()
            .map(|w| w.3)
            .ok_or_else(|| NotAcceptable(accept.chars().take(200).collect()))
    }

    /// The formats a media range covers, in order of preference.
    fn covered_by(media: &str) -> &'static [Self] {
        match media {
            "*/*" => ALL,
            "application/*" => &ALL[..2],
            ARROW_STREAM => &ALL[..1],
            NDJSON | JSONL => &ALL[1..2],
            CSV | "text/*" => &ALL[2..],
            _ => &[],
        }
    }

    /// The first column of `schema` this format cannot hold, with why.
    pub(crate) fn unfit_column(self, schema: &SchemaRef) -> Option<String> {
        if self != Self::Csv {
            return None;
        }
        schema.fields().iter().find_map(|field| {
            let nested = matches!(
                field.data_type(),
                DataType::List(_)
                    | DataType::LargeList(_)
                    | DataType::ListView(_)
                    | DataType::LargeListView(_)
                    | DataType::FixedSizeList(..)
                    | DataType::Struct(_)
                    | DataType::Map(..)
                    | DataType::Union(..)
            );
            nested.then(|| {
                format!(
                    "CSV cannot hold column `{}` ({}); ask for {ARROW_STREAM} or {NDJSON}",
                    field.name(),
                    field.data_type()
                )
            })
        })
    }

    /// The `Content-Type` of a response in this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::ArrowStream => ARROW_STREAM,
            Self::NdJson => NDJSON,
            Self::Csv => "text/csv; charset=utf-8; header=present",
        }
    }
}

/// Encodes one result stream, batch by batch.
pub(crate) struct Encoder {
    kind: EncoderKind,
}

enum EncoderKind {
    Arrow(Box<StreamWriter<Vec<u8>>>),
    NdJson,
    Csv { header_sent: bool },
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Encoder {
    /// An encoder of results of `schema` in `format`, and the bytes that open the
    /// response (Arrow's schema message; nothing for the text formats).
    pub(crate) fn start(
        format: ResultFormat,
        schema: &SchemaRef,
    ) -> Result<(Self, Bytes), ArrowError> {
        let (kind, opening) = match format {
            ResultFormat::ArrowStream => {
                let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
                let opening = std::mem::take(writer.get_mut());
                (EncoderKind::Arrow(Box::new(writer)), opening)
            }
            ResultFormat::NdJson => (EncoderKind::NdJson, Vec::new()),
            ResultFormat::Csv => (EncoderKind::Csv { header_sent: false }, Vec::new()),
        };
        Ok((Self { kind }, Bytes::from(opening)))
    }

    /// The bytes of `batch`.
    pub(crate) fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, ArrowError> {
        let bytes = match &mut self.kind {
            EncoderKind::Arrow(writer) => {
                writer.write(batch)?;
                std::mem::take(writer.get_mut())
            }
            EncoderKind::NdJson => {
                // Explicit nulls: every line names every column.
                let mut writer = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
                writer.write(batch)?;
                writer.finish()?;
                writer.into_inner()
            }
            EncoderKind::Csv { header_sent } => {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(!*header_sent)
                    .build(Vec::new());
                writer.write(batch)?;
                *header_sent = true;
                writer.into_inner()
            }
        };
        Ok(Bytes::from(bytes))
    }

    /// The bytes that close the response: Arrow's end-of-stream marker; a CSV header
    /// line if no batch came (so an empty result still names its columns).
    pub(crate) fn finish(&mut self, schema: &SchemaRef) -> Result<Bytes, ArrowError> {
        let bytes = match &mut self.kind {
            EncoderKind::Arrow(writer) => {
                writer.finish()?;
                std::mem::take(writer.get_mut())
            }
            EncoderKind::NdJson => Vec::new(),
            EncoderKind::Csv { header_sent: true } => Vec::new(),
            EncoderKind::Csv { header_sent: false } => {
                return self.batch(&RecordBatch::new_empty(schema.clone()));
            }
        };
        Ok(Bytes::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn the_accept_header_picks_the_format() {
        let pick = |accept: Option<&str>| ResultFormat::negotiate(accept).ok();
        assert_eq!(pick(None), Some(ResultFormat::ArrowStream));
        assert_eq!(pick(Some("*/*")), Some(ResultFormat::ArrowStream));
        assert_eq!(pick(Some("text/csv")), Some(ResultFormat::Csv));
        assert_eq!(pick(Some("application/jsonl")), Some(ResultFormat::NdJson));
        assert_eq!(
            pick(Some("text/html, application/x-ndjson;q=0.9, */*;q=0.1")),
            Some(ResultFormat::NdJson)
        );
        assert_eq!(
            pick(Some("text/csv;q=0.5, application/vnd.apache.arrow.stream")),
            Some(ResultFormat::ArrowStream)
        );
        assert_eq!(pick(Some("text/csv;q=0, application/json")), None);
        assert_eq!(
            pick(Some("application/vnd.apache.arrow.stream;q=0, */*")),
            Some(ResultFormat::NdJson),
            "a wildcard does not bring back what q=0 refused"
        );
        assert_eq!(pick(Some("text/*")), Some(ResultFormat::Csv));
        assert_eq!(
            pick(Some("text/*;q=0, text/csv")),
            Some(ResultFormat::Csv),
            "the more specific range wins"
        );
        assert_eq!(
            pick(Some("application/*;q=0, */*")),
            Some(ResultFormat::Csv)
        );
        assert_eq!(
            pick(Some("application/x-ndjson;q=0, application/jsonl")),
            Some(ResultFormat::NdJson),
            "equally specific aliases: the heaviest"
        );
        assert_eq!(pick(Some("application/json")), None);
    }

    #[test]
    fn csv_has_one_header_and_arrow_ends_with_its_marker() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a,b"), None])),
            ],
        )
        .unwrap();
        let (mut csv, opening) = Encoder::start(ResultFormat::Csv, &schema).unwrap();
        let mut text = opening.to_vec();
        text.extend_from_slice(&csv.batch(&batch).unwrap());
        text.extend_from_slice(&csv.batch(&batch).unwrap());
        text.extend_from_slice(&csv.finish(&schema).unwrap());
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "n,s\n1,\"a,b\"\n2,\n1,\"a,b\"\n2,\n"
        );
        let (mut empty, _) = Encoder::start(ResultFormat::Csv, &schema).unwrap();
        assert_eq!(&empty.finish(&schema).unwrap()[..], b"n,s\n");

        let (mut json, _) = Encoder::start(ResultFormat::NdJson, &schema).unwrap();
        assert_eq!(
            &json.batch(&batch).unwrap()[..],
            b"{\"n\":1,\"s\":\"a,b\"}\n{\"n\":2,\"s\":null}\n"
        );

        let (mut arrow, opening) = Encoder::start(ResultFormat::ArrowStream, &schema).unwrap();
        let mut ipc = opening.to_vec();
        ipc.extend_from_slice(&arrow.batch(&batch).unwrap());
        ipc.extend_from_slice(&arrow.finish(&schema).unwrap());
        let reader = arrow::ipc::reader::StreamReader::try_new(&ipc[..], None).unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(batches, vec![batch]);
    }
}
