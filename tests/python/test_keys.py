"""The context map: primary keys and relationships the demo's descriptors declare,
served to BI tools through the Flight SQL key commands (raw Flight here; JDBC in
test_jdbc.py) and in SQL as `mesh.meta.primary_keys` / `mesh.meta.relationships`, each
showing only what the caller may see at both ends.
"""

from __future__ import annotations

import pyarrow.flight as flight
import pytest

from mesh_helpers import FlightConn, _len_field, adbc_connect, adbc_query, pack_any
from policy_model import PERSONAS, can_read, column_mask

# (referencing table, its columns, referenced table, its columns), as the demo declares.
DEMO_RELATIONSHIPS = {
    ("reference.facilities.facilities", ("region",), "reference.regions.regions", ("region",)),
    ("patients.registry.patients", ("region",), "reference.regions.regions", ("region",)),
    ("clinical.encounters.visits", ("patient_id",), "patients.registry.patients", ("patient_id",)),
    ("clinical.encounters.visits", ("facility_id",), "reference.facilities.facilities", ("facility_id",)),
    ("clinical.encounters.visits", ("region",), "reference.regions.regions", ("region",)),
    ("clinical.labs.results", ("encounter_id",), "clinical.encounters.visits", ("encounter_id",)),
    ("clinical.labs.results", ("patient_id",), "patients.registry.patients", ("patient_id",)),
    ("billing.claims.claims", ("encounter_id",), "clinical.encounters.visits", ("encounter_id",)),
    ("billing.claims.claims", ("patient_id",), "patients.registry.patients", ("patient_id",)),
    ("analytics.readmissions.stays", ("encounter_id",), "clinical.encounters.visits", ("encounter_id",)),
    ("analytics.readmissions.stays", ("patient_id",), "patients.registry.patients", ("patient_id",)),
}
DEMO_PRIMARY_KEYS = {
    "reference.regions.regions": ("region",),
    "reference.facilities.facilities": ("facility_id",),
    "patients.registry.patients": ("patient_id",),
    "clinical.encounters.visits": ("encounter_id",),
    "clinical.labs.results": ("result_id",),
    "billing.claims.claims": ("claim_id",),
    "analytics.readmissions.stays": ("encounter_id",),
    # A composite key.
    "analytics.readmissions.monthly": ("region", "admit_month"),
}


def _names(fqtn: str | None) -> bytes:
    """catalog = 1, db_schema = 2, table = 3 of the key commands."""
    if fqtn is None:
        return b""
    catalog, schema, table = fqtn.split(".")
    return _len_field(1, catalog.encode()) + _len_field(2, schema.encode()) + _len_field(3, table.encode())


def _keys_command(conn: FlightConn, name: str, message: bytes):
    info = conn.get_flight_info(flight.FlightDescriptor.for_command(pack_any(name, message)))
    return conn.do_get(info.endpoints[0].ticket).read_all().to_pylist()


def _cross_reference(pk: str, fk: str) -> bytes:
    """pk_catalog = 1, pk_db_schema = 2, pk_table = 3, fk_catalog = 4, fk_db_schema = 5,
    fk_table = 6."""
    (a, b, c), (d, e, f) = pk.split("."), fk.split(".")
    return b"".join(_len_field(i + 1, v.encode()) for i, v in enumerate((a, b, c, d, e, f)))


def test_primary_keys_through_flight_sql(server, admin_token):
    conn = FlightConn(server.uri, admin_token)
    for fqtn, columns in DEMO_PRIMARY_KEYS.items():
        rows = _keys_command(conn, "CommandGetPrimaryKeys", _names(fqtn))
        catalog, schema, table = fqtn.split(".")
        assert [(r["catalog_name"], r["db_schema_name"], r["table_name"], r["column_name"], r["key_sequence"])
                for r in rows] == [(catalog, schema, table, c, i + 1) for i, c in enumerate(columns)]
        assert {r["key_name"] for r in rows} == {f"{table}_pkey"}
    # Names, not patterns; an unknown table has no key.
    assert _keys_command(conn, "CommandGetPrimaryKeys", _names("clinical.encounters.visit%")) == []


def test_imported_exported_and_cross_reference_keys(server, admin_token):
    conn = FlightConn(server.uri, admin_token)
    imported = _keys_command(conn, "CommandGetImportedKeys", _names("clinical.encounters.visits"))
    assert [(r["pk_catalog_name"], r["pk_table_name"], r["pk_column_name"], r["fk_column_name"]) for r in imported] == [
        ("patients", "patients", "patient_id", "patient_id"),
        ("reference", "facilities", "facility_id", "facility_id"),
        ("reference", "regions", "region", "region"),
    ]
    assert all(r["fk_table_name"] == "visits" and r["key_sequence"] == 1 for r in imported)
    assert all(r["update_rule"] == 3 and r["delete_rule"] == 3 for r in imported)  # NO ACTION
    assert {r["pk_key_name"] for r in imported} == {"patients_pkey", "facilities_pkey", "regions_pkey"}

    exported = _keys_command(conn, "CommandGetExportedKeys", _names("clinical.encounters.visits"))
    assert [(r["fk_catalog_name"], r["fk_table_name"], r["fk_key_name"]) for r in exported] == [
        ("analytics", "stays", "stays_encounter_id_fkey"),
        ("billing", "claims", "claims_encounter_id_fkey"),
        ("clinical", "results", "results_encounter_id_fkey"),
    ]
    cross = _keys_command(conn, "CommandGetCrossReference",
                          _cross_reference("patients.registry.patients", "billing.claims.claims"))
    assert [(r["fk_column_name"], r["pk_column_name"]) for r in cross] == [("patient_id", "patient_id")]
    assert _keys_command(conn, "CommandGetCrossReference",
                         _cross_reference("billing.claims.claims", "patients.registry.patients")) == []


def _joinable(persona, relationship) -> bool:
    """Both ends readable, and their columns alike: both in clear or both hashed (a key
    hashed at one end only joins nothing)."""
    table, columns, referenced, referenced_columns = relationship
    if not (can_read(persona, table) and can_read(persona, referenced)):
        return False
    return all(
        (column_mask(persona, table, a) is None) == (column_mask(persona, referenced, b) is None)
        for a, b in zip(columns, referenced_columns)
    )


def _visible(persona) -> set:
    return {r for r in DEMO_RELATIONSHIPS if _joinable(persona, r)}


@pytest.mark.parametrize("name", sorted(PERSONAS))
def test_each_persona_sees_only_relationships_between_tables_it_may_read(server, mint, name):
    """In SQL and through the key commands alike: a relationship to a product the caller
    may not read does not exist for it (cara, billing, sees claims but not the visits
    and patients they reference)."""
    persona = PERSONAS[name]
    token = mint(*persona.mint_args())
    conn = adbc_connect(server.uri, token)
    try:
        table = adbc_query(conn, "SELECT domain, product, table_name, columns, references_domain, "
                                 "references_product, references_table, references_columns, cardinality "
                                 "FROM mesh.meta.relationships")
        keys = adbc_query(conn, "SELECT domain, product, table_name, columns FROM mesh.meta.primary_keys")
    finally:
        conn.close()
    seen = {(f"{r['domain']}.{r['product']}.{r['table_name']}", tuple(r["columns"]),
             f"{r['references_domain']}.{r['references_product']}.{r['references_table']}",
             tuple(r["references_columns"])) for r in table.to_pylist()}
    assert seen == _visible(persona)
    assert {r["cardinality"] for r in table.to_pylist()} <= {"many-to-one", "one-to-one"}
    assert {f"{r['domain']}.{r['product']}.{r['table_name']}": tuple(r["columns"]) for r in keys.to_pylist()} == {
        t: c for t, c in DEMO_PRIMARY_KEYS.items() if can_read(persona, t)}

    flight_conn = FlightConn(server.uri, token)
    through_flight = set()
    for fqtn in {r[0] for r in DEMO_RELATIONSHIPS}:
        for r in _keys_command(flight_conn, "CommandGetImportedKeys", _names(fqtn)):
            through_flight.add((fqtn, (r["fk_column_name"],),
                                f"{r['pk_catalog_name']}.{r['pk_db_schema_name']}.{r['pk_table_name']}",
                                (r["pk_column_name"],)))
    assert through_flight == _visible(persona)


def test_sqlalchemy_reflects_primary_keys(server, admin_token):
    """SQLAlchemy's inspector through flightsql-dbapi, with its primary-key feature on
    (its get_foreign_keys answers nothing by design; its DB-API reads imported keys)."""
    import flightsql.sqlalchemy  # noqa: F401  registers the "datafusion+flightsql" dialect
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.engine import URL

    url = URL.create("datafusion+flightsql", host=server.host, port=server.port, query={
        "insecure": "true", "token": admin_token, "feature-sqlalchemy-primary-keys": "on"})
    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        assert inspector.get_pk_constraint("visits", schema="encounters")["constrained_columns"] == ["encounter_id"]
        with engine.connect() as conn:
            imported = conn.connection.flightsql_get_foreign_keys("claims", schema="claims")
        assert sorted((r["fk_column_name"], r["pk_table_name"]) for r in imported) == [
            ("encounter_id", "visits"), ("patient_id", "patients")]
    finally:
        engine.dispose()
