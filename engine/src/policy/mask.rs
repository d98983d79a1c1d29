//! Column masks as logical expressions over the stored column.
//!
//! `null` and `redact` never read the value; `partial` keeps the last four characters of
//! strings; `hash` is HMAC-SHA256 under the gateway's masking key, as hex, through the
//! [`MaskHash`] function, which holds the key itself so it never appears in a plan or in
//! EXPLAIN output. Non-string columns under `redact` or `partial` become null.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use aws_lc_rs::hmac;
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, col,
    lit, when,
};
use meshgate_catalog::MaskKind;

/// The type a masked column has for the principal.
pub(crate) fn masked_type(kind: MaskKind, stored: &DataType) -> DataType {
    match kind {
        MaskKind::Hash => DataType::Utf8,
        MaskKind::Redact | MaskKind::Partial if is_string(stored) => DataType::Utf8,
        _ => stored.clone(),
    }
}

fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// Whether the mask's output depends on the stored values (if not, the column is not
/// even read from storage).
pub(crate) fn reads_value(kind: MaskKind, stored: &DataType) -> bool {
    match kind {
        MaskKind::Null => false,
        MaskKind::Redact | MaskKind::Partial => is_string(stored),
        MaskKind::Hash => true,
    }
}

/// The expression replacing column `name` (stored as `stored`) under `kind`.
pub(crate) fn mask_expr(
    kind: MaskKind,
    name: &str,
    stored: &DataType,
    hash: &Arc<ScalarUDF>,
) -> Result<Expr> {
    let column = col(datafusion::common::Column::new_unqualified(name));
    let null = || ScalarValue::try_from(stored).map(lit);
    let expr = match kind {
        MaskKind::Null => null()?,
        MaskKind::Redact if is_string(stored) => {
            when(column.clone().is_null(), lit(ScalarValue::Utf8(None)))
                .otherwise(lit("REDACTED"))?
        }
        MaskKind::Partial if is_string(stored) => {
            let tail = datafusion::functions::expr_fn::right(column.clone(), lit(4i64));
            when(column.is_null(), lit(ScalarValue::Utf8(None))).otherwise(
                datafusion::functions::expr_fn::concat(vec![lit("***"), tail]),
            )?
        }
        MaskKind::Redact | MaskKind::Partial => null()?,
        MaskKind::Hash => hash.call(vec![column]),
    };
    Ok(expr.alias(name))
}

/// `mask_hash(value)`: HMAC-SHA256 of the value's text under the masking key, as hex.
#[derive(Debug)]
pub(crate) struct MaskHash {
    key: hmac::Key,
    signature: Signature,
}

impl MaskHash {
    /// The function, keyed with `key`.
    pub(crate) fn udf(key: &[u8]) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            signature: Signature::any(1, Volatility::Immutable),
        }))
    }
}

impl PartialEq for MaskHash {
    fn eq(&self, _other: &Self) -> bool {
        // One key per gateway; two instances are the same function.
        true
    }
}
impl Eq for MaskHash {}
impl std::hash::Hash for MaskHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "mask_hash".hash(state);
    }
}

impl ScalarUDFImpl for MaskHash {
    fn name(&self) -> &str {
        "mask_hash"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let input = args.args[0].clone().into_array(rows)?;
        let text: ArrayRef = cast(&input, &DataType::Utf8)?;
        let text = text
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Internal(
                    "mask_hash: cast to Utf8 failed".into(),
                )
            })?;
        let mut out = StringBuilder::with_capacity(rows, rows * 64);
        for value in text.iter() {
            match value {
                Some(v) => {
                    out.append_value(hex::encode(hmac::sign(&self.key, v.as_bytes()).as_ref()))
                }
                None => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
