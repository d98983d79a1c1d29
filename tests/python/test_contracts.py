"""`meshgate contract export|import`: every demo product's contract as an ODCS v3.1
document, valid against the standard's JSON Schema of that release, imported back into a
descriptor with the same contract, and a mesh of imported descriptors that `meshgate
lint` accepts. Contracts written elsewhere (ODCS 3.0 style,
types only as ODCS families) import too; what a descriptor cannot do without is an error
naming the field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft201909Validator

from mesh_helpers import run_cli

DEMO_PRODUCTS = [
    "reference.regions", "reference.facilities", "patients.registry", "clinical.encounters",
    "clinical.labs", "billing.claims", "analytics.readmissions",
]


def _odcs_validator() -> Draft201909Validator:
    """The ODCS v3.1.0 JSON Schema (the version exports declare), from spec_schemas.py."""
    schema = json.loads((Path(os.environ["MESHGATE_SPEC_SCHEMAS"]) / "odcs-3.1.0.schema.json").read_text())
    return Draft201909Validator(schema)


def _export(meshgate_bin, mesh: Path, product: str, out: Path) -> str:
    res = run_cli([meshgate_bin, "contract", "export", mesh, product, "--out", out])
    assert res.returncode == 0, res.stdout
    return out.read_text()


_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "day": 86400, "days": 86400}


def _seconds(text: str) -> int:
    """A duration as the demo and ODCS imports write them (`24h`, `1d`, `90m`)."""
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    return int(number) * _UNITS[text[len(number):]]


def _normalized(descriptor: dict, mesh: Path) -> dict:
    """A descriptor as a contract carries it: no policy, transforms inline, defaults out."""
    descriptor = {k: v for k, v in descriptor.items() if k != "policy"}
    if descriptor.get("sla", {}).get("freshness"):
        descriptor["sla"]["freshness"] = _seconds(descriptor["sla"]["freshness"])
    for table in descriptor["tables"]:
        for reference in table.get("references", []):
            reference.setdefault("cardinality", "many-to-one")
        derived = table.get("derived")
        if derived and "transform_file" in derived:
            derived["transform"] = (mesh / descriptor["domain"] / derived.pop("transform_file")).read_text().strip()
        elif derived:
            derived["transform"] = derived["transform"].strip()

    def prune(value, key=None):
        if isinstance(value, dict):
            return {k: prune(v, k) for k, v in value.items()
                    if v is not None and v != [] and not (v is False and k != "nullable")
                    and not (k == "nullable" and v is True)}
        if isinstance(value, list):
            return [prune(v) for v in value]
        return value

    return prune(descriptor)


@pytest.mark.parametrize("product", DEMO_PRODUCTS)
def test_a_contract_exports_as_valid_odcs_and_imports_back_the_same(product, demo, meshgate_bin, tmp_path):
    exported = tmp_path / f"{product}.odcs.yaml"
    text = _export(meshgate_bin, demo.mesh_dir, product, exported)
    contract = yaml.safe_load(text)
    errors = sorted(_odcs_validator().iter_errors(contract), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    domain, name = product.split(".")
    assert contract["apiVersion"] == "v3.1.0" and contract["kind"] == "DataContract"
    assert (contract["domain"], contract["name"]) == (domain, name)
    # No policy in a contract: no role, filter or mask names leave with it.
    assert "unless_role" not in text and "any_role" not in text

    res = run_cli([meshgate_bin, "contract", "import", exported])
    assert res.returncode == 0, res.stdout
    imported = yaml.safe_load(res.stdout)
    assert "policy" not in imported and "No policy" in res.stdout
    original = yaml.safe_load((demo.mesh_dir / domain / f"{name}.yaml").read_text())
    assert _normalized(imported, demo.mesh_dir) == _normalized(original, demo.mesh_dir)


def test_a_mesh_of_imported_contracts_lints_clean(demo, meshgate_bin, tmp_path):
    mesh = tmp_path / "mesh"
    for product in DEMO_PRODUCTS:
        exported = tmp_path / f"{product}.odcs.yaml"
        _export(meshgate_bin, demo.mesh_dir, product, exported)
        res = run_cli([meshgate_bin, "contract", "import", exported, "--mesh", mesh])
        assert res.returncode == 0, res.stdout
    res = run_cli([meshgate_bin, "lint", mesh])
    assert res.returncode == 0, res.stdout
    # Importing over an existing descriptor needs --force.
    again = run_cli([meshgate_bin, "contract", "import", tmp_path / "billing.claims.odcs.yaml", "--mesh", mesh])
    assert again.returncode == 1 and "--force replaces it" in again.stdout
    forced = run_cli([meshgate_bin, "contract", "import", tmp_path / "billing.claims.odcs.yaml", "--mesh", mesh,
                      "--force"])
    assert forced.returncode == 0, forced.stdout


FOREIGN = """\
apiVersion: v3.0.2
kind: DataContract
id: sales.orders
version: 1.2.0
domain: sales
dataProduct: orders
status: active
description: { purpose: "One row per order." }
team:
  - { username: jane@example.org, role: owner }
slaProperties:
  - { property: latency, value: 4, unit: hours }
servers:
  - { server: orders, type: s3, location: "s3://sales-bucket/orders/", format: parquet }
schema:
  - name: orders
    physicalType: table
    properties:
      - name: order_id
        logicalType: integer
        physicalType: BIGINT
        required: true
        primaryKey: true
        primaryKeyPosition: 1
      - name: customer_id
        logicalType: string
        relationships:
          - { to: "crm.customers.yaml#/schema/customers/properties/customer_id" }
        quality:
          - { type: sql, query: "SELECT 1", mustBe: 1 }
      - name: status
        logicalType: string
        quality:
          - { metric: invalidValues, arguments: { validValues: [open, shipped] }, mustBe: 0 }
      - name: placed_at
        logicalType: timestamp
        required: true
    quality:
      - { metric: rowCount, mustBeGreaterOrEqualTo: 10 }
"""


def test_a_contract_written_elsewhere_imports(meshgate_bin, tmp_path):
    source = tmp_path / "orders.yaml"
    source.write_text(FOREIGN)
    res = run_cli([meshgate_bin, "contract", "import", source])
    assert res.returncode == 0, res.stdout
    descriptor = yaml.safe_load(res.stdout)
    assert (descriptor["domain"], descriptor["product"], descriptor["version"]) == ("sales", "orders", "1.2.0")
    assert descriptor["owner"] == {"team": "jane@example.org", "contact": "jane@example.org"}
    assert descriptor["sla"] == {"freshness": "4h"}
    table = descriptor["tables"][0]
    assert (table["format"], table["location"]) == ("parquet", "s3://sales-bucket/orders/")
    assert table["primary_key"] == ["order_id"]
    assert table["quality"] == {"min_rows": 10}
    columns = {c["name"]: c for c in table["columns"]}
    # BIGINT is no Arrow type: the ODCS family decides.
    assert columns["order_id"]["type"] == "Int64" and columns["order_id"]["nullable"] is False
    assert columns["placed_at"]["type"] == "Timestamp(Microsecond, None)"
    assert columns["status"]["checks"] == {"accepted_values": ["open", "shipped"]}
    assert "checks" not in columns["customer_id"]  # an SQL rule is not meshgate's to run
    assert table["references"] == [{"columns": ["customer_id"], "table": "crm.customers.customers",
                                    "cardinality": "many-to-one"}]


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("servers:\n  - { server: orders, type: s3, location: \"s3://sales-bucket/orders/\", "
                         "format: parquet }\n", ""), "servers[orders]: is missing"),
    (lambda t: t.replace("team:\n  - { username: jane@example.org, role: owner }\n", ""), "the contract has no team"),
    (lambda t: t.replace("crm.customers.yaml#/schema/customers/properties/customer_id", "customers.id.x"),
     "is not table.column"),
    (lambda t: t.replace("value: 4, unit: hours", "value: 4, unit: fortnights"), "is not a duration"),
    (lambda t: t.replace("kind: DataContract", "kind: Something"), "not DataContract"),
    (lambda t: t.replace("version: 1.2.0", "version: one"), "the imported descriptor is not valid"),
])
def test_a_contract_lacking_what_a_descriptor_needs_is_refused_by_field(meshgate_bin, tmp_path, edit, message):
    source = tmp_path / "orders.yaml"
    source.write_text(edit(FOREIGN))
    res = run_cli([meshgate_bin, "contract", "import", source])
    assert res.returncode == 1, res.stdout
    assert message in res.stdout, res.stdout


def test_exporting_an_unknown_product_says_so(demo, meshgate_bin):
    res = run_cli([meshgate_bin, "contract", "export", demo.mesh_dir, "nowhere.nothing"])
    assert res.returncode == 1 and "no descriptor nowhere.nothing" in res.stdout, res.stdout
