"""Tokens toward a domain node from the identity provider: an OAuth 2.0 Token Exchange
(RFC 8693) of each caller's own token, instead of tokens the gateway signs.

Three processes besides the demo that writes the files: a real OAuth server (NAV's
mock-oauth2-server, which copies the subject token's claims into the token it issues for
the requested audience), a meshgate node serving the clinical domain that trusts that
server for callers (and the gateway's key only for the gateway's own identities), and a
gateway configured with `nodes.exchange`. Every persona sees through it what the demo's own gateway
shows; the node's audit names the real caller under the provider's issuer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import start_server
from mesh_helpers import DEMO_SECRET_FILE, assert_rows_equal, mint_token, outcome, query_once
from oauth_server import mock_oauth2_server
from policy_model import PERSONAS

QUERIES = [
    "SELECT region, kind, count(*) AS n FROM clinical.encounters.visits GROUP BY region, kind",
    "SELECT encounter_id, region FROM clinical.encounters.visits WHERE encounter_id < 200",
    "SELECT test_code, count(*) AS n FROM clinical.labs.results GROUP BY test_code",
]
DEMO_NODE_ISSUER = "meshgate-demo-gateway"
CLIENT_ID = "meshgate-gateway"
# The test server reads client assertions with Nimbus, which takes no EdDSA without an
# extra library: the gateway authenticates with a client secret here (the assertion
# itself is checked by the gateway's unit tests).
SECRET_VARIABLE = "MESHGATE_TEST_IDP_SECRET"
GATEWAY_ENV = {"MESHGATE_LOG": "warn,meshgate_nodes=debug", SECRET_VARIABLE: "not-a-real-secret"}


def node_config(root: Path, idp: str, demo_dir: Path) -> str:
    jwks = json.dumps(str(demo_dir / "nodes" / "gateway-jwks.json"))
    secret = json.dumps(str(demo_dir / DEMO_SECRET_FILE))
    return f"""\
plaintext: true
auth:
  issuers:
    - issuer: {json.dumps(idp)}
      audience: [clinical-node]
      algorithms: [RS256]
      key: {{ jwks_url: {json.dumps(idp + "/jwks")} }}
      roles_claim: roles
      attribute_claims: {{ region: region }}
    - issuer: {DEMO_NODE_ISSUER}
      audience: [clinical-node]
      algorithms: [EdDSA]
      key: {{ jwks_file: {jwks} }}
      roles_claim: roles
      attribute_claims: {{ region: region }}
audit: {{ file: {json.dumps(str(root / "node-audit.jsonl"))} }}
masking: {{ key_file: {secret} }}
state_dir: {json.dumps(str(root / "node-state"))}
"""


def gateway_config(demo_dir: Path, node_port: int, token_endpoint: str) -> str:
    secret = json.dumps(str(demo_dir / DEMO_SECRET_FILE))
    key = json.dumps(str(demo_dir / "nodes" / "gateway-node-key.pem"))
    return f"""\
plaintext: true
auth:
  issuers:
    - issuer: meshgate-demo
      audience: [meshgate]
      algorithms: [HS256]
      key: {{ secret_file: {secret} }}
      roles_claim: roles
      attribute_claims: {{ region: region }}
masking: {{ key_file: {secret} }}
platform_policies:
  - {{ name: pii-redaction, tag: pii, column: {{ mask: redact, unless_role: [pii_reader] }} }}
engine:
  derived:
    principals:
      analytics: {{ subject: "domain:analytics", roles: [analyst] }}
      clinical: {{ subject: "domain:clinical", roles: [admin] }}
    materialize: false
nodes:
  tokens: {{ issuer: {DEMO_NODE_ISSUER}, key_file: {key} }}
  exchange:
    token_endpoint: {json.dumps(token_endpoint)}
    client_id: {CLIENT_ID}
    issuers: [meshgate-demo]
    client_secret_env: {SECRET_VARIABLE}
  endpoints:
    - {{ endpoint: "grpc://127.0.0.1:{node_port}", audience: clinical-node }}
"""


def gateway_mesh(demo_dir: Path, target: Path, node_port: int) -> Path:
    """The demo's federated gateway mesh, its clinical tables on the node at `node_port`."""
    shutil.copytree(demo_dir / "nodes" / "gateway-mesh", target)
    for descriptor in (target / "clinical").glob("*.yaml"):
        text = descriptor.read_text()
        start = text.index("grpc://127.0.0.1:")
        end = text.index("\n", start)
        old = text[start:end].strip().strip("'\"")
        descriptor.write_text(text.replace(old, f"grpc://127.0.0.1:{node_port}"))
    return target


class Exchanged:
    def __init__(self, root: Path, idp: str, demo, node, gateway, broken, tokens):
        self.root, self.idp = root, idp
        self.demo, self.node, self.gateway, self.broken = demo, node, gateway, broken
        self.tokens = tokens

    def node_audit(self) -> list[dict]:
        path = self.root / "node-audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def exchanged(tmp_path_factory, meshgate_bin):
    root = tmp_path_factory.mktemp("token-exchange")
    demo_dir = root / "demo"
    demo = start_server(
        [meshgate_bin, "demo", "--dir", demo_dir, "--scale", "0.1", "--listen", "127.0.0.1:0",
         "--http-listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0", "--portal-listen", "127.0.0.1:0",
         "--domain-node", "clinical"], "exchange-demo")
    try:
        (root / "idp").mkdir()
        with mock_oauth2_server(root / "idp") as idp:
            node = start_server(
                [meshgate_bin, "serve", "--mesh", demo_dir / "nodes" / "clinical" / "mesh",
                 "--listen", "127.0.0.1:0", "--plaintext", "--config",
                 write(root / "node.yaml", node_config(root, idp, demo_dir))],
                "exchange-node")
            servers = [node]
            try:
                port = node.port
                mesh = gateway_mesh(demo_dir, root / "gateway-mesh", port)

                def gateway(name: str, token_endpoint: str):
                    config = write(root / f"{name}.yaml", gateway_config(demo_dir, port, token_endpoint))
                    server = start_server(
                        [meshgate_bin, "serve", "--mesh", mesh, "--listen", "127.0.0.1:0",
                         "--plaintext", "--config", config],
                        f"exchange-{name}", env=GATEWAY_ENV)
                    servers.append(server)
                    return server

                working = gateway("gateway", idp + "/token")
                # The same, its provider's token endpoint wrong: no caller gets a token.
                broken = gateway("broken", idp + "/no-such-endpoint")
                tokens = {
                    name: mint_token(meshgate_bin, "--demo-dir", demo_dir, *persona.mint_args())
                    for name, persona in PERSONAS.items()
                }
                yield Exchanged(root, idp, demo, node, working, broken, tokens)
            finally:
                for server in reversed(servers):
                    server.stop()
    finally:
        demo.stop()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("persona", sorted(PERSONAS))
def test_every_persona_sees_what_the_demo_shows(exchanged, persona):
    token = exchanged.tokens[persona]
    for sql in QUERIES:
        kind, got = outcome(exchanged.gateway, token, sql)
        demo_kind, expected = outcome(exchanged.demo, token, sql)
        assert kind == demo_kind, f"{persona}: {sql}\nexchange: {got}\ndemo: {expected}"
        if kind == "rows":
            assert_rows_equal(got, expected, context=f"{persona}: {sql}: ")
        else:
            assert got.split("query_id")[0] == expected.split("query_id")[0]


def test_the_node_sees_each_caller_under_the_providers_issuer(exchanged):
    before = len(exchanged.node_audit())
    for persona in ("ana", "dev"):
        query_once(exchanged.gateway.uri, exchanged.tokens[persona],
                   "SELECT count(*) FROM clinical.encounters.visits WHERE kind = 'inpatient'")
    records = [r for r in exchanged.node_audit()[before:]
               if r.get("tables") == ["clinical.encounters.visits"]]
    assert {r["subject"] for r in records} >= {"ana", "dev"}, records
    idp_records = [r for r in records if r["subject"] in ("ana", "dev")]
    assert {r["issuer"] for r in idp_records} == {exchanged.idp}, idp_records


def test_the_gateways_own_identity_keeps_its_own_key(exchanged):
    # The clinical tables were opened (their schemas checked) as the domain's principal,
    # with a token the gateway signed: the node trusted it by the gateway's JWKS.
    records = [r for r in exchanged.node_audit() if r["subject"] == "domain:clinical"]
    assert records, "the domain principal never reached the node"
    assert {r["issuer"] for r in records} == {DEMO_NODE_ISSUER}


def test_no_token_from_the_provider_fails_the_query_clearly_and_the_rest_serves(exchanged):
    token = exchanged.tokens["dev"]
    kind, message = outcome(exchanged.broken, token, "SELECT count(*) FROM clinical.encounters.visits")
    assert kind == "error"
    assert "UNAVAILABLE" in message.upper() or "unavailable" in message, message
    assert "clinical.encounters.visits" in message, message
    assert token not in message
    # A product not on the node still serves, and the gateway stays up.
    local = query_once(exchanged.broken.uri, token, "SELECT count(*) AS n FROM billing.claims.claims")
    assert local.column("n")[0].as_py() > 0
    kind, _ = outcome(exchanged.broken, token, "SELECT count(*) FROM clinical.encounters.visits")
    assert kind == "error"


def test_callers_tokens_never_reach_the_gateways_log(exchanged):
    query_once(exchanged.gateway.uri, exchanged.tokens["ana"],
               "SELECT count(*) FROM clinical.encounters.visits")
    log = exchanged.gateway.output(tail=1_000_000)
    for token in exchanged.tokens.values():
        assert token not in log
        assert token.split(".")[2] not in log, "a token's signature is in the log"
    assert GATEWAY_ENV[SECRET_VARIABLE] not in log
