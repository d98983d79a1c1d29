//! Digests of what a principal sees: the whole view, each product's part of it, and
//! what decides the answers its statements get.

use std::collections::BTreeMap;

use aws_lc_rs::digest::{Context, SHA256};
use meshgate_connectors::wire_schema;

use crate::policy::ProductView;

use super::SYSTEM_CATALOG;

/// A digest of what one principal sees of the mesh: the products and tables it may
/// read, the schema of each as it sees it (hidden columns gone, masked ones retyped),
/// the rules that restrict each (row filters, masks), the masking key's id, and which
/// of its past versions may be read. Data changes (new files, a new Delta version)
/// leave it unchanged; a policy or contract change that alters what the principal sees
/// changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ViewFingerprint([u8; 32]);

impl ViewFingerprint {
    /// The fingerprint as bytes.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The fingerprint of `views` (all a principal sees) under the masking key
    /// `mask_key_id`.
    pub(crate) fn of(views: &[ProductView], mask_key_id: &[u8; 32]) -> Self {
        let mut digest = Digest::new();
        digest.part(mask_key_id);
        digest.part(&(views.len() as u64).to_le_bytes());
        for view in views {
            digest_product(&mut digest, view);
        }
        Self(digest.finish())
    }
}

/// What one principal sees, digested whole and product by product, so that a plan
/// depends only on the products it reads: a policy or contract change of another
/// product (or its placeholder schema giving way to the stored one) leaves it runnable.
#[derive(Debug, Clone)]
pub(crate) struct ViewDigest {
    whole: ViewFingerprint,
    mask_key_id: [u8; 32],
    /// `domain.product` -> the digest of what the principal sees of it.
    products: BTreeMap<String, [u8; 32]>,
}

impl ViewDigest {
    /// The digests of `views` under the masking key `mask_key_id`.
    pub(crate) fn of(views: &[ProductView], mask_key_id: &[u8; 32]) -> Self {
        let products = views
            .iter()
            .map(|view| {
                let mut digest = Digest::new();
                digest_product(&mut digest, view);
                (view.product.qualified_name(), digest.finish())
            })
            .collect();
        Self {
            whole: ViewFingerprint::of(views, mask_key_id),
            mask_key_id: *mask_key_id,
            products,
        }
    }

    /// The fingerprint of the whole view.
    pub(crate) fn whole(&self) -> ViewFingerprint {
        self.whole
    }

    /// The fingerprint of what a plan reading `tables` (`catalog.schema.table`
    /// names, as the audit writes them) depends on: the masking key and the part of the
    /// view of each product it reads, a product the principal may no longer read
    /// included. A plan reading any table of the `mesh` catalog or an
    /// `information_schema` (which show the whole view), or no table at all (`DESCRIBE`
    /// shows a table's columns without scanning it), depends on the whole view.
    pub(crate) fn of_tables(&self, tables: &[String]) -> ViewFingerprint {
        if tables.is_empty() {
            return self.whole;
        }
        let mut read = std::collections::BTreeSet::new();
        for table in tables {
            let mut parts = table.splitn(3, '.');
            let (Some(catalog), Some(schema), Some(_)) = (parts.next(), parts.next(), parts.next())
            else {
                return self.whole;
            };
            if catalog == SYSTEM_CATALOG || schema == "information_schema" {
                return self.whole;
            }
            read.insert(format!("{catalog}.{schema}"));
        }
        let mut digest = Digest::new();
        digest.part(b"tables");
        digest.part(&self.mask_key_id);
        digest.part(&(read.len() as u64).to_le_bytes());
        for product in read {
            digest.part(product.as_bytes());
            match self.products.get(&product) {
                Some(seen) => digest.part(seen),
                None => digest.part(b"not readable"),
            }
        }
        ViewFingerprint(digest.finish())
    }
}

/// Feeds what the principal sees of one product into `digest`.
fn digest_product(digest: &mut Digest, view: &ProductView) {
    digest.part(view.product.qualified_name().as_bytes());
    digest.part(&(view.tables.len() as u64).to_le_bytes());
    for (name, table) in &view.tables {
        digest.part(name.as_bytes());
        // As served: whether a table's strings are read as views follows its files, a
        // data change, which leaves the view unchanged.
        digest.part(format!("{:?}", wire_schema(&table.schema()).fields()).as_bytes());
        digest.part(format!("{:?}", view.access.get(name)).as_bytes());
        // Which past versions may be read (`time_travel`, its `max_age`).
        let versions = view.product.table(name).map(|t| t.time_travel);
        digest.part(format!("{versions:?}").as_bytes());
        // A derived table: what its domain sees of its inputs, and its transform
        // (a plan made before either changed must not run).
        if let Some(rights) = view.derived_rights.get(name) {
            digest.part(rights);
            let transform = view.product.table(name).and_then(|t| t.derived.as_ref());
            digest.part(transform.map_or("", |d| d.transform.as_str()).as_bytes());
        }
    }
}

/// SHA-256 over length-prefixed parts: no two sequences of parts read alike.
struct Digest(Context);

impl Digest {
    fn new() -> Self {
        Self(Context::new(&SHA256))
    }

    fn part(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn finish(self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.0.finish().as_ref());
        bytes
    }
}

/// What decides the answers a principal's statements get, beyond the data they read:
/// its view ([`ViewFingerprint`]) and the values of its attributes that the row filters
/// of its tables bind. Two principals with equal fingerprints get the same answer to the
/// same statement over the same data, so the result cache shares answers between them,
/// and only between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AnswerFingerprint([u8; 32]);

impl AnswerFingerprint {
    /// The fingerprint as bytes.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(super) fn of<'a>(
        view: ViewFingerprint,
        bound: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Self {
        let mut digest = Digest::new();
        digest.part(view.as_bytes());
        for (attribute, value) in bound {
            digest.part(attribute.as_bytes());
            // An absent attribute binds NULL, unlike any text (even an empty one).
            match value {
                Some(value) => {
                    digest.part(b"some");
                    digest.part(value.as_bytes());
                }
                None => digest.part(b"none"),
            }
        }
        Self(digest.finish())
    }
}
