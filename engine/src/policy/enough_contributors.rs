//! [`EnoughContributors`]: the check that keeps a group of an aggregate over a table read
//! only in aggregate, as a function of the gateway's own.
//!
//! `meshgate_enough_contributors(count, least)` is `count >= least` (NULL when `count`
//! is). It is not DataFusion's `>=` so that a domain node is never sent the check: the
//! node pushdown sends only DataFusion's own functions, so a part of a plan ends below
//! the filter that calls it. A node that runs the aggregate returns every group with its
//! contributor counts, and the gateway leaves out the small ones itself, whatever the
//! node's own policy and however the statement it was sent reads. Executors of a cluster
//! have it too (`crate::cluster`), by name.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::{ScalarValue, exec_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, lit,
};

/// `count >= least`, computed by the gateway.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct EnoughContributors {
    signature: Signature,
}

impl EnoughContributors {
    /// Its name in plans.
    pub(crate) const NAME: &'static str = "meshgate_enough_contributors";

    /// The function.
    pub(crate) fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            signature: Signature::exact(
                vec![DataType::Int64, DataType::Int64],
                Volatility::Immutable,
            ),
        }))
    }

    /// `count >= least` as a call of the function.
    pub(crate) fn call(count: Expr, least: i64) -> Expr {
        Self::udf().call(vec![count, lit(least)])
    }
}

impl ScalarUDFImpl for EnoughContributors {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [count, least] = args.args.as_slice() else {
            return exec_err!("{} takes a count and a least count", Self::NAME);
        };
        let ColumnarValue::Scalar(least) = least else {
            return exec_err!("{}: the least count must be a constant", Self::NAME);
        };
        let Ok(ScalarValue::Int64(Some(least))) = least.cast_to(&DataType::Int64) else {
            return exec_err!("{}: the least count must be an integer", Self::NAME);
        };
        match count {
            ColumnarValue::Scalar(count) => {
                let enough = match count.cast_to(&DataType::Int64)? {
                    ScalarValue::Int64(Some(n)) => Some(n >= least),
                    _ => None,
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(enough)))
            }
            ColumnarValue::Array(counts) => {
                let counts = cast(counts, &DataType::Int64)?;
                let Some(counts) = counts.as_any().downcast_ref::<Int64Array>() else {
                    return exec_err!("{}: counts are not integers", Self::NAME);
                };
                let enough: BooleanArray = counts.iter().map(|n| n.map(|n| n >= least)).collect();
                Ok(ColumnarValue::Array(Arc::new(enough)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_groups_of_at_least_the_threshold() {
        let counts: Arc<dyn Array> =
            Arc::new(Int64Array::from(vec![Some(10), Some(11), None, Some(12)]));
        let udf = EnoughContributors::udf();
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Array(counts),
                ColumnarValue::Scalar(ScalarValue::Int64(Some(11))),
            ],
            arg_fields: vec![
                Arc::new(arrow::datatypes::Field::new("n", DataType::Int64, true)),
                Arc::new(arrow::datatypes::Field::new("k", DataType::Int64, false)),
            ],
            number_rows: 4,
            return_field: Arc::new(arrow::datatypes::Field::new("e", DataType::Boolean, true)),
            config_options: Arc::new(Default::default()),
        };
        let ColumnarValue::Array(got) = udf.invoke_with_args(args).unwrap() else {
            panic!("an array of counts gives an array");
        };
        let got = got.as_any().downcast_ref::<BooleanArray>().unwrap();
        assert_eq!(
            got.iter().collect::<Vec<_>>(),
            vec![Some(false), Some(true), None, Some(true)]
        );
    }
}
