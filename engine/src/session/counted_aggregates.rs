//! Aggregates that keep their input arrays take plain strings, which the memory pool
//! counts.
//!
//! `array_agg` keeps a slice of every input array until it finishes, and tells the
//! memory pool what those slices would take if it owned them. For a `Utf8View` or
//! `BinaryView` array, arrow 59 counts only the 16-byte views, not the strings they
//! point to (arrow-rs #8230): `array_agg(body)` over a table whose strings are
//! computed on as views (`engine.parquet_string_views`) held every body of the table
//! while the pool saw a fraction of it, so the query's memory limit never stopped it.
//!
//! Each such function is replaced by a wrapper that takes its arguments with every
//! view (at any depth) as its plain type (and a dictionary as its values' type: the
//! served types' rule, `wire_type`), so DataFusion casts them before they reach
//! the accumulator, and the accumulator counts the strings it keeps. Everything else
//! is the function's own. Only `array_agg` keeps its inputs among DataFusion 55's
//! aggregates: the others (`first_value`, `string_agg`, `min`, ...) copy what they keep
//! into values they own and count.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::expr::{
    AggregateFunction, AggregateFunctionParams, WindowFunctionParams,
};
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::type_coercion::functions::fields_with_udf;
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, Expr, GroupsAccumulator, Operator,
    ReversedUDAF, SetMonotonicity, Signature, StatisticsArgs,
};
use meshgate_connectors::wire_type;

/// The aggregates whose accumulators keep slices of their input arrays.
const KEEPING_INPUTS: [&str; 1] = ["array_agg"];

/// Replaces the aggregates of `state` that keep their inputs by wrappers taking plain
/// strings.
pub(crate) fn count_kept_strings(state: &mut SessionState) {
    for name in KEEPING_INPUTS {
        let Some(inner) = state.aggregate_functions().get(name).cloned() else {
            continue;
        };
        let counted = AggregateUDF::new_from_impl(PlainStringInputs::new(inner.as_ref().clone()));
        if let Err(e) = state.register_udaf(Arc::new(counted)) {
            tracing::warn!(function = name, error = %e, "cannot wrap an aggregate function");
        }
    }
}

/// `inner`, taking every argument with its views as plain types.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PlainStringInputs {
    inner: AggregateUDF,
    /// `inner`'s arity and volatility, with its argument types coerced here.
    signature: Signature,
}

impl PlainStringInputs {
    fn new(inner: AggregateUDF) -> Self {
        let signature = Signature::user_defined(inner.signature().volatility);
        Self { inner, signature }
    }

    fn of(&self, inner: Arc<dyn AggregateUDFImpl>) -> Arc<dyn AggregateUDFImpl> {
        Arc::new(Self {
            inner: AggregateUDF::new_from_shared_impl(inner),
            signature: self.signature.clone(),
        })
    }
}

#[warn(clippy::missing_trait_methods)] // A wrapper: every method is the inner one's but coercion.
impl AggregateUDFImpl for PlainStringInputs {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The inner function's coercion (its signature's), then views as plain types.
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let fields: Vec<FieldRef> = arg_types
            .iter()
            .map(|t| Arc::new(Field::new("argument", t.clone(), true)))
            .collect();
        let coerced = fields_with_udf(&fields, &self.inner)?;
        Ok(coerced.iter().map(|f| wire_type(f.data_type())).collect())
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }

    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.inner().accumulator(acc_args)
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.inner().schema_name(params)
    }

    fn human_display(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.inner().human_display(params)
    }

    fn window_function_schema_name(&self, params: &WindowFunctionParams) -> Result<String> {
        self.inner.inner().window_function_schema_name(params)
    }

    fn display_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.inner().display_name(params)
    }

    fn window_function_display_name(&self, params: &WindowFunctionParams) -> Result<String> {
        self.inner.inner().window_function_display_name(params)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.inner().state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.inner().groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        self.inner.inner().create_groups_accumulator(args)
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.inner().create_sliding_accumulator(args)
    }

    fn with_beneficial_ordering(
        self: Arc<Self>,
        beneficial_ordering: bool,
    ) -> Result<Option<Arc<dyn AggregateUDFImpl>>> {
        let reordered =
            Arc::clone(self.inner.inner()).with_beneficial_ordering(beneficial_ordering)?;
        Ok(reordered.map(|inner| self.of(inner)))
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.inner().order_sensitivity()
    }

    /// The inner function's simplification, after ordering a `DISTINCT` call by its cast
    /// argument (see [`order_by_the_cast_argument`]).
    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        let inner = self.inner.inner().simplify();
        Some(Box::new(move |mut call, context| {
            order_by_the_cast_argument(&mut call, context);
            match &inner {
                Some(simplify) => simplify(call, context),
                None => Ok(Expr::AggregateFunction(call)),
            }
        }))
    }

    fn simplify_expr_op_literal(
        &self,
        agg_function: &AggregateFunction,
        arg: &Expr,
        op: Operator,
        lit: &Expr,
        arg_is_left: bool,
    ) -> Result<Option<Expr>> {
        self.inner
            .inner()
            .simplify_expr_op_literal(agg_function, arg, op, lit, arg_is_left)
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        match self.inner.inner().reverse_expr() {
            ReversedUDAF::Reversed(reversed) => ReversedUDAF::Reversed(Arc::new(
                AggregateUDF::new_from_shared_impl(self.of(Arc::clone(reversed.inner()))),
            )),
            same_or_not_supported => same_or_not_supported,
        }
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner.inner().return_field(arg_fields)
    }

    fn is_nullable(&self) -> bool {
        self.inner.inner().is_nullable()
    }

    fn is_descending(&self) -> Option<bool> {
        self.inner.inner().is_descending()
    }

    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner.inner().value_from_stats(statistics_args)
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner.inner().default_value(data_type)
    }

    fn supports_null_handling_clause(&self) -> bool {
        self.inner.inner().supports_null_handling_clause()
    }

    fn supports_within_group_clause(&self) -> bool {
        self.inner.inner().supports_within_group_clause()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.inner().set_monotonicity(data_type)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.inner().documentation()
    }
}

/// `array_agg(DISTINCT x ORDER BY x)` requires its one ordering to be its argument.
/// With `x` cast here to its plain type, the ordering is still the uncast `x`: it is
/// made the cast argument (a view and its plain string sort alike), in the logical
/// plan, so the optimizer's later rewrites (a cast shared with another aggregate is
/// computed once, below the aggregate) keep the two identical. Only a cast from a type
/// holding views to its plain type is taken for this wrapper's.
fn order_by_the_cast_argument(call: &mut AggregateFunction, context: &SimplifyContext) {
    let params = &mut call.params;
    let ([Expr::Cast(cast)], [single]) = (params.args.as_slice(), params.order_by.as_mut_slice())
    else {
        return;
    };
    let Ok(uncast) = context.get_data_type(&cast.expr) else {
        return;
    };
    let cast_to = cast.field.data_type();
    let ours = uncast != *cast_to && wire_type(&uncast) == *cast_to;
    if params.distinct && ours && single.expr == *cast.expr {
        single.expr = Expr::Cast(cast.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    fn counted_array_agg() -> AggregateUDF {
        let ctx = SessionContext::new();
        let mut state = ctx.state();
        count_kept_strings(&mut state);
        state.aggregate_functions()["array_agg"].as_ref().clone()
    }

    #[test]
    fn array_agg_takes_views_as_plain_types_and_everything_else_as_is() {
        let array_agg = counted_array_agg();
        let coerce = |t: DataType| array_agg.inner().coerce_types(&[t]).unwrap();
        assert_eq!(coerce(DataType::Utf8View), vec![DataType::Utf8]);
        assert_eq!(coerce(DataType::BinaryView), vec![DataType::Binary]);
        let listed = DataType::List(Arc::new(Field::new("item", DataType::Utf8View, true)));
        assert_eq!(
            coerce(listed),
            vec![DataType::List(Arc::new(Field::new(
                "item",
                DataType::Utf8,
                true
            )))]
        );
        assert_eq!(coerce(DataType::Int64), vec![DataType::Int64]);
        assert_eq!(coerce(DataType::LargeUtf8), vec![DataType::LargeUtf8]);
        assert!(array_agg.inner().coerce_types(&[]).is_err(), "one argument");
    }
}
