"""The client suites again, with the demo mesh served from S3.

The tests of the query, streaming, zero-trust, discovery, error, prepared-statement
and quality suites are collected here a second time, with the ``server`` fixture
overridden by the gateway that reads the demo's data from a moto S3 server
(conftest.s3_demo): every domain under its own root of one bucket, with its own
keys. The DuckDB oracles still read the local copy of the same files, so every
answer is checked against data that never went through S3. Suites about the local
mesh directory itself (live reload, broken descriptors, shutdown) stay local.
"""

from __future__ import annotations

import pytest

from mesh_helpers import adbc_query
from test_discovery import *  # noqa: F401,F403  (collected again, against S3)
from test_errors import *  # noqa: F401,F403
from test_prepared import *  # noqa: F401,F403
from test_quality import *  # noqa: F401,F403
from test_queries import *  # noqa: F401,F403
from test_streaming import *  # noqa: F401,F403
from test_zero_trust import *  # noqa: F401,F403

# About what `meshgate demo` prints; the S3 gateway runs `meshgate serve`.
del test_demo_prints_working_persona_tokens  # noqa: F821


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
        assert row["data_files"] > 0 and row["data_bytes"] > 0, row
    products = adbc_query(adbc_conn, "SELECT domain, product, status FROM mesh.meta.products").to_pylist()
    assert products and all(p["status"] == "ok" for p in products), products
