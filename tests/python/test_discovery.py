"""Catalog discovery through ADBC, plain Flight SQL and SQLAlchemy."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mesh_helpers import (
    DOMAINS,
    TABLES,
    adbc_query,
    command_get_catalogs,
    flatten_objects,
    flight_command_info,
    flight_read_all,
    products_by_domain,
    split_name,
    tables_by_product,
)

EXPECTED_PRODUCTS = products_by_domain()
EXPECTED_TABLES = tables_by_product()


def _schema_problems(schema: pa.Schema, fqtn: str) -> list[str]:
    expected = TABLES[fqtn]
    problems = []
    if schema.names != [c.name for c in expected]:
        problems.append(f"column names {schema.names} != contract {[c.name for c in expected]}")
        return problems
    for col in expected:
        fld = schema.field(col.name)
        if fld.type != col.type:
            problems.append(f"{col.name}: type {fld.type} != contract {col.type}")
        if col.nullable and not fld.nullable:
            problems.append(f"{col.name}: declared nullable but served as NOT NULL")
    return problems


# --------------------------------------------------------------------------
# ADBC
# --------------------------------------------------------------------------


def test_get_objects_catalogs(adbc_conn):
    objs = adbc_conn.adbc_get_objects(depth="catalogs").read_all()
    names = [r["catalog_name"] for r in objs.to_pylist()]
    assert set(DOMAINS) <= set(names), f"catalogs {names} lack some of {DOMAINS}"
    assert len(names) == len(set(names)), f"duplicate catalogs: {names}"


def test_get_objects_schemas_are_products(adbc_conn):
    tree = flatten_objects(adbc_conn.adbc_get_objects(depth="db_schemas").read_all())
    for domain, products in EXPECTED_PRODUCTS.items():
        assert domain in tree, f"catalog {domain} missing from {sorted(tree)}"
        assert set(tree[domain]) == products, f"{domain}: schemas {sorted(tree[domain])} != products {sorted(products)}"


def test_get_objects_full_tree(adbc_conn):
    tree = flatten_objects(adbc_conn.adbc_get_objects(depth="all").read_all())
    for (domain, product), tables in EXPECTED_TABLES.items():
        served = tree.get(domain, {}).get(product)
        assert served is not None, f"{domain}.{product} missing from GetObjects"
        assert set(served) == tables, f"{domain}.{product}: tables {sorted(served)} != {sorted(tables)}"
        for table in tables:
            entry = served[table]
            assert entry["type"] == "TABLE", f"{domain}.{product}.{table}: table_type {entry['type']!r}"
            expected_cols = [c.name for c in TABLES[f"{domain}.{product}.{table}"]]
            assert entry["columns"] == expected_cols, f"{domain}.{product}.{table}: columns {entry['columns']}"
            positions = [c.get("ordinal_position") for c in entry["raw_columns"]]
            assert positions == list(range(1, len(expected_cols) + 1)), (
                f"{domain}.{product}.{table}: ordinal positions {positions}"
            )


def test_get_objects_filters(adbc_conn):
    only_clinical = flatten_objects(adbc_conn.adbc_get_objects(depth="db_schemas", catalog_filter="clinical").read_all())
    assert set(only_clinical) == {"clinical"}, sorted(only_clinical)
    assert set(only_clinical["clinical"]) == EXPECTED_PRODUCTS["clinical"]

    enc = flatten_objects(adbc_conn.adbc_get_objects(depth="tables", db_schema_filter="enc%").read_all())
    schemas = {(c, s) for c, ss in enc.items() for s in ss}
    assert schemas == {("clinical", "encounters")}, schemas
    assert set(enc["clinical"]["encounters"]) == {"visits"}

    res = flatten_objects(adbc_conn.adbc_get_objects(depth="tables", table_name_filter="res_lts").read_all())
    tables = {(c, s, t) for c, ss in res.items() for s, ts in ss.items() for t in ts}
    assert tables == {("clinical", "labs", "results")}, tables

    cols = flatten_objects(
        adbc_conn.adbc_get_objects(depth="all", catalog_filter="billing", column_name_filter="amount").read_all()
    )
    assert cols["billing"]["claims"]["claims"]["columns"] == ["amount"]


@pytest.mark.parametrize("fqtn", sorted(TABLES))
def test_table_schema_matches_contract(adbc_conn, fqtn):
    domain, product, table = split_name(fqtn)
    schema = adbc_conn.adbc_get_table_schema(table, catalog_filter=domain, db_schema_filter=product)
    problems = _schema_problems(schema, fqtn)
    assert not problems, f"{fqtn}: " + "; ".join(problems)


@pytest.mark.parametrize("fqtn", sorted(TABLES))
def test_query_schema_matches_discovery(adbc_conn, fqtn):
    domain, product, table = split_name(fqtn)
    discovered = adbc_conn.adbc_get_table_schema(table, catalog_filter=domain, db_schema_filter=product)
    result = adbc_query(adbc_conn, f"SELECT * FROM {fqtn} LIMIT 0")
    assert result.num_rows == 0
    assert result.schema.names == discovered.names
    assert [f.type for f in result.schema] == [f.type for f in discovered], (
        f"{fqtn}: SELECT * types {result.schema.types} != GetTables types {discovered.types}"
    )
    problems = _schema_problems(result.schema, fqtn)
    assert not problems, f"{fqtn} (SELECT * result): " + "; ".join(problems)


def test_table_types(adbc_conn):
    types = adbc_conn.adbc_get_table_types()
    assert "TABLE" in types, types


def test_table_schema_unknown_table(adbc_conn):
    import adbc_driver_manager

    with pytest.raises(adbc_driver_manager.ProgrammingError) as err:
        adbc_conn.adbc_get_table_schema("no_such_table", catalog_filter="clinical", db_schema_filter="encounters")
    assert err.value.status_code == adbc_driver_manager.AdbcStatusCode.NOT_FOUND, err.value


# --------------------------------------------------------------------------
# Plain Flight SQL via pyarrow.flight
# --------------------------------------------------------------------------


def test_flight_get_catalogs(flight_client):
    info = flight_command_info(flight_client, command_get_catalogs())
    table, _ = flight_read_all(flight_client, info)
    assert table.schema.names == ["catalog_name"]
    assert table.schema.field("catalog_name").type == pa.string()
    assert info.schema.equals(table.schema), f"FlightInfo schema {info.schema} != stream schema {table.schema}"
    assert set(DOMAINS) <= set(table.column("catalog_name").to_pylist())


# --------------------------------------------------------------------------
# flightsql-dbapi / SQLAlchemy
# --------------------------------------------------------------------------


def test_flightsql_dbapi_sql_info(flightsql_dbapi_client):
    """The SQLAlchemy dialect's initialize() needs exactly these SqlInfo values."""
    from flightsql import flightsql_pb2 as pb
    from flightsql.dbapi import Connection

    conn = Connection(flightsql_dbapi_client)
    wanted = [
        pb.FLIGHT_SQL_SERVER_NAME,
        pb.FLIGHT_SQL_SERVER_ARROW_VERSION,
        pb.FLIGHT_SQL_SERVER_READ_ONLY,
        pb.SQL_IDENTIFIER_QUOTE_CHAR,
    ]
    info = conn.flightsql_get_sql_info(wanted)
    assert pb.FLIGHT_SQL_SERVER_READ_ONLY in info, info
    assert pb.SQL_IDENTIFIER_QUOTE_CHAR in info, info
    assert info[pb.FLIGHT_SQL_SERVER_READ_ONLY] is True, f"a read-only gateway should say so: {info}"
    quote = info[pb.SQL_IDENTIFIER_QUOTE_CHAR]
    assert isinstance(quote, str) and len(quote) == 1, quote


def test_sqlalchemy_schema_names(sa_engine):
    from sqlalchemy import inspect

    names = inspect(sa_engine).get_schema_names()
    wanted = {p for ps in EXPECTED_PRODUCTS.values() for p in ps}
    assert wanted <= set(names), f"schema names {names} lack {sorted(wanted - set(names))}"


def test_sqlalchemy_table_names(sa_engine):
    from sqlalchemy import inspect

    insp = inspect(sa_engine)
    for (_domain, product), tables in EXPECTED_TABLES.items():
        got = insp.get_table_names(schema=product)
        assert sorted(got) == sorted(tables), f"schema {product}: {got}"


SA_TYPES = {
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.string(): "TEXT",
    pa.float64(): "FLOAT",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
}


def _sa_type_name(arrow_type: pa.DataType) -> str:
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP"
    if pa.types.is_decimal(arrow_type):
        return "DECIMAL"
    return SA_TYPES[arrow_type]


@pytest.mark.parametrize("fqtn", sorted(TABLES))
def test_sqlalchemy_columns(sa_engine, fqtn):
    from sqlalchemy import inspect

    _domain, product, table = split_name(fqtn)
    cols = inspect(sa_engine).get_columns(table, schema=product)
    assert [c["name"] for c in cols] == [c.name for c in TABLES[fqtn]]
    got_types = [type(c["type"]).__name__ for c in cols]
    want_types = [_sa_type_name(c.type) for c in TABLES[fqtn]]
    assert got_types == want_types, f"{fqtn}: SQLAlchemy types {got_types} != {want_types}"
    for col, want in zip(cols, TABLES[fqtn]):
        if want.nullable:
            assert col["nullable"], f"{fqtn}.{want.name} should be nullable"
