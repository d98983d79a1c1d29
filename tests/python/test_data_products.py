"""Data as a product, discovered from Python: status, SLAs and what storage holds, in
`mesh.meta`; and a freshness bound sent as a request header."""

from __future__ import annotations

import adbc_driver_manager as adm
import pytest

from mesh_helpers import adbc_connect, adbc_query, products_by_domain

# Every demo product declares a freshness SLA.
DEMO_FRESHNESS = {(d, p) for d, ps in products_by_domain().items() for p in ps}


def _rows(conn, sql: str) -> list[dict]:
    return adbc_query(conn, sql).to_pylist()


def test_every_product_reports_ok_with_check_times(adbc_conn):
    rows = _rows(adbc_conn, "SELECT * FROM mesh.meta.products")
    expected = {(d, p) for d, ps in products_by_domain().items() for p in ps}
    assert {(r["domain"], r["product"]) for r in rows} == expected
    for r in rows:
        assert r["status"] == "ok", r
        assert r["status_reason"] is None, r
        assert r["checked_at"] is not None and r["descriptor_modified_at"] is not None, r


def test_freshness_slas_are_measured_and_met_by_fresh_demo_data(adbc_conn):
    rows = _rows(
        adbc_conn,
        "SELECT s.domain, s.product, s.target, s.measured, s.met, s.data_modified_at, "
        "p.freshness_sla FROM mesh.meta.slas s JOIN mesh.meta.products p "
        "ON p.domain = s.domain AND p.product = s.product WHERE s.objective = 'freshness'",
    )
    got = {(r["domain"], r["product"]): r for r in rows}
    assert set(got) == DEMO_FRESHNESS
    for r in rows:
        assert r["target"] == r["freshness_sla"], r
        assert r["measured"], r
        assert r["met"] is True, r
        assert r["data_modified_at"] is not None, r


def test_completeness_targets_are_listed_unmeasured(adbc_conn):
    rows = _rows(adbc_conn, "SELECT * FROM mesh.meta.slas WHERE objective = 'completeness'")
    assert [(r["domain"], r["product"], r["target"]) for r in rows] == [
        ("patients", "registry", ">= 100 new patients per day")
    ]
    assert rows[0]["met"] is None and rows[0]["measured"] is None


def test_tables_report_files_bytes_and_delta_versions(adbc_conn):
    rows = _rows(
        adbc_conn,
        "SELECT domain, product, table_name, format, data_files, data_bytes, delta_version "
        "FROM mesh.meta.tables",
    )
    assert rows
    for r in rows:
        if r["format"] == "virtual":
            # No storage of its own; its inputs' sizes are theirs to tell.
            assert r["data_files"] == 0 and r["data_bytes"] == 0, r
            assert r["delta_version"] is None, r
            continue
        assert r["data_files"] >= 1 and r["data_bytes"] > 0, r
        if r["format"] == "delta":
            assert r["delta_version"] is not None and r["delta_version"] >= 0, r
        else:
            assert r["delta_version"] is None, r


def test_slas_join_with_the_products_they_describe(adbc_conn):
    rows = _rows(
        adbc_conn,
        "SELECT p.owner_team, s.met FROM mesh.meta.slas s "
        "JOIN mesh.meta.products p ON p.domain = s.domain AND p.product = s.product "
        "WHERE s.objective = 'freshness' AND s.domain = 'clinical' ORDER BY s.product",
    )
    assert len(rows) == 2 and all(r["met"] for r in rows), rows


def test_a_freshness_bound_refuses_data_older_than_it(server, admin_token):
    sql = "SELECT count(*) AS n FROM clinical.labs.results"
    lenient = adbc_connect(server.uri, admin_token, headers={"x-meshgate-max-staleness": "3650days"})
    try:
        assert adbc_query(lenient, sql).column("n")[0].as_py() > 0
    finally:
        lenient.close()
    strict = adbc_connect(server.uri, admin_token, headers={"x-meshgate-max-staleness": "1ms"})
    try:
        with pytest.raises(adm.Error) as refused:
            adbc_query(strict, sql)
        assert "staler" in str(refused.value) and "clinical.labs" in str(refused.value)
        # System tables are always fresh.
        assert adbc_query(strict, "SELECT count(*) AS n FROM mesh.meta.products").column("n")[0].as_py() > 0
    finally:
        strict.close()
