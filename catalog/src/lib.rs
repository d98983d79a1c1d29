//! The catalog of a data mesh: product descriptors, their contracts, validation and
//! name resolution (`domain.product.table`). No query engine and no transport here:
//! everything in this crate is plain data and pure functions over it.

mod as_of;
mod budget;
mod compat;
mod deprecation;
mod derived;
mod descriptor;
mod error;
mod keys;
mod mesh;
mod policy;
mod principal;
mod product;
mod quality;
mod remote;
mod validate;

pub use as_of::{AsOf, BadAsOf, split_as_of};
pub use budget::{Allowance, BadByteCount, ByteCount, ProductBudget};
pub use compat::{Change, Impact, ProductChanges, compare, widens};
pub use deprecation::{Deprecation, DeprecationDescriptor};
pub use derived::{
    Derivation, DerivedDescriptor, DerivedMode, Input, InputDescriptor, LineageEdge, MAX_INPUTS,
    MAX_TRANSFORM_BYTES, MIN_REFRESH, transform_texts,
};
pub use descriptor::{
    ColumnDescriptor, OwnerDescriptor, ProductDescriptor, ServingDescriptor, SlaDescriptor,
    TableDescriptor, TimeTravelDescriptor,
};
pub use error::{CatalogError, Problem, Result};
pub use keys::{Cardinality, MAX_REFERENCES, Reference, ReferenceDescriptor, TableName};
pub use mesh::{
    Mesh, MeshLoad, descriptor_files, parse_descriptor, product_from_text, read_product,
};
pub use policy::{
    Access, AggregateOnlyRule, AggregateThreshold, ColumnEffect, ColumnRule, MaskKind,
    PlatformPolicy, PolicyDescriptor, ProductAccess, ReadRule, RowRule, TableAccess, decide,
    mask_name,
};
pub use principal::Principal;
pub use product::{Column, Product, Sla, Table, TableFormat, TimeTravel};
pub use quality::{
    ColumnChecks, ColumnChecksDescriptor, Completeness, Literal, ProductQualityDescriptor,
    RangeDescriptor, TableQualityDescriptor, parse_completeness,
};
pub use remote::{EndpointError, NodeEndpoint, RemoteSource, remote_table_parts};
pub use validate::{DescriptorOrigin, MAX_IDENTIFIER_LEN, validate_descriptor};
