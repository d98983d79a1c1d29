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
    ///
    /// Every part is written with its length, so no claim value, whatever characters
    /// it holds, can make two different principals read alike.
    pub fn fingerprint(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut part = |value: &str| {
            let _ = write!(out, "{}:{value};", value.len());
        };
        part(&self.issuer);
        part(&self.subject);
        part(&self.roles.len().to_string());
        for role in &self.roles {
            part(role);
        }
        for (name, value) in &self.attributes {
            part(name);
            part(value);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_cannot_be_forged_with_separators_in_claims() {
        let one = Principal::new("iss", "sam", ["analyst", "admin"]);
        let joined = Principal::new("iss", "sam", ["analyst\u{1e}admin"]);
        let semicolon = Principal::new("iss", "sam", ["5:admin;"]);
        assert_ne!(one.fingerprint(), joined.fingerprint());
        assert_ne!(one.fingerprint(), semicolon.fingerprint());
        let mut two_claims = Principal::new("iss", "sam", ["r"]);
        two_claims
            .attributes
            .insert("region".into(), "north".into());
        two_claims.attributes.insert("team".into(), "x".into());
        let mut one_claim = Principal::new("iss", "sam", ["r"]);
        one_claim
            .attributes
            .insert("region".into(), "north;4:team;1:x".into());
        assert_ne!(two_claims.fingerprint(), one_claim.fingerprint());
        let moved = Principal::new("iss", "sam", ["r", "region"]);
        let mut attribute = Principal::new("iss", "sam", ["r"]);
        attribute.attributes.insert("region".into(), String::new());
        assert_ne!(moved.fingerprint(), attribute.fingerprint());
        assert_eq!(one.fingerprint(), one.clone().fingerprint());
    }
}
