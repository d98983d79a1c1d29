"""Fixtures for the meshgate end-to-end suite.

The gateway runs as a real subprocess (``meshgate demo`` for most tests,
``meshgate serve`` over a copy of the demo mesh with broken descriptors for
test_broken_mesh.py) and is exercised through real clients: ADBC Flight SQL,
plain pyarrow.flight and flightsql-dbapi/SQLAlchemy.  Expected answers come
from DuckDB reading the same files (see mesh_helpers.Oracle).

Every RPC needs `authorization: Bearer <JWT>`.  The client fixtures send a
token minted with `meshgate token --demo-dir` for a principal with roles admin
and pii_reader, who sees every product unfiltered and unmasked, so results
compare equal to the unrestricted oracle.  test_zero_trust.py uses the
personas (policy_model.PERSONAS) instead.

With MESHGATE_TEST_BALANCED=1 the `server` fixture is the demo and two replicas of it
behind HAProxy (TCP, round robin): every Flight client of the tests connects through
the balancer, so consecutive connections of one test land on different replicas.

With MESHGATE_TEST_DOMAIN_NODE=<domain> the demo serves that domain through a domain
node (`meshgate demo --domain-node <domain>`): a second meshgate process serves the
domain's files and the demo gateway federates to it, acting as each caller.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from mesh_helpers import (
    DEMO_SECRET_FILE,
    FlightConn,
    HAProxyError,
    Oracle,
    ServerProcess,
    ServerStartError,
    TokenMintError,
    adbc_connect,
    adbc_query,
    free_port,
    hermetic_env,
    mint_token,
    start_haproxy,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_SCALE = os.environ.get("MESHGATE_TEST_SCALE", "0.02")
START_TIMEOUT_S = float(os.environ.get("MESHGATE_START_TIMEOUT", "120"))
BALANCED = os.environ.get("MESHGATE_TEST_BALANCED") == "1"
DOMAIN_NODE = os.environ.get("MESHGATE_TEST_DOMAIN_NODE")

_started: list[ServerProcess] = []


@atexit.register
def _stop_leftover_servers() -> None:  # safety net if pytest dies mid-session
    for srv in _started:
        srv.stop(grace=5)


def start_server(argv, name: str, env: dict[str, str] | None = None) -> ServerProcess:
    # The binary falls back to MESHGATE_MESH/LISTEN/CONFIG/DEMO_* environment
    # variables; keep runs hermetic by passing everything on the command line (and
    # only the variables `env` adds).
    srv = ServerProcess(argv, name=name, env={**hermetic_env(), **(env or {})})
    _started.append(srv)
    srv.start(timeout=START_TIMEOUT_S)
    return srv


def _start_or_fail(argv, name: str) -> ServerProcess:
    try:
        return start_server(argv, name)
    except ServerStartError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


# --------------------------------------------------------------------------
# Binary and demo server
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def meshgate_bin() -> Path:
    path = Path(os.environ.get("MESHGATE_BIN") or REPO_ROOT / "target" / "debug" / "meshgate")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"meshgate binary not found or not executable at {path} (set MESHGATE_BIN)", pytrace=False)
    return path


@dataclass
class Demo:
    mesh_dir: Path
    server: ServerProcess


@pytest.fixture(scope="session")
def demo(tmp_path_factory, meshgate_bin) -> Demo:
    root = tmp_path_factory.mktemp("demo")
    mesh_dir = root / "mesh"
    argv = [
        meshgate_bin, "demo", "--dir", mesh_dir, "--scale", DEMO_SCALE,
        "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        "--pg-listen", "127.0.0.1:0", "--portal-listen", "127.0.0.1:0",
    ]
    if DOMAIN_NODE:
        argv += ["--domain-node", DOMAIN_NODE]
    srv = _start_or_fail(argv, "demo")
    try:
        wait_for_materialized(meshgate_bin, mesh_dir, srv)
        yield Demo(mesh_dir=mesh_dir, server=srv)
    finally:
        srv.stop()


def wait_for_materialized(meshgate_bin, mesh_dir: Path, srv: ServerProcess, timeout: float = 60.0):
    """Waits until the demo's materialized tables are written and serve (their first run
    starts with the gateway), so that the oracle and the tests find them."""
    import time

    token = mint_token(meshgate_bin, "--demo-dir", mesh_dir, "--sub", "pytest", "--role", "admin")
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            conn = adbc_connect(srv.uri, token)
            try:
                rows = adbc_query(
                    conn,
                    "SELECT status, status_reason FROM mesh.meta.products WHERE domain = 'analytics'",
                ).to_pylist()
            finally:
                conn.close()
            last = rows
            if rows and all(r["status"] == "ok" for r in rows):
                return
        except Exception as exc:  # the gateway may still be starting its run
            last = exc
        time.sleep(0.2)
    pytest.fail(f"the demo's derived product does not serve within {timeout}s: {last}", pytrace=False)


@pytest.fixture(scope="session")
def mesh_dir(demo) -> Path:
    return demo.mesh_dir


class BalancedDemo:
    """The demo and its replicas behind HAProxy, as the tests' clients see a server: its
    Flight address is the balancer's; everything else (the HTTP and Postgres doors, the
    output) is the demo process's."""

    def __init__(self, demo: ServerProcess, replicas: list[ServerProcess], port: int):
        self.demo, self.replicas, self.port = demo, replicas, port

    host = "127.0.0.1"

    @property
    def uri(self) -> str:
        return f"grpc://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.demo.alive() and all(r.alive() for r in self.replicas)

    def describe_death(self) -> str:
        dead = [s for s in [self.demo, *self.replicas] if not s.alive()]
        return "; ".join(s.describe_death() for s in dead)

    def __getattr__(self, name):
        return getattr(self.demo, name)


@pytest.fixture(scope="session")
def balanced_demo(demo, meshgate_bin, tmp_path_factory):
    """Two replicas of the demo (on its directory: shared keys) and HAProxy over the
    three."""
    ports = {"r2": free_port(), "r3": free_port()}
    replicas = [
        _start_or_fail(
            [
                meshgate_bin, "demo", "--dir", demo.mesh_dir, "--scale", DEMO_SCALE,
                "--listen", f"127.0.0.1:{port}", "--http-listen", "127.0.0.1:0",
                "--pg-listen", "127.0.0.1:0", "--portal-listen", "127.0.0.1:0",
            ],
            name,
        )
        for name, port in ports.items()
    ]
    try:
        try:
            proc, port = start_haproxy({"r1": demo.server.port, **ports}, tmp_path_factory.mktemp("lb"))
        except HAProxyError as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            yield BalancedDemo(demo.server, replicas, port)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        for srv in replicas:
            srv.stop()


@pytest.fixture(scope="session")
def front(request, demo):
    """Where the tests' Flight clients connect: the demo server, or with
    MESHGATE_TEST_BALANCED=1 the demo and its replicas behind HAProxy."""
    return request.getfixturevalue("balanced_demo") if BALANCED else demo.server


@pytest.fixture
def server(front) -> ServerProcess:
    """The [`front`] server, checked to be alive before and after the test."""
    srv = front
    if not srv.alive():
        pytest.fail(srv.describe_death(), pytrace=False)
    yield srv
    if not srv.alive():
        pytest.fail("server died during this test: " + srv.describe_death(), pytrace=False)


@pytest.fixture(scope="session")
def oracle(demo) -> Oracle:
    return Oracle(demo.mesh_dir)


@dataclass
class S3DemoServer:
    mesh_dir: Path
    server: ServerProcess
    s3: "S3Server"


@pytest.fixture(scope="session")
def s3_demo(demo, tmp_path_factory, meshgate_bin) -> S3DemoServer:
    """The demo mesh served from S3: its data uploaded to a moto server, each domain
    reading its own root of one bucket with its own keys (see s3_mesh.py)."""
    from s3_mesh import S3Server, demo_on_s3

    secret = demo.mesh_dir / DEMO_SECRET_FILE
    try:
        s3 = S3Server()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        layout = demo_on_s3(s3, demo.mesh_dir, tmp_path_factory.mktemp("s3"), serve_config(secret))
        argv = [
            meshgate_bin, "serve", "--mesh", layout.mesh_dir, "--listen", "127.0.0.1:0",
            "--plaintext", "--config", layout.config,
        ]
        srv = ServerProcess(argv, name="s3-demo", env={**hermetic_env(), **layout.env})
        _started.append(srv)
        try:
            srv.start(timeout=START_TIMEOUT_S)
        except ServerStartError as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            yield S3DemoServer(mesh_dir=layout.mesh_dir, server=srv, s3=s3)
        finally:
            srv.stop()
    finally:
        s3.stop()


# --------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------

ADMIN_ROLES = ["admin", "pii_reader"]


@pytest.fixture(scope="session")
def demo_secret_file(demo) -> Path:
    path = demo.mesh_dir / DEMO_SECRET_FILE
    if not path.is_file():
        pytest.fail(f"the demo did not create its HS256 secret at {path}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def mint(meshgate_bin, demo):
    """mint(*args): `meshgate token --demo-dir <demo mesh> ARGS...` (the demo server is running)."""

    def _mint(*args) -> str:
        try:
            return mint_token(meshgate_bin, "--demo-dir", demo.mesh_dir, *args)
        except TokenMintError as exc:
            message = str(exc)
        pytest.fail(message, pytrace=False)

    return _mint


@pytest.fixture(scope="session")
def admin_token(mint) -> str:
    """The suite's own principal: sees everything, unmasked."""
    args = ["--sub", "pytest"]
    for role in ADMIN_ROLES:
        args += ["--role", role]
    return mint(*args)


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------


@pytest.fixture
def adbc_conn(server, admin_token):
    conn = adbc_connect(server.uri, admin_token)
    try:
        yield conn
    finally:
        try:
            conn.close()
        except Exception:
            pass


@pytest.fixture
def flight_client(server, admin_token) -> FlightConn:
    """pyarrow.flight, sending `authorization: Bearer <admin token>` in every call's options."""
    client = FlightConn(server.uri, admin_token)
    try:
        yield client
    finally:
        client.close()


def sqlalchemy_url(host: str, port: int, token: str | None):
    from sqlalchemy.engine import URL

    # flightsql-dbapi reads `token` from the query (sent as `authorization: Bearer <token>`);
    # without insecure=true the dialect would connect with TLS.
    query = {"insecure": "true"}
    if token is not None:
        query["token"] = token
    return URL.create("datafusion+flightsql", host=host, port=port, query=query)


@pytest.fixture
def sa_engine(server, admin_token):
    import flightsql.sqlalchemy  # noqa: F401  registers the "datafusion+flightsql" dialect
    from sqlalchemy import create_engine

    engine = create_engine(sqlalchemy_url(server.host, server.port, admin_token))
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def flightsql_dbapi_client(server, admin_token):
    from flightsql import FlightSQLClient

    client = FlightSQLClient(host=server.host, port=server.port, insecure=True, token=admin_token)
    try:
        yield client
    finally:
        client.close()


def assert_healthy(conn, oracle) -> None:
    """A simple good query still answers correctly on this connection."""
    got = adbc_query(conn, "SELECT count(*) AS n FROM reference.regions.regions")
    assert got.column("n")[0].as_py() == oracle.count("reference.regions.regions")


@pytest.fixture
def healthy(oracle):
    return lambda conn: assert_healthy(conn, oracle)


# --------------------------------------------------------------------------
# Broken-descriptor mesh
# --------------------------------------------------------------------------

BROKEN_SYNTAX_FILE = "billing/broken.yaml"
BROKEN_FIELD_FILE = "billing/extra.yaml"
BROKEN_FIELD_PRODUCT = "extra"

BROKEN_YAML = """\
# Deliberately malformed: the flow mapping below is never closed.
name: broken
domain: billing
tables: [ { name: claims, format: parquet, location: "file:///nowhere"
owner: nobody
"""


def make_unknown_field_descriptor(good_text: str, old_product: str, new_product: str) -> str:
    """A copy of a valid descriptor renamed to new_product, plus an unknown top-level field.

    The product is renamed (the first `name:`/`product:` line carrying the old
    product name) so that the only thing wrong with it is the unknown field.
    """
    import re

    pattern = re.compile(
        rf"^(?P<lead>\s*-?\s*(?:name|product|id)\s*:\s*)(?P<q>[\"']?){re.escape(old_product)}(?P=q)\s*$",
        re.MULTILINE,
    )
    text, _ = pattern.subn(lambda m: f"{m.group('lead')}{new_product}", good_text, count=1)
    if not text.endswith("\n"):
        text += "\n"
    return text + "definitely_not_a_descriptor_field: true\n"


def add_broken_descriptors(mesh: Path, which: list[str]) -> None:
    """Write the requested broken descriptors (BROKEN_SYNTAX_FILE / BROKEN_FIELD_FILE) into mesh."""
    good = mesh / "billing" / "claims.yaml"
    if not good.is_file():
        pytest.fail(f"demo mesh has no descriptor at {good}; found {sorted(map(str, mesh.rglob('*.yaml')))}")
    if BROKEN_SYNTAX_FILE in which:
        (mesh / BROKEN_SYNTAX_FILE).write_text(BROKEN_YAML)
    if BROKEN_FIELD_FILE in which:
        (mesh / BROKEN_FIELD_FILE).write_text(
            make_unknown_field_descriptor(good.read_text(), "claims", BROKEN_FIELD_PRODUCT)
        )


@dataclass
class BrokenMesh:
    mesh_dir: Path
    server: ServerProcess
    broken_files: list[str]


def serve_config(secret_file: Path) -> str:
    """A `meshgate serve` config trusting the demo issuer, plus the demo's platform rule,
    with the issuer key written as documented: `key: { secret_file: PATH }`."""
    path = json.dumps(str(secret_file))
    key = f"{{ secret_file: {path} }}"
    return f"""\
plaintext: true
auth:
  issuers:
    - issuer: meshgate-demo
      audience: [meshgate]
      algorithms: [HS256]
      key: {key}
      roles_claim: roles
      attribute_claims: {{ region: region }}
platform_policies:
  - {{ name: pii-redaction, tag: pii, column: {{ mask: redact, unless_role: [pii_reader] }} }}
engine:
  derived:
    # As the demo grants it; copies of the demo mesh point at the demo's own data, which
    # the demo materializes: they do not.
    principals: {{ analytics: {{ subject: "domain:analytics", roles: [analyst] }} }}
    materialize: false
"""


@pytest.fixture(scope="module")
def broken_mesh(demo, tmp_path_factory, meshgate_bin) -> BrokenMesh:
    root = tmp_path_factory.mktemp("broken")
    dst = root / "mesh"
    shutil.copytree(demo.mesh_dir, dst)
    add_broken_descriptors(dst, [BROKEN_SYNTAX_FILE, BROKEN_FIELD_FILE])
    secret = dst / DEMO_SECRET_FILE
    if not secret.is_file():
        pytest.fail(f"the copied demo mesh has no {DEMO_SECRET_FILE}", pytrace=False)
    config = root / "meshgate.yaml"
    config.write_text(serve_config(secret))
    argv = [meshgate_bin, "serve", "--mesh", dst, "--listen", "127.0.0.1:0", "--plaintext", "--config", config]
    srv = _start_or_fail(argv, "broken-mesh")
    try:
        yield BrokenMesh(mesh_dir=dst, server=srv, broken_files=[BROKEN_SYNTAX_FILE, BROKEN_FIELD_FILE])
    finally:
        srv.stop()
