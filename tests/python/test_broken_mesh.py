"""`meshgate serve` and `meshgate lint` over a mesh with broken descriptors.

The broken mesh is a copy of the demo mesh plus:
  billing/broken.yaml  - a YAML syntax error;
  billing/extra.yaml   - a copy of billing/claims.yaml renamed to product
                         "extra", with one unknown top-level field.
"""

from __future__ import annotations

import shutil

import adbc_driver_manager as adm
import pytest

from conftest import (
    BROKEN_FIELD_FILE,
    BROKEN_FIELD_PRODUCT,
    BROKEN_SYNTAX_FILE,
    add_broken_descriptors,
)
from mesh_helpers import (
    DOMAINS,
    TABLES,
    adbc_connect,
    adbc_query,
    flatten_objects,
    products_by_domain,
    run_cli,
)

EXPECTED_PRODUCTS = products_by_domain()


@pytest.fixture
def broken_conn(broken_mesh, admin_token):
    if not broken_mesh.server.alive():
        pytest.fail(broken_mesh.server.describe_death(), pytrace=False)
    conn = adbc_connect(broken_mesh.server.uri, admin_token)
    try:
        yield conn
    finally:
        conn.close()
    if not broken_mesh.server.alive():
        pytest.fail("broken-mesh server died during this test: " + broken_mesh.server.describe_death(), pytrace=False)


def test_good_products_still_listed(broken_conn):
    tree = flatten_objects(broken_conn.adbc_get_objects(depth="tables").read_all())
    for domain in DOMAINS:
        assert domain in tree, f"catalog {domain} missing: {sorted(tree)}"
        assert set(tree[domain]) == EXPECTED_PRODUCTS[domain], (
            f"{domain}: schemas {sorted(tree[domain])}, expected exactly {sorted(EXPECTED_PRODUCTS[domain])}"
        )


def test_broken_products_absent(broken_conn):
    tree = flatten_objects(broken_conn.adbc_get_objects(depth="db_schemas").read_all())
    everywhere = {s for schemas in tree.values() for s in schemas}
    assert BROKEN_FIELD_PRODUCT not in everywhere, sorted(everywhere)
    assert "broken" not in everywhere, sorted(everywhere)
    with pytest.raises(adm.ProgrammingError) as err:
        adbc_query(broken_conn, f"SELECT count(*) AS n FROM billing.{BROKEN_FIELD_PRODUCT}.claims")
    assert err.value.status_code == adm.AdbcStatusCode.NOT_FOUND, err.value


@pytest.mark.parametrize("fqtn", sorted(TABLES))
def test_good_products_still_served(broken_conn, oracle, fqtn):
    got = adbc_query(broken_conn, f"SELECT count(*) AS n FROM {fqtn}")
    assert got.column("n")[0].as_py() == oracle.count(fqtn)


def test_lint_names_broken_files(broken_mesh, meshgate_bin):
    res = run_cli([meshgate_bin, "lint", broken_mesh.mesh_dir], timeout=120)
    assert res.returncode != 0, f"lint passed a mesh with broken descriptors:\n{res.stdout}"
    for rel in broken_mesh.broken_files:
        name = rel.rsplit("/", 1)[-1]
        assert name in res.stdout, f"lint output does not name {rel}:\n{res.stdout}"


def test_lint_good_demo_mesh(demo, meshgate_bin):
    res = run_cli([meshgate_bin, "lint", demo.mesh_dir], timeout=120)
    assert res.returncode == 0, f"lint failed on the generated demo mesh (exit {res.returncode}):\n{res.stdout}"


@pytest.mark.parametrize("broken", [BROKEN_SYNTAX_FILE, BROKEN_FIELD_FILE])
def test_lint_each_broken_descriptor_alone(demo, meshgate_bin, tmp_path, broken):
    mesh = tmp_path / "mesh"
    shutil.copytree(demo.mesh_dir, mesh)
    add_broken_descriptors(mesh, [broken])
    res = run_cli([meshgate_bin, "lint", mesh], timeout=120)
    assert res.returncode != 0, f"lint passed a mesh whose only problem is {broken}:\n{res.stdout}"
    assert broken.rsplit("/", 1)[-1] in res.stdout, f"lint output does not name {broken}:\n{res.stdout}"
