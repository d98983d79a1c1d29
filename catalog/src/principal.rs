//! Who is asking: the verified identity a policy is evaluated for.

use std::collections::{BTreeMap, BTreeSet};

/// A verified caller: the subject of a validated token, its roles and named attributes.
///
/// Built only from verified claims (see the gateway's authentication); policy decisions
/// take it as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    /// The token's issuer.
    pub issuer: String,
    /// The token's subject (`sub`).
    pub subject: String,
    /// Roles or groups.
    pub roles: BTreeSet<String>,
    /// Named attributes, e.g. `region` or `domain`.
    pub attributes: BTreeMap<String, String>,
}

impl Principal {
    /// A principal with `subject` and `roles`, no attributes (handy in tests and tools).
    pub fn new<R: Into<String>>(
        issuer: impl Into<String>,
        subject: impl Into<String>,
        roles: impl IntoIterator<Item = R>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            subject: subject.into(),
            roles: roles.into_iter().map(Into::into).collect(),
            attributes: BTreeMap::new(),
        }
    }

    /// Adds an attribute.
    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains(role)
    }

    /// Whether the principal holds at least one of `roles`.
    pub fn has_any_role(&self, roles: &[String]) -> bool {
        roles.iter().any(|r| self.has_role(r))
    }

    /// The value of attribute `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    /// `issuer|subject`: identifies the principal across requests (audit, logs).
    pub fn id(&self) -> String {
        format!("{}|{}", self.issuer, self.subject)
    }

    /// Everything a policy decision depends on (issuer, subject, roles, attributes), as
    /// one string. Handles are bound to it, so a plan authorised for one set of roles
    /// cannot be redeemed by the same subject holding other roles.
    pub fn fingerprint(&self) -> String {
        let roles: Vec<&str> = self.roles.iter().map(String::as_str).collect();
        let attributes: Vec<String> = self
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}",
            self.issuer,
            self.subject,
            roles.join("\u{1e}"),
            attributes.join("\u{1e}")
        )
    }
}
