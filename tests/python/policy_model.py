"""The demo mesh's access policy, written down independently of the gateway.

This is the *expected* behaviour from the demo descriptors (``D/<domain>/<product>.yaml``)
and the demo's platform rule, used to build per-principal DuckDB oracles: each
table the principal may read becomes a DuckDB view that is already row-filtered
and masked for that principal; a table the principal may not read does not
exist in that oracle at all.

Masks, as the SQL must see them everywhere (WHERE, GROUP BY, ORDER BY, joins):
  null    -> NULL of the column's type;
  redact  -> the string 'REDACTED' for strings (NULL stays NULL), NULL otherwise;
  hash    -> an HMAC under a key only the server knows.  The oracle cannot compute
             it, so it substitutes another injective function (md5 with a prefix):
             only hash-insensitive facts (equality structure, counts, NULL-ness)
             may be compared for hashed columns.
When a domain rule and the platform rule both mask a column, the stricter wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa

from mesh_helpers import TABLES, split_name

ANY_AUTHENTICATED = None


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]
    attributes: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def has_any(self, roles) -> bool:
        return bool(self.roles & set(roles))

    def mint_args(self) -> list[str]:
        """Arguments of `meshgate token` for this principal (besides the issuer choice)."""
        args = ["--sub", self.name]
        for role in sorted(self.roles):
            args += ["--role", role]
        for key, value in sorted(self.attributes.items()):
            args += ["--attr", f"{key}={value}"]
        return args


PERSONAS: dict[str, Principal] = {
    "ana": Principal("ana", frozenset({"clinician"}), {"region": "north"}),
    "ben": Principal("ben", frozenset({"analyst"})),
    "cara": Principal("cara", frozenset({"billing"})),
    "dev": Principal("dev", frozenset({"admin", "pii_reader"})),
}

# policy.read: the roles that may read each table's product.
READ_ROLES: dict[str, frozenset[str] | None] = {
    "reference.facilities.facilities": ANY_AUTHENTICATED,
    "reference.regions.regions": ANY_AUTHENTICATED,
    "patients.registry.patients": frozenset({"clinician", "analyst", "registrar", "admin"}),
    "clinical.encounters.visits": frozenset({"clinician", "analyst", "admin"}),
    "clinical.labs.results": frozenset({"clinician", "analyst", "admin"}),
    "billing.claims.claims": frozenset({"billing", "analyst", "admin"}),
    "analytics.readmissions.stays": frozenset({"clinician", "analyst", "admin"}),
    "analytics.readmissions.monthly": frozenset({"clinician", "analyst", "admin"}),
}

# policy.rows: (column, principal attribute, roles exempt from the filter).
ROW_FILTERS: dict[str, list[tuple[str, str, frozenset[str]]]] = {
    "patients.registry.patients": [("region", "region", frozenset({"analyst", "registrar", "admin"}))],
    "clinical.encounters.visits": [("region", "region", frozenset({"analyst", "admin"}))],
    "analytics.readmissions.stays": [("region", "region", frozenset({"analyst", "admin"}))],
    "analytics.readmissions.monthly": [("region", "region", frozenset({"analyst", "admin"}))],
}

# policy.columns: column -> (mask, roles that see it in clear).
DOMAIN_MASKS: dict[str, dict[str, tuple[str, frozenset[str]]]] = {
    "patients.registry.patients": {"birth_date": ("null", frozenset({"clinician", "registrar", "admin"}))},
    "clinical.encounters.visits": {"diagnosis_code": ("hash", frozenset({"clinician", "admin"}))},
    "analytics.readmissions.stays": {"patient_id": ("hash", frozenset({"admin"}))},
}

# policy.aggregate_only: table -> (min_group_size, privacy unit, roles exempt). A
# principal the rule applies to reads the table only through aggregates, and groups with
# fewer distinct privacy units than the minimum are left out of every answer.
AGGREGATE_ONLY: dict[str, tuple[int, str, frozenset[str]]] = {
    "clinical.labs.results": (11, "patient_id", frozenset({"clinician", "admin"})),
}

# Derived tables: the principal each one's transform reads its inputs as (definer rights:
# engine.derived.principals of the demo), and the columns that arrive hashed for every
# reader because the definer reads them hashed.
DEFINERS: dict[str, Principal] = {
    "analytics.readmissions.stays": Principal("domain:analytics", frozenset({"analyst"})),
    "analytics.readmissions.monthly": Principal("domain:analytics", frozenset({"analyst"})),
}
DEFINER_HASHED: dict[str, set[str]] = {
    "analytics.readmissions.stays": {"diagnosis_code"},
}

# Platform rule pii-redaction: columns tagged pii -> redact unless pii_reader.
PII_COLUMNS: dict[str, set[str]] = {
    "patients.registry.patients": {"given_name", "family_name", "birth_date", "postcode"},
}
PLATFORM_PII = ("redact", frozenset({"pii_reader"}))

# How much of the value survives: the stricter (smaller) mask wins.
_REVEALS = {"null": 0, "redact": 1, "hash": 2}


def can_read(p: Principal, fqtn: str) -> bool:
    roles = READ_ROLES[fqtn]
    return roles is ANY_AUTHENTICATED or p.has_any(roles)


def visible_tables(p: Principal) -> list[str]:
    return sorted(t for t in TABLES if can_read(p, t))


def invisible_tables(p: Principal) -> list[str]:
    return sorted(t for t in TABLES if not can_read(p, t))


def visible_products(p: Principal) -> set[tuple[str, str]]:
    return {split_name(t)[:2] for t in visible_tables(p)}


def column_mask(p: Principal, fqtn: str, column: str) -> str | None:
    """The mask applied to `column` for `p`, or None when it is served in clear."""
    candidates = []
    domain_rule = DOMAIN_MASKS.get(fqtn, {}).get(column)
    if domain_rule and not p.has_any(domain_rule[1]):
        candidates.append(domain_rule[0])
    if column in PII_COLUMNS.get(fqtn, set()) and not p.has_any(PLATFORM_PII[1]):
        candidates.append(PLATFORM_PII[0])
    if not candidates:
        return None
    return min(candidates, key=lambda kind: _REVEALS[kind])


def masked_columns(p: Principal, fqtn: str) -> dict[str, str]:
    return {c.name: m for c in TABLES[fqtn] if (m := column_mask(p, fqtn, c.name))}


def hashed_columns(p: Principal, fqtn: str) -> set[str]:
    """Columns whose values the oracle cannot reproduce: hashed for `p`, or hashed by
    the definer of a derived table (for every reader)."""
    hashed = {c for c, m in masked_columns(p, fqtn).items() if m == "hash"}
    return hashed | DEFINER_HASHED.get(fqtn, set())


def aggregate_threshold(p: Principal, fqtn: str) -> tuple[int, str] | None:
    """(min_group_size, privacy unit) when `p` reads `fqtn` only in aggregate."""
    rule = AGGREGATE_ONLY.get(fqtn)
    if rule is None or p.has_any(rule[2]) or not can_read(p, fqtn):
        return None
    return rule[0], rule[1]


def row_filter(p: Principal, fqtn: str) -> list[tuple[str, str | None]]:
    """(column, required value) pairs the principal's rows must match; value None keeps no row."""
    out = []
    for column, attribute, exempt in ROW_FILTERS.get(fqtn, []):
        if not p.has_any(exempt):
            out.append((column, p.attributes.get(attribute)))
    return out


# --------------------------------------------------------------------------
# DuckDB views
# --------------------------------------------------------------------------


def duckdb_type(t: pa.DataType) -> str:
    if pa.types.is_string(t):
        return "VARCHAR"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_int32(t):
        return "INTEGER"
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_date32(t):
        return "DATE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision}, {t.scale})"
    raise NotImplementedError(f"no DuckDB type for {t}")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


ORACLE_HASH_PREFIX = "oracle-hash:"


def _column_sql(p: Principal, fqtn: str, column: str, arrow_type: pa.DataType) -> str:
    q = _quote(column)
    mask = column_mask(p, fqtn, column)
    if mask is None:
        expr = q
    elif mask == "null" or (mask == "redact" and not pa.types.is_string(arrow_type)):
        expr = f"CAST(NULL AS {duckdb_type(arrow_type)})"
    elif mask == "redact":
        expr = f"CASE WHEN {q} IS NULL THEN NULL ELSE 'REDACTED' END"
    elif mask == "hash":
        expr = f"CASE WHEN {q} IS NULL THEN NULL ELSE {_literal(ORACLE_HASH_PREFIX)} || md5(CAST({q} AS VARCHAR)) END"
    else:
        raise NotImplementedError(mask)
    return f"{expr} AS {q}"


def oracle_view(p: Principal) -> Callable[[str, str], str | None]:
    """The `view` argument of mesh_helpers.Oracle for principal p."""

    def view(fqtn: str, source: str) -> str | None:
        if not can_read(p, fqtn):
            return None
        columns = ", ".join(_column_sql(p, fqtn, c.name, c.type) for c in TABLES[fqtn])
        conditions = []
        for column, value in row_filter(p, fqtn):
            conditions.append("FALSE" if value is None else f"{_quote(column)} = {_literal(value)}")
        where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
        # The filter reads the stored values; the masks apply to what survives it.
        return f"SELECT {columns} FROM (SELECT * FROM {source}){where}"

    return view


def definer_view(derived: str, fqtn: str, source: str) -> str:
    """The input `fqtn` of the derived table `derived` as its definer sees it."""
    select = oracle_view(DEFINERS[derived])(fqtn, source)
    assert select is not None, f"the definer of {derived} may not read its input {fqtn}"
    return select
