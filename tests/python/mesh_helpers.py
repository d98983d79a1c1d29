"""Shared helpers for the meshgate end-to-end suite.

Nothing in here is a pytest fixture; conftest.py wires these together.

* the demo-mesh contract (domains, products, tables, declared column types);
* ``ServerProcess``: runs a meshgate subprocess, waits for its ready line and
  keeps draining its output so the pipe never blocks;
* tokens: ``mint_token`` (`meshgate token`) and ``craft_jwt`` (stdlib HS256 or
  unsigned tokens, for the malformed and expired cases `meshgate token` refuses
  to make); clients send them as `authorization: Bearer <JWT>`
  (``adbc_connect(uri, token)``, ``FlightConn(uri, token)``);
* a tiny hand-written protobuf encoder for the few Flight SQL commands the
  suite sends through plain ``pyarrow.flight``;
* ``Oracle``: DuckDB reading the very same files the gateway serves, exposed
  under the same ``domain.product.table`` names so the same SQL text runs on
  both sides;
* result comparison with tolerance for floats and engine-specific numeric
  types (DuckDB's HUGEINT sums arrive as decimal128(38, 0), for example).
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import unquote, urlparse

import pyarrow as pa

READY_PREFIX = "meshgate: serving Flight SQL on grpc://"
HTTP_READY_PREFIX = "meshgate: serving HTTP on "
PG_READY_PREFIX = "meshgate: serving Postgres on "
PORTAL_READY_PREFIX = "meshgate: serving the portal on "

# --------------------------------------------------------------------------
# Demo mesh contract
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Col:
    name: str
    type: pa.DataType
    # True: the contract says nullable, so the served schema must say so too.
    # None: the contract says nothing, so nullability is not checked.
    nullable: bool | None = None


TS = pa.timestamp("us")
TS_UTC = pa.timestamp("us", tz="UTC")

TABLES: dict[str, list[Col]] = {
    "reference.facilities.facilities": [
        Col("facility_id", pa.int32()),
        Col("name", pa.string()),
        Col("region", pa.string()),
        Col("kind", pa.string()),
        Col("beds", pa.int32(), True),
    ],
    "reference.regions.regions": [
        Col("region", pa.string()),
        Col("name", pa.string()),
        Col("population", pa.int64()),
    ],
    "patients.registry.patients": [
        Col("patient_id", pa.int64()),
        Col("given_name", pa.string()),
        Col("family_name", pa.string()),
        Col("birth_date", pa.date32()),
        Col("sex", pa.string()),
        Col("postcode", pa.string()),
        Col("region", pa.string()),
        Col("registered_at", TS),
    ],
    "clinical.encounters.visits": [
        Col("encounter_id", pa.int64()),
        Col("patient_id", pa.int64()),
        Col("facility_id", pa.int32()),
        Col("region", pa.string()),
        Col("kind", pa.string()),
        Col("admitted_at", TS),
        Col("discharged_at", TS, True),
        Col("diagnosis_code", pa.string(), True),
        Col("admit_month", pa.string()),
    ],
    "clinical.labs.results": [
        Col("result_id", pa.int64()),
        Col("encounter_id", pa.int64()),
        Col("patient_id", pa.int64()),
        Col("test_code", pa.string()),
        Col("value", pa.float64()),
        Col("unit", pa.string()),
        Col("taken_at", TS_UTC),
        Col("abnormal", pa.bool_()),
    ],
    "billing.claims.claims": [
        Col("claim_id", pa.int64()),
        Col("encounter_id", pa.int64()),
        Col("patient_id", pa.int64()),
        Col("payer", pa.string()),
        Col("amount", pa.decimal128(12, 2)),
        Col("status", pa.string()),
        Col("submitted_on", pa.date32()),
    ],
    # Derived: computed from clinical encounters and the patient registry with the
    # analytics domain's rights (an analyst's), served under its own policy.
    "analytics.readmissions.stays": [
        Col("encounter_id", pa.int64()),
        Col("patient_id", pa.int64()),
        Col("region", pa.string()),
        Col("sex", pa.string()),
        Col("admitted_at", TS),
        Col("discharged_at", TS, True),
        Col("diagnosis_code", pa.string(), True),
        Col("readmitted_30d", pa.bool_()),
    ],
    "analytics.readmissions.monthly": [
        Col("region", pa.string()),
        Col("admit_month", pa.string()),
        Col("stays", pa.int64()),
        Col("readmissions", pa.int64()),
        Col("rate", pa.float64()),
    ],
}

DELTA_TABLES = {"clinical.labs.results", "analytics.readmissions.monthly"}

# Virtual derived tables: their transform, in SQL that DuckDB reads alike, over their
# inputs as the owning domain may see them (see policy_model.definer_view).
VIRTUAL_TABLES: dict[str, str] = {
    "analytics.readmissions.stays": """
        SELECT v.encounter_id, v.patient_id, v.region, p.sex, v.admitted_at, v.discharged_at,
               v.diagnosis_code,
               coalesce(v.next_admitted_at <= v.discharged_at + INTERVAL '30 days', false)
                 AS readmitted_30d
        FROM (
          SELECT encounter_id, patient_id, region, admitted_at, discharged_at, diagnosis_code,
                 lead(admitted_at) OVER (PARTITION BY patient_id ORDER BY admitted_at)
                   AS next_admitted_at
          FROM clinical.encounters.visits
          WHERE kind = 'inpatient'
        ) v
        JOIN patients.registry.patients p ON p.patient_id = v.patient_id
    """,
}
# Inputs of the virtual tables.
DERIVED_INPUTS: dict[str, list[str]] = {
    "analytics.readmissions.stays": ["clinical.encounters.visits", "patients.registry.patients"],
}
# Materialized tables: written by the demo gateway itself (mesh.meta.runs).
MATERIALIZED_TABLES = {"analytics.readmissions.monthly"}
# Parquet tables that are hive partitioned, with their partition columns.
HIVE_PARTITIONS = {"clinical.encounters.visits": ["admit_month"]}

# Seconds of work in little memory: every pair of claims, compared. Tests of deadlines and
# cancellation use it, so a fast machine cannot finish it before the deadline passes.
SLOW_QUERY = ("SELECT count(*) FROM billing.claims.claims a, billing.claims.claims b "
              "WHERE a.amount + b.amount > a.claim_id")

DOMAINS = sorted({name.split(".")[0] for name in TABLES})


def products_by_domain() -> dict[str, set[str]]:
    out: dict[str, set[str]] = collections.defaultdict(set)
    for name in TABLES:
        domain, product, _ = name.split(".")
        out[domain].add(product)
    return dict(out)


def tables_by_product() -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for name in TABLES:
        domain, product, table = name.split(".")
        out[(domain, product)].add(table)
    return dict(out)


def split_name(fqtn: str) -> tuple[str, str, str]:
    domain, product, table = fqtn.split(".")
    return domain, product, table


def data_dir(mesh_dir: Path, fqtn: str) -> Path:
    domain, product, table = split_name(fqtn)
    return Path(mesh_dir) / "data" / domain / product / table


# --------------------------------------------------------------------------
# Server subprocess
# --------------------------------------------------------------------------


class ServerStartError(RuntimeError):
    pass


class ServerProcess:
    """A meshgate process whose combined stdout/stderr is drained by a thread."""

    def __init__(self, argv: Sequence[str], *, name: str, env: dict[str, str] | None = None):
        self.argv = [str(a) for a in argv]
        self.name = name
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.address: str | None = None  # "HOST:PORT"
        self.http_url: str | None = None  # "http://HOST:PORT", when the HTTP door is on
        self.pg_address: str | None = None  # "HOST:PORT", when the Postgres door is on
        self.portal_url: str | None = None  # "http://HOST:PORT", when the portal is on
        self._lines: collections.deque[str] = collections.deque(maxlen=20000)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._eof = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = 120.0) -> "ServerProcess":
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env=self.env,
            start_new_session=True,
        )
        self._thread = threading.Thread(target=self._pump, name=f"{self.name}-stdout", daemon=True)
        self._thread.start()
        self._ready.wait(timeout)
        if self.address is None:
            if self._eof.is_set():
                try:
                    rc = self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    rc = "unknown (closed stdout but still running)"
                self.stop()
                raise ServerStartError(
                    f"{self.name}: `{' '.join(self.argv)}` exited with {rc} before printing "
                    f"{READY_PREFIX!r}...; output:\n{self.output()}"
                )
            self.stop()
            raise ServerStartError(
                f"{self.name}: no line starting with {READY_PREFIX!r} within {timeout:.0f}s "
                f"from `{' '.join(self.argv)}`; output so far:\n{self.output()}"
            )
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            for raw in self.proc.stdout:
                line = raw.rstrip("\r\n")
                with self._lock:
                    self._lines.append(line)
                if self.http_url is None and line.startswith(HTTP_READY_PREFIX):
                    self.http_url = line[len(HTTP_READY_PREFIX):].strip()
                if self.portal_url is None and line.startswith(PORTAL_READY_PREFIX):
                    self.portal_url = line[len(PORTAL_READY_PREFIX):].strip()
                if self.pg_address is None and line.startswith(PG_READY_PREFIX):
                    self.pg_address = line[len(PG_READY_PREFIX):].strip()
                if self.address is None and line.startswith(READY_PREFIX):
                    rest = line[len(READY_PREFIX):].strip()
                    self.address = rest.split()[0] if rest else ""
                    self._ready.set()
        finally:
            self._eof.set()
            self._ready.set()

    def stop(self, grace: float = 10.0) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        return proc.returncode

    # -- inspection --------------------------------------------------------

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self, tail: int = 200) -> str:
        with self._lock:
            lines = list(self._lines)
        if len(lines) > tail:
            lines = [f"... ({len(lines) - tail} earlier lines omitted)"] + lines[-tail:]
        return "\n".join(lines)

    @property
    def host(self) -> str:
        assert self.address
        return self.address.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        assert self.address
        return int(self.address.rsplit(":", 1)[1])

    @property
    def uri(self) -> str:
        return f"grpc://{self.address}"

    def describe_death(self) -> str:
        rc = self.proc.poll() if self.proc else None
        return f"{self.name} server is not running (exit code {rc}); output:\n{self.output()}"


def venv_tool(name: str) -> Path:
    """The test virtual environment's command `name` (MESHGATE_VENV), else the one on
    PATH; RuntimeError when neither exists."""
    venv = os.environ.get("MESHGATE_VENV")
    if venv and (Path(venv) / "bin" / name).is_file():
        return Path(venv) / "bin" / name
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: run the suite through tests/run.sh or tests/python/run.sh")
    return Path(found)


def hermetic_env() -> dict[str, str]:
    """The environment for meshgate processes, minus MESHGATE_* settings (its clap env fallbacks)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHGATE_")}
    env.setdefault("RUST_BACKTRACE", "1")
    return env


def run_cli(argv: Sequence[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run a short-lived meshgate command, capturing stdout+stderr together."""
    return subprocess.run(
        [str(a) for a in argv],
        env=hermetic_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )


# --------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------

DEMO_SECRET_FILE = ".meshgate-demo-secret"
DEMO_ISSUER = "meshgate-demo"
DEMO_AUDIENCE = "meshgate"


class TokenMintError(RuntimeError):
    pass


def mint_token(meshgate_bin: Path | str, *args: Any, timeout: float = 60.0) -> str:
    """`meshgate token ARGS...`: the one JWT it prints on stdout."""
    argv = [str(meshgate_bin), "token", *[str(a) for a in args]]
    res = subprocess.run(
        argv,
        env=hermetic_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )
    lines = [line.strip() for line in res.stdout.splitlines() if line.strip()]
    if res.returncode != 0 or len(lines) != 1 or lines[0].count(".") != 2:
        raise TokenMintError(
            f"`{' '.join(argv)}` exited {res.returncode}; expected one JWT on stdout.\n"
            f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}"
        )
    return lines[0]


def b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token: str) -> tuple[dict, dict]:
    """(header, claims) of a JWT, unverified."""
    head, body, _sig = token.split(".")
    return json.loads(b64url_decode(head)), json.loads(b64url_decode(body))


def craft_jwt(claims: dict, secret: bytes | None, *, alg: str = "HS256", header: dict | None = None) -> str:
    """A JWT built with the standard library: HMAC-signed with `secret`, or unsigned (alg none)."""
    import hashlib
    import hmac

    head = {"typ": "JWT", "alg": alg, **(header or {})}
    signing_input = (
        b64url(json.dumps(head, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    digests = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    if secret is None:
        signature = b""
    else:
        signature = hmac.new(secret, signing_input.encode("ascii"), digests[alg]).digest()
    return signing_input + "." + b64url(signature)


def demo_claims(sub: str | None = "pytest", roles: Sequence[str] = ("admin",), **extra: Any) -> dict:
    """Claims the demo issuer accepts (valid for 10 minutes), with overrides in `extra`."""
    import time

    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": DEMO_ISSUER,
        "aud": DEMO_AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "roles": list(roles),
    }
    if sub is not None:
        claims["sub"] = sub
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


# --------------------------------------------------------------------------
# Hand-written protobuf encoding for Flight SQL commands
# --------------------------------------------------------------------------

FLIGHT_SQL_TYPE_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative varints are not needed here")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings, bytes, messages."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def pack_any(message_name: str, message: bytes) -> bytes:
    """google.protobuf.Any { string type_url = 1; bytes value = 2; }"""
    type_url = (FLIGHT_SQL_TYPE_PREFIX + message_name).encode()
    return _len_field(1, type_url) + _len_field(2, message)


def command_statement_query(sql: str) -> bytes:
    """CommandStatementQuery { string query = 1; optional bytes transaction_id = 2; }"""
    return pack_any("CommandStatementQuery", _len_field(1, sql.encode("utf-8")))


def command_statement_update(sql: str) -> bytes:
    """CommandStatementUpdate { string query = 1; optional bytes transaction_id = 2; }"""
    return pack_any("CommandStatementUpdate", _len_field(1, sql.encode("utf-8")))


def command_prepared_statement_query(handle: bytes) -> bytes:
    """CommandPreparedStatementQuery { bytes prepared_statement_handle = 1; }"""
    return pack_any("CommandPreparedStatementQuery", _len_field(1, handle))


def command_get_catalogs() -> bytes:
    return pack_any("CommandGetCatalogs", b"")


# --------------------------------------------------------------------------
# Delta log reading (no deltalake dependency)
# --------------------------------------------------------------------------


@dataclass
class DeltaSnapshot:
    files: list[Path]
    partition_columns: list[str]
    version: int
    schema_string: str | None = None
    partition_values: dict[Path, dict[str, Any]] = field(default_factory=dict)


def _resolve_delta_path(table_dir: Path, path: str) -> Path:
    if "://" in path:
        return Path(unquote(urlparse(path).path))
    return table_dir / unquote(path)


def delta_snapshot(table_dir: Path) -> DeltaSnapshot:
    """Active data files of a Delta table, replaying checkpoint + JSON commits."""
    table_dir = Path(table_dir)
    log_dir = table_dir / "_delta_log"
    if not log_dir.is_dir():
        raise FileNotFoundError(f"{table_dir} has no _delta_log directory")

    active: dict[str, dict[str, Any]] = {}
    partition_columns: list[str] = []
    schema_string: str | None = None
    start_after = -1

    last_cp = log_dir / "_last_checkpoint"
    if last_cp.exists():
        import pyarrow.parquet as pq

        cp_version = int(json.loads(last_cp.read_text())["version"])
        for cp in sorted(log_dir.glob(f"{cp_version:020d}.checkpoint*.parquet")):
            for row in pq.read_table(cp).to_pylist():
                if row.get("add"):
                    active[row["add"]["path"]] = row["add"].get("partitionValues") or {}
                if row.get("metaData"):
                    partition_columns = list(row["metaData"].get("partitionColumns") or [])
                    schema_string = row["metaData"].get("schemaString")
        start_after = cp_version

    commits = sorted(
        (int(p.name.split(".")[0]), p)
        for p in log_dir.glob("*.json")
        if p.name.split(".")[0].isdigit()
    )
    version = start_after
    for v, path in commits:
        if v <= start_after:
            continue
        version = v
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            action = json.loads(line)
            if "add" in action:
                pv = action["add"].get("partitionValues") or {}
                if isinstance(pv, list):  # checkpoint-ish map encoding
                    pv = {k: val for k, val in pv}
                active[action["add"]["path"]] = pv
            elif "remove" in action:
                active.pop(action["remove"]["path"], None)
            elif "metaData" in action:
                partition_columns = list(action["metaData"].get("partitionColumns") or [])
                schema_string = action["metaData"].get("schemaString")

    files = [_resolve_delta_path(table_dir, p) for p in sorted(active)]
    return DeltaSnapshot(
        files=files,
        partition_columns=partition_columns,
        version=version,
        schema_string=schema_string,
        partition_values={_resolve_delta_path(table_dir, p): v for p, v in active.items()},
    )


# --------------------------------------------------------------------------
# DuckDB oracle
# --------------------------------------------------------------------------


def _definer_name(fqtn: str) -> str:
    return fqtn.replace(".", "__")


def _sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


class Oracle:
    """DuckDB over the mesh's files, with the gateway's three-part names.

    ``view`` (optional) turns the oracle into one principal's view of the mesh:
    ``view(fqtn, source)`` returns the SELECT defining that table for the
    principal over ``source`` (a DuckDB table expression of the stored rows), or
    None when the principal may not read the table, which is then absent.
    """

    def __init__(self, mesh_dir: Path, view: Callable[[str, str], str | None] | None = None):
        import duckdb
        from policy_model import definer_view

        self.mesh_dir = Path(mesh_dir)
        self.con = duckdb.connect(":memory:")
        self.has_utc = True
        try:
            self.con.execute("SET TimeZone = 'UTC'")
        except Exception:  # ICU not available: tz-aware results still compare as instants
            self.has_utc = False
        self.delta: dict[str, DeltaSnapshot] = {}
        attached: set[str] = set()
        schemas: set[tuple[str, str]] = set()
        self.tables: list[str] = []
        # The inputs of virtual tables as their owning domain sees them.
        self.con.execute("ATTACH ':memory:' AS definer")
        for derived, inputs in DERIVED_INPUTS.items():
            for fqtn in inputs:
                select = definer_view(derived, fqtn, self._source(fqtn))
                self.con.execute(f"CREATE OR REPLACE VIEW definer.main.{_definer_name(fqtn)} AS {select}")
        for fqtn in TABLES:
            domain, product, table = split_name(fqtn)
            source = self._source(fqtn)
            select = f"SELECT * FROM {source}" if view is None else view(fqtn, source)
            if select is None:
                continue
            self.tables.append(fqtn)
            if domain not in attached:
                self.con.execute(f"ATTACH ':memory:' AS \"{domain}\"")
                attached.add(domain)
            if (domain, product) not in schemas:
                self.con.execute(f'CREATE SCHEMA "{domain}"."{product}"')
                schemas.add((domain, product))
            self.con.execute(f'CREATE VIEW "{domain}"."{product}"."{table}" AS {select}')

    def _source(self, fqtn: str) -> str:
        if fqtn in VIRTUAL_TABLES:
            transform = VIRTUAL_TABLES[fqtn]
            for name in DERIVED_INPUTS[fqtn]:
                transform = transform.replace(name, f"definer.main.{_definer_name(name)}")
            return f"({transform})"
        folder = data_dir(self.mesh_dir, fqtn)
        if not folder.is_dir():
            raise FileNotFoundError(f"oracle: data folder for {fqtn} not found at {folder}")
        if fqtn in DELTA_TABLES:
            snap = delta_snapshot(folder)
            if not snap.files:
                raise AssertionError(f"oracle: Delta log of {fqtn} lists no active files")
            missing = [str(p) for p in snap.files if not p.exists()]
            if missing:
                raise AssertionError(f"oracle: Delta log of {fqtn} lists missing files: {missing[:5]}")
            self.delta[fqtn] = snap
            files = "[" + ", ".join(_sql_str(str(p)) for p in snap.files) + "]"
            hive = "true" if snap.partition_columns else "false"
            return f"read_parquet({files}, hive_partitioning = {hive})"
        pattern = _sql_str(str(folder / "**" / "*.parquet"))
        parts = HIVE_PARTITIONS.get(fqtn)
        if parts:
            types = "{" + ", ".join(f"{_sql_str(c)}: 'VARCHAR'" for c in parts) + "}"
            return f"read_parquet({pattern}, hive_partitioning = true, hive_types = {types})"
        return f"read_parquet({pattern}, hive_partitioning = false)"

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        rel = self.con.sql(sql, params=list(params)) if params else self.con.sql(sql)
        return rel.to_arrow_table()

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        table = self.query(sql, params)
        assert table.num_rows == 1 and table.num_columns == 1, table
        return table.column(0)[0].as_py()

    def count(self, fqtn: str, where: str = "") -> int:
        sql = f"SELECT count(*) FROM {fqtn}" + (f" WHERE {where}" if where else "")
        return int(self.scalar(sql))


# --------------------------------------------------------------------------
# Result comparison
# --------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Turn numpy scalars / pandas timestamps into plain Python values."""
    if value is None:
        return None
    mod = type(value).__module__
    if mod.startswith("numpy"):
        try:
            return value.item()
        except Exception:
            return value
    if mod.startswith("pandas"):
        if hasattr(value, "to_pydatetime"):
            return value.to_pydatetime()
        try:
            import pandas as pd

            if value is pd.NaT or pd.isna(value):
                return None
        except Exception:
            pass
    return value


def values_equal(a: Any, b: Any, rel: float = 1e-9, abs_tol: float = 1e-9) -> bool:
    a, b = _plain(a), _plain(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    numeric = (int, float, decimal.Decimal)
    if isinstance(a, numeric) and isinstance(b, numeric):
        if isinstance(a, float) or isinstance(b, float):
            return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_tol)
        return decimal.Decimal(a) == decimal.Decimal(b)
    if isinstance(a, dt.datetime) and isinstance(b, dt.datetime):
        if (a.tzinfo is None) != (b.tzinfo is None):
            return False  # a naive/aware mismatch is a type bug, not a rounding issue
        return a == b
    return a == b


def _sort_token(value: Any) -> tuple:
    value = _plain(value)
    if value is None:
        return (0, "")
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, decimal.Decimal)):
        return (2, float(value))
    if isinstance(value, float):
        return (2, float(f"{value:.6g}"))
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return (3, value.isoformat())
    if isinstance(value, dt.date):
        return (3, value.isoformat())
    return (4, str(value))


def table_rows(table: pa.Table) -> list[tuple]:
    columns = [col.to_pylist() for col in table.columns]
    return list(zip(*columns)) if columns else []


def assert_rows_equal(
    actual: pa.Table | Sequence[Sequence[Any]],
    expected: pa.Table | Sequence[Sequence[Any]],
    *,
    ordered: bool = False,
    check_names: bool = True,
    rel: float = 1e-7,
    context: str = "",
) -> None:
    """Compare a gateway result with the oracle's, as (optionally sorted) row lists."""
    if isinstance(actual, pa.Table) and isinstance(expected, pa.Table) and check_names:
        assert actual.column_names == expected.column_names, (
            f"{context}column names differ: gateway {actual.column_names} vs oracle {expected.column_names}"
        )
    a_rows = table_rows(actual) if isinstance(actual, pa.Table) else [tuple(r) for r in actual]
    e_rows = table_rows(expected) if isinstance(expected, pa.Table) else [tuple(r) for r in expected]
    assert len(a_rows) == len(e_rows), (
        f"{context}row count differs: gateway {len(a_rows)} vs oracle {len(e_rows)}; "
        f"first gateway rows {a_rows[:3]}, first oracle rows {e_rows[:3]}"
    )
    if not ordered:
        a_rows = sorted(a_rows, key=lambda r: tuple(_sort_token(v) for v in r))
        e_rows = sorted(e_rows, key=lambda r: tuple(_sort_token(v) for v in r))
    mismatches = []
    for i, (ar, er) in enumerate(zip(a_rows, e_rows)):
        if len(ar) != len(er) or not all(values_equal(x, y, rel=rel) for x, y in zip(ar, er)):
            mismatches.append((i, ar, er))
            if len(mismatches) >= 5:
                break
    assert not mismatches, f"{context}rows differ from the oracle (index, gateway, oracle): " + "; ".join(
        f"#{i}: {ar!r} != {er!r}" for i, ar, er in mismatches
    )


# --------------------------------------------------------------------------
# Client helpers
# --------------------------------------------------------------------------

CLIENT_TIMEOUT_S = 120

# "Use the connection's own authorization" (as opposed to None: send no header).
DEFAULT_AUTH: Any = object()


def bearer(token: str | None) -> str | None:
    """The authorization header value for a token (None: no header)."""
    return None if token is None else f"Bearer {token}"


def adbc_connect(
    uri: str,
    token: str | None = None,
    *,
    authorization: str | None = None,
    headers: dict[str, str] | None = None,
):
    """An ADBC Flight SQL connection sending `authorization` (default: Bearer token) and
    any extra `headers` on every call."""
    import adbc_driver_flightsql
    import adbc_driver_flightsql.dbapi

    opts = adbc_driver_flightsql.DatabaseOptions
    db_kwargs = {
        opts.TIMEOUT_QUERY.value: str(CLIENT_TIMEOUT_S),
        opts.TIMEOUT_FETCH.value: str(CLIENT_TIMEOUT_S),
        opts.TIMEOUT_UPDATE.value: str(CLIENT_TIMEOUT_S),
    }
    header = authorization if authorization is not None else bearer(token)
    if header is not None:
        db_kwargs[opts.AUTHORIZATION_HEADER.value] = header
    for name, value in (headers or {}).items():
        db_kwargs[f"{opts.RPC_CALL_HEADER_PREFIX.value}{name}"] = value
    return adbc_driver_flightsql.dbapi.connect(
        uri,
        db_kwargs=db_kwargs,
        # The gateway is read-only and has no transactions; autocommit=False
        # would only produce a "cannot disable autocommit" warning.
        autocommit=True,
    )


def adbc_query(conn, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
    with conn.cursor() as cur:
        if params is None:
            cur.execute(sql)
        else:
            cur.execute(sql, parameters=tuple(params))
        return cur.fetch_arrow_table()


def query_once(uri: str, token: str, sql: str) -> pa.Table:
    """`sql` on a connection of its own to `uri` as `token`'s principal (closed after)."""
    conn = adbc_connect(uri, token)
    try:
        return adbc_query(conn, sql)
    finally:
        conn.close()


def outcome(server, token: str, sql: str):
    """`("rows", table)` for `sql` through `server` as `token`'s principal, or `("error",
    first line of the message)`: what a client sees, to compare two servers."""
    try:
        return ("rows", query_once(server.uri, token, sql))
    except Exception as exc:  # the message a client sees
        return ("error", str(exc).split("\n")[0])


def flight_call_options(authorization: str | None = None):
    """Call options with the timeout and, unless None, an `authorization` header."""
    import pyarrow.flight as flight

    headers = [] if authorization is None else [(b"authorization", authorization.encode("utf-8"))]
    return flight.FlightCallOptions(timeout=CLIENT_TIMEOUT_S, headers=headers)


class FlightConn:
    """A plain pyarrow Flight client that sends an authorization header with every call.

    Every call takes ``auth=``: the header value for that one call (None for no
    header); by default the connection's own (normally ``Bearer <token>``).
    """

    def __init__(self, uri: str, token: str | None = None, *, authorization: str | None = None):
        import pyarrow.flight as flight

        self.raw = flight.connect(uri)
        self.authorization = authorization if authorization is not None else bearer(token)

    def options(self, auth: Any = DEFAULT_AUTH):
        return flight_call_options(self.authorization if auth is DEFAULT_AUTH else auth)

    def get_flight_info(self, descriptor, *, auth: Any = DEFAULT_AUTH):
        return self.raw.get_flight_info(descriptor, self.options(auth))

    def get_schema(self, descriptor, *, auth: Any = DEFAULT_AUTH):
        return self.raw.get_schema(descriptor, self.options(auth))

    def do_get(self, ticket, *, auth: Any = DEFAULT_AUTH):
        return self.raw.do_get(ticket, self.options(auth))

    def do_put(self, descriptor, schema, *, auth: Any = DEFAULT_AUTH):
        return self.raw.do_put(descriptor, schema, self.options(auth))

    def do_action(self, action, *, auth: Any = DEFAULT_AUTH) -> list:
        return list(self.raw.do_action(action, self.options(auth)))

    def list_actions(self, *, auth: Any = DEFAULT_AUTH) -> list:
        return list(self.raw.list_actions(self.options(auth)))

    def list_flights(self, *, auth: Any = DEFAULT_AUTH) -> list:
        return list(self.raw.list_flights(b"", self.options(auth)))

    def close(self) -> None:
        self.raw.close()


def flight_command_info(client: FlightConn, command: bytes, *, auth: Any = DEFAULT_AUTH):
    import pyarrow.flight as flight

    return client.get_flight_info(flight.FlightDescriptor.for_command(command), auth=auth)


def flight_read_all(client: FlightConn, info, *, auth: Any = DEFAULT_AUTH) -> tuple[pa.Table, int]:
    """Read every endpoint of a FlightInfo; returns (table, number of record batches)."""
    batches: list[pa.RecordBatch] = []
    schema = None
    for endpoint in info.endpoints:
        reader = client.do_get(endpoint.ticket, auth=auth)
        schema = reader.schema
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            if chunk.data is not None:
                batches.append(chunk.data)
    if schema is None:
        schema = info.schema
    return pa.Table.from_batches(batches, schema=schema), len(batches)


def flight_sql(client: FlightConn, sql: str, *, auth: Any = DEFAULT_AUTH) -> pa.Table:
    info = flight_command_info(client, command_statement_query(sql), auth=auth)
    table, _ = flight_read_all(client, info, auth=auth)
    return table


def snapshot_tree(root: Path, exclude: Iterable[str] = ()) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under root, keyed by relative path, minus `exclude`."""
    out: dict[str, tuple[int, int]] = {}
    root = Path(root)
    skip = set(exclude)
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if rel in skip:
                continue
            st = p.stat()
            out[rel] = (st.st_size, st.st_mtime_ns)
    return out


def flatten_objects(objects: pa.Table | Iterable[dict]) -> dict:
    """ADBC GetObjects result -> {catalog: {schema: {table: {"type", "columns"}}}}."""
    rows = objects.to_pylist() if isinstance(objects, pa.Table) else list(objects)
    tree: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for cat in rows:
        schemas = tree.setdefault(cat["catalog_name"], {})
        for sch in cat.get("catalog_db_schemas") or []:
            tables = schemas.setdefault(sch["db_schema_name"], {})
            for tbl in sch.get("db_schema_tables") or []:
                cols = sorted(tbl.get("table_columns") or [], key=lambda c: c.get("ordinal_position") or 0)
                tables[tbl["table_name"]] = {
                    "type": tbl.get("table_type"),
                    "columns": [c["column_name"] for c in cols],
                    "raw_columns": cols,
                }
    return tree


# --------------------------------------------------------------------------
# A real load balancer: HAProxy in TCP mode, round robin
# --------------------------------------------------------------------------

HAPROXY_CONFIG = """\
global
    maxconn 512
defaults
    mode tcp
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 3
    option redispatch
frontend flight
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
{servers}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HAProxyError(RuntimeError):
    pass


def start_haproxy(backends: dict[str, int], workdir: Path) -> tuple[subprocess.Popen, int]:
    """HAProxy balancing TCP connections round robin over `backends` (name -> port on
    loopback), health-checked every 300 ms; returns the process and its port."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        raise HAProxyError("haproxy is not installed (tests/run.sh installs Debian's haproxy)")
    port = free_port()
    servers = "\n".join(
        f"    server {name} 127.0.0.1:{p} check inter 300ms fall 1 rise 2" for name, p in backends.items()
    )
    config = workdir / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers))
    proc = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise HAProxyError(f"haproxy did not start: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.1)
