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
    // String functions keep a view input's type: the mask's type is the one declared
    // for the principal, whatever the stored column is read as.
    Ok(datafusion::logical_expr::cast(expr, masked_type(kind, stored)).alias(name))
}

/// `mask_hash(value)`: HMAC-SHA256 of the value's text under the masking key, as hex.
///
/// It is known by its key's id (an HMAC of a fixed label under the key), which reveals
/// nothing of the key: a plan sent to a cluster names the key by it, and only a process
/// holding the same key runs it. A reference to a key (a process that passes plans on
/// without running them) has the id and no key.
pub struct MaskHash {
    key: Option<hmac::Key>,
    key_id: [u8; 32],
    signature: Signature,
}

impl std::fmt::Debug for MaskHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskHash")
            .field("keyed", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

impl MaskHash {
    /// The function, keyed with `key`.
    pub fn udf(key: &[u8]) -> Arc<ScalarUDF> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        let mut key_id = [0u8; 32];
        key_id.copy_from_slice(hmac::sign(&key, b"meshgate: the masking key's id").as_ref());
        Self::with(Some(key), key_id)
    }

    /// A reference to the function keyed with the key of id `key_id`: it stands in a
    /// plan, and fails if run.
    pub fn reference(key_id: [u8; 32]) -> Arc<ScalarUDF> {
        Self::with(None, key_id)
    }

    fn with(key: Option<hmac::Key>, key_id: [u8; 32]) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            key,
            key_id,
            signature: Signature::any(1, Volatility::Immutable),
        }))
    }

    /// The id of its key.
    pub fn key_id(&self) -> [u8; 32] {
        self.key_id
    }
}

impl PartialEq for MaskHash {
    fn eq(&self, other: &Self) -> bool {
        self.key_id == other.key_id
    }
}
impl Eq for MaskHash {}
impl std::hash::Hash for MaskHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "mask_hash".hash(state);
        self.key_id.hash(state);
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
        let Some(key) = &self.key else {
            return datafusion::common::exec_err!(
                "mask_hash cannot run in this process: it does not hold the masking key"
            );
        };
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
                Some(v) => out.append_value(hex::encode(hmac::sign(key, v.as_bytes()).as_ref())),
                None => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
