//! The codec every process of a cluster uses: meshgate's nodes first, then Ballista's
//! (its shuffle nodes); any other node fails to encode or decode.

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion_proto::physical_plan::{ComposedPhysicalExtensionCodec, PhysicalExtensionCodec};
use meshgate_engine::MeshPhysicalCodec;

/// `mesh` composed with Ballista's own codec.
pub fn cluster_codec(mesh: MeshPhysicalCodec) -> Arc<dyn PhysicalExtensionCodec> {
    Arc::new(ComposedPhysicalExtensionCodec::new(vec![
        Arc::new(mesh),
        Arc::new(BallistaPhysicalExtensionCodec::default()),
    ]))
}
