"""`meshgate policy test <cases.yaml>`: a domain's policy cases, run offline against its
descriptors and fixture data, as its own CI would: exit 0 when every case holds, 1 when
one fails (named, with what it got), 2 when the cases cannot run.
"""

from __future__ import annotations

import subprocess
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mesh_helpers import hermetic_env

DESCRIPTOR = """\
domain: shop
product: orders
version: 1.0.0
description: Orders, one row per order.
owner: { team: shop-data, contact: shop@example.org }
tags: [pii]
tables:
  - name: orders
    format: parquet
    location: data/orders/
    columns:
      - { name: id, type: Int64, nullable: false }
      - { name: region, type: Utf8, nullable: false }
      - { name: email, type: Utf8, tags: [pii] }
      - { name: amount, type: "Decimal128(10, 2)" }
policy:
  read: { any_role: [analyst, admin] }
  rows:
    - { filter: "region = principal.region", unless_role: [admin] }
  columns:
    email: { mask: redact, unless_role: [admin] }
"""

CONFIG = """\
platform_policies:
  - { name: pii-hidden, tag: pii, column: { hide: true, unless_role: [admin, pii_reader] } }
"""

PASSING = """\
mesh: mesh
config: gateway.yaml
cases:
  - name: an analyst in the north sees the northern orders only
    principal: { subject: ana, roles: [analyst], attributes: { region: north } }
    sql: SELECT id, amount FROM shop.orders.orders
    expect: { rows: [[1, 10.5], [3, 30]] }
  - name: ordered rows compare in order
    principal: { subject: ana, roles: [analyst], attributes: { region: north } }
    sql: SELECT id FROM shop.orders.orders ORDER BY id DESC
    expect: { rows: [[3], [1]], ordered: true }
  - name: an analyst without a region keeps no row
    principal: { subject: nobody, roles: [analyst] }
    sql: SELECT count(*) FROM shop.orders.orders
    expect: { rows: [[0]] }
  - name: the platform hides pii columns from analysts
    principal: { subject: ana, roles: [analyst], attributes: { region: north } }
    sql: SELECT email FROM shop.orders.orders
    expect: { error: invalid_argument }
  - name: an admin sees every row and the addresses
    principal: { subject: root, roles: [admin] }
    sql: SELECT id, email FROM shop.orders.orders WHERE id = 2
    expect: { rows: [[2, null]] }
  - name: a caller without a role finds no such product
    principal: { subject: zed }
    sql: SELECT count(*) FROM shop.orders.orders
    expect: { error: not_found }
"""

FAILING = """\
mesh: mesh
config: gateway.yaml
cases:
  - name: holds
    principal: { subject: root, roles: [admin] }
    sql: SELECT count(*) FROM shop.orders.orders
    expect: { rows: [[3]] }
  - name: a south analyst reading northern rows
    principal: { subject: bob, roles: [analyst], attributes: { region: south } }
    sql: SELECT id FROM shop.orders.orders
    expect: { rows: [[1], [3]] }
  - name: expects a refusal that does not come
    principal: { subject: root, roles: [admin] }
    sql: SELECT 1 FROM shop.orders.orders LIMIT 1
    expect: { error: not_found }
  - name: a misspelt table proves no denial
    principal: { subject: zed }
    sql: SELECT * FROM shop.orders.ordres
    expect: { error: not_found }
"""


@pytest.fixture(scope="module")
def domain(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("policy-cases")
    (root / "mesh" / "shop").mkdir(parents=True)
    (root / "mesh" / "shop" / "orders.yaml").write_text(DESCRIPTOR)
    (root / "mesh" / "data" / "orders").mkdir(parents=True)
    table = pa.table({
        "id": pa.array([1, 2, 3], pa.int64()),
        "region": pa.array(["north", "south", "north"]),
        "email": pa.array(["a@example.org", None, "c@example.org"]),
        "amount": pa.array([Decimal("10.50"), Decimal("20.00"), Decimal("30.00")], pa.decimal128(10, 2)),
    })
    pq.write_table(table, root / "mesh" / "data" / "orders" / "part-0.parquet")
    (root / "gateway.yaml").write_text(CONFIG)
    (root / "passing.yaml").write_text(PASSING)
    (root / "failing.yaml").write_text(FAILING)
    (root / "broken.yaml").write_text("mesh: mesh\ncases:\n  - name: no expectation\n"
                                      "    principal: { subject: a }\n    sql: SELECT 1\n    expect: {}\n")
    return root


def policy_test(meshgate_bin, cases: Path) -> subprocess.CompletedProcess:
    return subprocess.run([meshgate_bin, "policy", "test", str(cases)], capture_output=True,
                          text=True, timeout=120, env=hermetic_env())


def test_cases_that_hold_exit_zero(meshgate_bin, domain):
    run = policy_test(meshgate_bin, domain / "passing.yaml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("\nok    ") + run.stdout.startswith("ok    ") == 6, run.stdout
    assert "6 case(s): 6 passed, 0 failed" in run.stdout


def test_a_failing_case_is_named_with_what_it_got_and_exits_one(meshgate_bin, domain):
    run = policy_test(meshgate_bin, domain / "failing.yaml")
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "ok    holds"
    assert lines[1].startswith("FAIL  a south analyst reading northern rows: got rows [[2]], expected [[1], [3]]")
    assert lines[2].startswith("FAIL  expects a refusal that does not come: got 1 row(s)")
    assert lines[3] == ("FAIL  a misspelt table proves no denial: names shop.orders.ordres, "
                        "which the mesh does not hold: a refusal would prove nothing")
    assert "4 case(s): 1 passed, 3 failed" in run.stdout


def test_cases_that_cannot_run_exit_two_with_the_reason(meshgate_bin, domain, tmp_path):
    run = policy_test(meshgate_bin, domain / "broken.yaml")
    assert run.returncode == 2
    assert "case `no expectation`: expect either `rows` (optionally `ordered`) or `error`" in run.stderr
    (tmp_path / "mesh" / "shop").mkdir(parents=True)
    (tmp_path / "mesh" / "shop" / "orders.yaml").write_text(DESCRIPTOR.replace("version: 1.0.0\n", ""))
    (tmp_path / "cases.yaml").write_text(PASSING.replace("config: gateway.yaml\n", ""))
    run = policy_test(meshgate_bin, tmp_path / "cases.yaml")
    assert run.returncode == 2
    assert "the mesh does not load" in run.stderr and "version" in run.stderr, run.stderr
    (tmp_path / "empty").write_text("mesh: mesh\ncases: []\n")
    run = policy_test(meshgate_bin, tmp_path / "empty")
    assert run.returncode == 2 and "no cases" in run.stderr, run.stderr
    (tmp_path / "unknown.yaml").write_text(
        "mesh: mesh\ncases:\n  - name: typo\n    principal: { subject: zed }\n"
        "    sql: SELECT 1\n    expect: { error: not_fuond }\n"
    )
    run = policy_test(meshgate_bin, tmp_path / "unknown.yaml")
    assert run.returncode == 2 and "`not_fuond` is not a refusal class" in run.stderr, run.stderr
