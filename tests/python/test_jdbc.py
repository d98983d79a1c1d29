"""The path BI tools take: the Arrow Flight SQL JDBC driver (the real one, from Maven
Central), with a user name and the JWT as the password, a catalog property, a
prepared statement, and ResultSetMetaData filled from the column metadata."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

DRIVER = "org.apache.arrow:flight-sql-jdbc-driver:18.3.0"
PROGRAM = Path(__file__).resolve().parent.parent / "jdbc" / "MeshgateJdbc.java"


@pytest.fixture(scope="module")
def driver_jar(tmp_path_factory) -> Path:
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed for the JDBC tests (Java 17 and Maven)", pytrace=False)
    out = tmp_path_factory.mktemp("jdbc")
    done = subprocess.run(
        ["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={DRIVER}", f"-DoutputDirectory={out}"],
        capture_output=True, text=True, timeout=600, cwd=out,
    )
    jars = list(out.glob("flight-sql-jdbc-driver-*.jar"))
    if done.returncode != 0 or not jars:
        pytest.fail(f"could not fetch {DRIVER}: {done.stdout[-2000:]}{done.stderr[-2000:]}", pytrace=False)
    return jars[0]


def run_jdbc(jar: Path, server, token: str, mode: str) -> dict[str, str]:
    done = subprocess.run(
        ["java", "--add-opens=java.base/java.nio=ALL-UNNAMED", "-cp", str(jar), str(PROGRAM),
         server.address, token, mode],
        capture_output=True, text=True, timeout=300, env={**os.environ, "JAVA_TOOL_OPTIONS": ""},
    )
    lines = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return lines


def test_jdbc_user_and_token_password_query_and_metadata(server, driver_jar, admin_token, oracle):
    out = run_jdbc(driver_jar, server, admin_token, "query")
    assert out["columns"] == "2"
    assert (out["region.catalog"], out["region.schema"], out["region.table"]) == ("clinical", "encounters", "visits")
    assert out["region.type"] == "VARCHAR" and out["n.type"] == "BIGINT"
    assert int(out["total"]) == oracle.count("clinical.encounters.visits")
    assert int(out["rows"]) == oracle.scalar("SELECT count(DISTINCT region) FROM clinical.encounters.visits")
    assert int(out["prepared"]) == oracle.count("reference.regions.regions", "region = 'north'")


def test_jdbc_catalog_property_resolves_short_names(server, driver_jar, admin_token, oracle):
    out = run_jdbc(driver_jar, server, admin_token, "catalog")
    assert int(out["short"]) == oracle.count("clinical.encounters.visits")


def test_jdbc_reads_keys_and_relationships(server, driver_jar, admin_token):
    """DatabaseMetaData.getPrimaryKeys / getImportedKeys / getExportedKeys, which BI tools
    read to join tables without being told how."""
    out = run_jdbc(driver_jar, server, admin_token, "keys")
    assert out["pk.encounter_id"] == "visits_pkey/1"
    assert {k: v for k, v in out.items() if k.startswith("imported.")} == {
        "imported.patient_id": "patients.registry.patients.patient_id",
        "imported.facility_id": "reference.facilities.facilities.facility_id",
        "imported.region": "reference.regions.regions.region",
    }
    exported = {k: v for k, v in out.items() if k.startswith("exported.")}
    assert exported == {
        "exported.analytics.readmissions.stays": "stays_patient_id_fkey",
        "exported.billing.claims.claims": "claims_patient_id_fkey",
        "exported.clinical.encounters.visits": "visits_patient_id_fkey",
        "exported.clinical.labs.results": "results_patient_id_fkey",
    }


def test_jdbc_wrong_password_is_refused(server, driver_jar):
    done = subprocess.run(
        ["java", "--add-opens=java.base/java.nio=ALL-UNNAMED", "-cp", str(driver_jar), str(PROGRAM),
         server.address, "not-a-token", "query"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode != 0
    assert "UNAUTHENTICATED" in (done.stdout + done.stderr).upper()
