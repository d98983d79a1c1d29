//! Scalar functions whose output grows with an argument, bounded.
//!
//! `repeat('x', 10^12)`, `lpad('', 10^12)` or `array_repeat(1, 10^12)` build one value of
//! any size from a few bytes of SQL. Scalar functions allocate outside the memory pool,
//! so such a value is not stopped by the query's memory limit: the allocation fails
//! and the process aborts. Each of these functions is replaced by a wrapper that, before
//! building anything, works out an upper bound of what one call would produce for the
//! batch at hand and refuses the call (`INVALID_ARGUMENT`) beyond
//! [`MAX_BUILT_BYTES`].

use std::hash::Hash;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::compute::kernels::length::length;
use arrow::compute::{cast, max};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};

/// The most bytes one call of a value-building function may produce for one batch.
pub(crate) const MAX_BUILT_BYTES: u64 = 256 * 1024 * 1024;

/// How a function's output grows with its count argument (the second one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// The first argument, `count` times (`repeat`).
    Repeat,
    /// `count` characters, of up to 4 bytes each (`lpad`, `rpad`).
    Pad,
    /// A list of `count` copies of the first argument (`array_repeat`).
    List,
    /// A list resized to `count` elements (`array_resize`).
    Resize,
    /// Every occurrence of a string replaced by another (`replace`).
    Replace,
    /// Matches of a pattern replaced by a template that may repeat capture groups
    /// (`regexp_replace`).
    RegexReplace,
}

const BOUNDED: [(&str, Growth); 7] = [
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("array_repeat", Growth::List),
    ("array_resize", Growth::Resize),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::RegexReplace),
];

/// Replaces the value-building functions of `state` by their bounded wrappers.
pub(crate) fn bound_value_builders(state: &mut SessionState) {
    for (name, growth) in BOUNDED {
        let Some(inner) = state.scalar_functions().get(name).cloned() else {
            continue;
        };
        let bounded = ScalarUDF::new_from_impl(BoundedBuilder {
            inner: inner.as_ref().clone(),
            growth,
        });
        if let Err(e) = state.register_udf(Arc::new(bounded)) {
            tracing::warn!(function = name, error = %e, "cannot bound a scalar function");
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct BoundedBuilder {
    inner: ScalarUDF,
    growth: Growth,
}

impl BoundedBuilder {
    /// Fails when one call over `args` could build more than [`MAX_BUILT_BYTES`].
    fn check(&self, args: &ScalarFunctionArgs) -> Result<()> {
        let (Some(value), Some(count)) = (args.args.first(), args.args.get(1)) else {
            return Ok(());
        };
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        // A call on constants builds one value, which the projection then copies to
        // every row of a batch: bound it as if it were built for a whole batch.
        let batch = usize::from(args.config_options.execution.batch_size);
        let rows = if all_scalar {
            batch.max(args.number_rows)
        } else {
            args.number_rows
        }
        .max(1) as u64;
        if matches!(self.growth, Growth::Replace | Growth::RegexReplace) {
            let bound = self.replaced_bound(args, rows, all_scalar)?;
            return refuse_beyond_limit(self.inner.name(), bound);
        }
        let count = largest_count(count, self.inner.name())?;
        let width = match self.growth {
            Growth::Repeat => longest_value(value)?,
            Growth::Pad => 4,
            // Copies of the value, and the 8-byte index of each element taken.
            Growth::List => longest_value(value)?.max(8).saturating_mul(2) + 8,
            // Elements of the list's type, and their indices.
            Growth::Resize => 16,
            Growth::Replace | Growth::RegexReplace => 0,
        };
        refuse_beyond_limit(
            self.inner.name(),
            count.saturating_mul(width).saturating_mul(rows),
        )
    }

    /// An upper bound of what `replace(s, from, to)` or `regexp_replace(s, pattern,
    /// template[, flags])` builds for one batch of `rows` rows.
    ///
    /// Matches never overlap, so there are at most `len(s) / len(from)` of them
    /// (`len(s) + 1` for an empty `from` or a pattern, which can match the empty
    /// string; only one without the `g` flag of `regexp_replace`), each replaced by
    /// `to`; a template's capture group references (`$1`, `\\1`) each repeat text of
    /// distinct matches, so at most `len(s)` in all per reference.
    fn replaced_bound(
        &self,
        args: &ScalarFunctionArgs,
        rows: u64,
        all_scalar: bool,
    ) -> Result<u64> {
        let (Some(text), Some(from), Some(to)) =
            (args.args.first(), args.args.get(1), args.args.get(2))
        else {
            return Ok(0);
        };
        // Of constants, the one value is built once per row of the batch.
        let copies = if all_scalar { rows } else { 1 };
        let text_bytes = total_length(text)?.saturating_mul(copies);
        let longest_to = longest_value(to)?;
        let matches = match self.growth {
            Growth::Replace => match shortest_value(from)? {
                0 => text_bytes.saturating_add(rows),
                shortest => text_bytes / shortest,
            },
            _ if is_global(args.args.get(3)) => text_bytes.saturating_add(rows),
            _ => rows,
        };
        let references = match self.growth {
            Growth::RegexReplace => group_references(to),
            _ => 0,
        };
        Ok(text_bytes
            .saturating_mul(references.saturating_add(1))
            .saturating_add(matches.saturating_mul(longest_to)))
    }
}

/// Fails when `bound` bytes, built by one call of `function`, pass [`MAX_BUILT_BYTES`].
fn refuse_beyond_limit(function: &str, bound: u64) -> Result<()> {
    if bound > MAX_BUILT_BYTES {
        return Err(DataFusionError::Execution(format!(
            "{function}(...) would build up to {bound} bytes for one batch; at most \
             {MAX_BUILT_BYTES} are allowed"
        )));
    }
    Ok(())
}

/// Whether the flags of `regexp_replace` may ask for every match (`g`): when they are
/// not a constant, assume they do.
fn is_global(flags: Option<&ColumnarValue>) -> bool {
    match flags {
        None => false,
        Some(ColumnarValue::Scalar(flags)) => flags
            .try_as_str()
            .flatten()
            .is_none_or(|flags| flags.contains('g')),
        Some(ColumnarValue::Array(_)) => true,
    }
}

/// Most capture group references (`$1`, `${name}`, `\\1`) one replacement template
/// holds: every `$` or `\\` counts.
fn group_references(template: &ColumnarValue) -> u64 {
    let count = |s: &str| s.bytes().filter(|b| matches!(b, b'$' | b'\\')).count() as u64;
    match template {
        ColumnarValue::Scalar(value) => value.try_as_str().flatten().map_or(0, count),
        ColumnarValue::Array(array) => {
            let Ok(strings) = cast(array, &DataType::LargeUtf8) else {
                return u64::MAX;
            };
            strings
                .as_string::<i64>()
                .iter()
                .flatten()
                .map(count)
                .max()
                .unwrap_or(0)
        }
    }
}

/// The bytes of all values of a string argument together.
fn total_length(value: &ColumnarValue) -> Result<u64> {
    let array = as_array(value)?;
    if array.is_empty() || !is_text(array.data_type()) {
        return Ok(0);
    }
    let lengths = cast(&length(&array)?, &DataType::Int64)?;
    Ok(lengths
        .as_primitive::<Int64Type>()
        .iter()
        .flatten()
        .map(|l| l.max(0) as u64)
        .sum())
}

/// The length of the shortest value of a string argument (0 when it has none).
fn shortest_value(value: &ColumnarValue) -> Result<u64> {
    let array = as_array(value)?;
    if array.is_empty() || !is_text(array.data_type()) {
        return Ok(0);
    }
    let lengths = cast(&length(&array)?, &DataType::Int64)?;
    Ok(arrow::compute::min(lengths.as_primitive::<Int64Type>()).map_or(0, |m| m.max(0) as u64))
}

fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

fn as_array(value: &ColumnarValue) -> Result<ArrayRef> {
    value.to_array(1)
}

/// The largest value of a count argument (0 when none is positive). A count that is
/// not an integer (or a dictionary of integers) is refused rather than guessed.
fn largest_count(value: &ColumnarValue, function: &str) -> Result<u64> {
    let array = as_array(value)?;
    let integer = match array.data_type() {
        DataType::Dictionary(_, values) => values.is_integer(),
        other => other.is_integer(),
    };
    if !integer {
        return Err(DataFusionError::Execution(format!(
            "{function}(...) takes an integer count, not {}",
            array.data_type()
        )));
    }
    let ints = cast(&array, &DataType::Int64)?;
    Ok(max(ints.as_primitive::<Int64Type>()).map_or(0, |m| m.max(0) as u64))
}

/// `count` with negative values replaced by 0, what SQL makes of a negative length
/// (`lpad('x', -1)` is empty): some implementations size a buffer from the count before
/// looking at its sign.
fn without_negatives(count: &ColumnarValue) -> Result<ColumnarValue> {
    match count {
        ColumnarValue::Array(array) if array.data_type().is_signed_integer() => {
            let ints = cast(array, &DataType::Int64)?;
            let clamped: Int64Array = ints.as_primitive::<Int64Type>().unary(|v| v.max(0));
            Ok(ColumnarValue::Array(cast(&clamped, array.data_type())?))
        }
        other => Ok(other.clone()),
    }
}

/// The largest size in bytes of one value of an argument: string and binary lengths,
/// twice the average size of other values (lists vary from row to row).
fn longest_value(value: &ColumnarValue) -> Result<u64> {
    let array = as_array(value)?;
    if array.is_empty() {
        return Ok(0);
    }
    match array.data_type() {
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView => {
            let lengths = cast(&length(&array)?, &DataType::Int64)?;
            Ok(max(lengths.as_primitive::<Int64Type>()).map_or(0, |m| m.max(0) as u64))
        }
        other => Ok(match other.primitive_width() {
            Some(width) => width as u64,
            None => (2 * array.get_array_memory_size() / array.len()) as u64,
        }),
    }
}

impl ScalarUDFImpl for BoundedBuilder {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args)?;
        if matches!(self.growth, Growth::Replace | Growth::RegexReplace) {
            return self.inner.invoke_with_args(args);
        }
        if let Some(count) = args.args.get_mut(1) {
            *count = without_negatives(count)?;
        }
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn context() -> SessionContext {
        let mut state = SessionStateBuilder::new().with_default_features().build();
        bound_value_builders(&mut state);
        SessionContext::new_with_state(state)
    }

    async fn run(ctx: &SessionContext, sql: &str) -> Result<usize> {
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    #[tokio::test]
    async fn modest_values_build_and_huge_ones_are_refused() {
        let ctx = context();
        for sql in [
            "SELECT repeat('ab', 1000)",
            "SELECT lpad('7', 12, '0'), rpad('x', 3)",
            "SELECT array_repeat(1, 100)",
            "SELECT repeat(v, 3) FROM (VALUES ('a'), ('bc'), (NULL)) AS t(v)",
            "SELECT replace(v, 'a', 'xyz'), regexp_replace(v, '(b)', '$1$1', 'g') \
             FROM (VALUES ('abcabc'), ('bb'), (NULL)) AS t(v)",
            "SELECT replace(repeat('ab', 1000), 'ab', 'c')",
            // Negative lengths from a column mean empty values, not a failure.
            "SELECT lpad(v, n), rpad(v, n, '-'), repeat(v, n) FROM (VALUES ('a', -5), ('b', 3)) AS t(v, n)",
        ] {
            assert!(run(&ctx, sql).await.is_ok(), "{sql}");
        }
        for sql in [
            "SELECT repeat('x', 1000000000000)",
            "SELECT lpad('', 1000000000000)",
            "SELECT rpad('a', 9000000000, 'b')",
            "SELECT array_repeat('abc', 1000000000000)",
            "SELECT repeat(v, n) FROM (VALUES ('abc', 100000000), ('d', 1)) AS t(v, n)",
            // A constant value copied to every row of a batch.
            "SELECT repeat(arrow_cast('x', 'LargeUtf8'), 200000000) FROM (VALUES (1), (2)) AS t(v)",
            "SELECT array_resize([1], 1000000000000)",
            "SELECT replace(repeat('a', 32768), 'a', repeat('b', 32768))",
            "SELECT regexp_replace(repeat('a', 32768), '', repeat('b', 32768), 'g')",
            "SELECT regexp_replace(v, 'a', repeat('b', 40000), 'g') \
             FROM (VALUES (repeat('a', 10000))) AS t(v)",
        ] {
            let err = run(&ctx, sql).await.unwrap_err();
            assert!(err.to_string().contains("at most"), "{sql}: {err}");
        }
    }
}
