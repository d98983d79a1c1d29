"""The client suites again, with the demo mesh served from S3.

The tests of the query, streaming, discovery, error and prepared-statement suites
are collected here a second time, with the ``server`` fixture overridden by the
gateway that reads the demo's data from a moto S3 server (conftest.s3_demo): every
domain under its own root of one bucket, with its own keys. The DuckDB oracle still
reads the local copy of the same files, so every answer is checked against data that
never went through S3. Suites that start servers of their own or connect to the
local demo directly (zero trust's personas, quality, live reload, broken
descriptors, shutdown) stay local.
"""

from __future__ import annotations

import pytest

from mesh_helpers import adbc_query
from s3_mesh import DOMAINS, domain_keys
from test_discovery import *  # noqa: F401,F403  (collected again, against S3)
from test_errors import *  # noqa: F401,F403
from test_prepared import *  # noqa: F401,F403
from test_queries import *  # noqa: F401,F403
from test_streaming import *  # noqa: F401,F403


@pytest.fixture
def server(s3_demo):
    """The S3-backed gateway, checked to be alive before and after the test."""
    srv = s3_demo.server
    if not srv.alive():
        pytest.fail(srv.describe_death(), pytrace=False)
    yield srv
    if not srv.alive():
        pytest.fail("server died during this test: " + srv.describe_death(), pytrace=False)


def test_every_table_is_read_from_s3(s3_demo, adbc_conn):
    for descriptor in s3_demo.mesh_dir.rglob("*.yaml"):
        text = descriptor.read_text()
        assert "file://" not in text and "s3://meshgate-demo/" in text, descriptor
    tables = adbc_query(
        adbc_conn, "SELECT domain, product, table_name, format, data_files, data_bytes FROM mesh.meta.tables"
    ).to_pylist()
    assert len(tables) >= 6
    for row in tables:
        # A virtual table has no storage; it reads its inputs (from S3 here).
        stored = row["format"] != "virtual"
        assert (row["data_files"] > 0 and row["data_bytes"] > 0) == stored, row
    products = adbc_query(adbc_conn, "SELECT domain, product, status FROM mesh.meta.products").to_pylist()
    assert products and all(p["status"] == "ok" for p in products), products


def test_plans_show_neither_storage_nor_keys(s3_demo, adbc_conn):
    plan = adbc_query(
        adbc_conn,
        "EXPLAIN SELECT count(*) FROM clinical.encounters.visits v "
        "JOIN billing.claims.claims c ON c.encounter_id = v.encounter_id "
        "JOIN clinical.labs.results r ON r.encounter_id = v.encounter_id",
    ).to_pylist()
    text = "\n".join(str(row) for row in plan)
    secrets = [s3_demo.s3.endpoint, f"127.0.0.1:{s3_demo.s3.port}", "s3://", "meshgate-demo"]
    for domain in DOMAINS:
        secrets.extend(domain_keys(domain))
    for secret in secrets:
        assert secret not in text, f"{secret!r} in the plan:\n{text}"
