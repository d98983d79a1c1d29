//! [`MeshPhysicalCodec`]: meshgate's own plan nodes and functions as a cluster's
//! processes exchange them, in Apache DataFusion's plan protobuf.
//!
//! What travels is the policy as the gateway compiled it for one principal: the
//! secured scan of each table (its row filter and masks are ordinary plan expressions
//! under a [`PolicyBoundaryExec`]), never a credential or a key. The `hash` mask is
//! named by the id of its key; a process decodes it only with the same key (an
//! executor) or as a reference to it that cannot run (a scheduler, which only passes
//! plans on). A plan with a node this codec does not know fails to encode or decode;
//! it never runs without its policy.

use std::sync::Arc;

use datafusion::common::{exec_err, internal_err};
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::policy::{EnoughContributors, MaskHash, PolicyBoundaryExec};

/// The first byte of an encoded node or function: which of ours it is.
const POLICY_BOUNDARY: u8 = 1;
const MASK_HASH: u8 = 2;

/// Encodes and decodes meshgate's plan nodes and functions; compose it with the
/// cluster's own codec for the rest.
#[derive(Debug)]
pub struct MeshPhysicalCodec {
    /// The keyed `hash` mask a plan's masks decode to (an executor); `None` in a
    /// process that passes plans on (a gateway, a scheduler), where they decode to
    /// references to their key.
    mask_hash: Option<Arc<ScalarUDF>>,
}

impl MeshPhysicalCodec {
    /// The codec of a process that runs plans, masking with `key` (an executor).
    pub fn keyed(key: &[u8]) -> Self {
        Self {
            mask_hash: Some(MaskHash::udf(key)),
        }
    }

    /// The codec of a process that passes plans on without running them.
    pub fn passing_through() -> Self {
        Self { mask_hash: None }
    }

    /// The keyed `hash` mask, for the process's function registry (none when passing
    /// through).
    pub fn mask_hash(&self) -> Option<Arc<ScalarUDF>> {
        self.mask_hash.clone()
    }

    fn key_id(udf: &ScalarUDF) -> Option<[u8; 32]> {
        udf.inner().downcast_ref::<MaskHash>().map(MaskHash::key_id)
    }
}

impl PhysicalExtensionCodec for MeshPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (buf.split_first(), inputs) {
            (Some((&POLICY_BOUNDARY, table)), [input]) => {
                let table = String::from_utf8(table.to_vec())
                    .or_else(|_| internal_err!("a policy boundary's table name is not UTF-8"))?;
                Ok(Arc::new(PolicyBoundaryExec::opened(
                    table,
                    Arc::clone(input),
                )))
            }
            _ => internal_err!("not a meshgate plan node"),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some(boundary) = node.downcast_ref::<PolicyBoundaryExec>() else {
            return internal_err!("meshgate does not encode plan node {}", node.name());
        };
        if !boundary.is_opened() {
            return internal_err!("a sealed policy boundary cannot leave its process");
        }
        buf.push(POLICY_BOUNDARY);
        buf.extend_from_slice(boundary.table().as_bytes());
        Ok(())
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        if name == EnoughContributors::NAME && buf.is_empty() {
            return Ok(EnoughContributors::udf());
        }
        let Some((&MASK_HASH, key_id)) = buf.split_first() else {
            return internal_err!("meshgate does not decode function {name}");
        };
        let Ok(key_id) = <[u8; 32]>::try_from(key_id) else {
            return internal_err!("a mask_hash names its key by a 32-byte id");
        };
        let Some(ours) = &self.mask_hash else {
            return Ok(MaskHash::reference(key_id));
        };
        match Self::key_id(ours) {
            Some(id) if id == key_id => Ok(Arc::clone(ours)),
            _ => exec_err!(
                "this process's masking key is not the gateway's (masking.key_file or \
                 masking.key_env must name the same key): hashed values would not agree"
            ),
        }
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        // Other functions are DataFusion's own, found by name where the plan runs.
        if let Some(key_id) = Self::key_id(node) {
            buf.push(MASK_HASH);
            buf.extend_from_slice(&key_id);
        }
        Ok(())
    }
}
