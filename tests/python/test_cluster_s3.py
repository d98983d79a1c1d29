"""Scale-out over domains on S3: executors read each domain's bucket with that domain's
keys from their own environment and files, and nothing secret crosses the cluster's
wire.

The demo's data sits in a real S3-protocol server (moto), each domain with its own
keys (two from environment variables, two from a shared-credentials file). A scheduler
and two executors run behind a relay that records every byte sent to and from the
scheduler: the plans the gateway submits, the executors' registrations and task
statuses. The tasks the scheduler pushes to the executors are stages cut from those
plans by a process that holds no key or credential at all, so they can hold nothing
more. Answers match the demo server's (local files, same masking key).
"""

from __future__ import annotations

import base64
import json

import pytest

from cluster_helpers import (
    DEMO_QUERIES,
    FALLBACK,
    GATEWAY_LOG,
    cluster_runs,
    query,
    rows,
    start_cluster,
)
from conftest import serve_config
from mesh_helpers import DEMO_SECRET_FILE, ServerProcess, hermetic_env
from policy_model import PERSONAS
from s3_mesh import BUCKET, DOMAINS, S3Server, demo_on_s3, domain_keys


@pytest.fixture(scope="module")
def s3_cluster(demo, meshgate_bin, tmp_path_factory):
    work = tmp_path_factory.mktemp("s3-cluster")
    secret_file = demo.mesh_dir / DEMO_SECRET_FILE
    masking = f"masking: {{ key_file: {json.dumps(str(secret_file))} }}\n"
    try:
        s3 = S3Server()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    cluster = gateway = None
    try:
        layout = demo_on_s3(s3, demo.mesh_dir, work / "s3", serve_config(secret_file) + masking)
        # The executors get the gateway's configuration; their keys come from their own
        # environment and the credentials file it names, never from a plan.
        cluster = start_cluster(meshgate_bin, work, layout.config, env=layout.env, recorded=True)
        config = work / "gateway.yaml"
        # Beside the engine settings the S3 layout already has.
        config.write_text(layout.config.read_text().replace(
            "engine:\n",
            f"engine:\n  distributed:\n    scheduler: {cluster.scheduler_address}\n    min_scan_bytes: 0\n", 1))
        gateway = ServerProcess(
            [meshgate_bin, "serve", "--mesh", layout.mesh_dir, "--listen", "127.0.0.1:0", "--config", config],
            name="s3 distributed gateway", env={**hermetic_env(), **layout.env, "MESHGATE_LOG": GATEWAY_LOG})
        gateway.start()
        cluster.gateway = gateway
        yield cluster
    finally:
        if gateway is not None:
            gateway.stop()
        if cluster is not None:
            cluster.stop()
        s3.stop()


@pytest.mark.parametrize("persona", ["admin", "ana", "ben"])
def test_domains_on_s3_answer_on_the_cluster_as_on_the_gateway(server, s3_cluster, mint, admin_token, persona):
    """Every demo query, for an administrator, a principal under a row filter (ana)
    and one under hash masks (ben), runs on the cluster over S3 and answers as the demo
    server does over local files."""
    token = admin_token if persona == "admin" else mint(*PERSONAS[persona].mint_args())
    for sql in DEMO_QUERIES:
        before = cluster_runs(s3_cluster.gateway)
        try:
            expected = rows(query(server, token, sql))
        except Exception as refused:  # noqa: BLE001 (a product the persona may not read)
            with pytest.raises(type(refused)):
                query(s3_cluster.gateway, token, sql)
            continue
        assert rows(query(s3_cluster.gateway, token, sql)) == expected, sql
        assert cluster_runs(s3_cluster.gateway) > before, f"not on the cluster: {sql}"
    assert FALLBACK not in s3_cluster.gateway.output(tail=1_000_000), "a job failed and ran in the gateway"


def _forms(value: bytes) -> list[bytes]:
    """`value` as a plan or a log could carry it: raw, hex, base64 (both alphabets)."""
    return [value, value.hex().encode(), value.hex().upper().encode(), base64.b64encode(value),
            base64.urlsafe_b64encode(value).rstrip(b"=")]


def test_no_credential_or_key_crosses_the_clusters_wire(demo, s3_cluster, admin_token, mint):
    """Everything sent to and from the scheduler (the gateway's plans, the executors'
    registrations and task statuses; HTTP/2 DATA, not HPACK-coded headers) holds the
    tables' locations but no domain's keys, no masking or signing key, and no caller's
    token."""
    ben = mint(*PERSONAS["ben"].mint_args())
    for token in (admin_token, ben):
        query(s3_cluster.gateway, token, DEMO_QUERIES[2])
    payloads = s3_cluster.recorder.payloads()
    wire = b"".join(payloads)
    # The relay saw the plans: the stored paths on S3 cross, as they must.
    assert f"{BUCKET}".encode() in wire and b"encounters" in wire, "no plan went through the relay"
    secrets = {"masking and signing key": (demo.mesh_dir / DEMO_SECRET_FILE).read_bytes(),
               "administrator's token": admin_token.encode(), "ben's token": ben.encode()}
    for domain in DOMAINS:
        key, secret = domain_keys(domain)
        secrets[f"{domain}'s access key"] = key.encode()
        secrets[f"{domain}'s secret key"] = secret.encode()
    for name, value in secrets.items():
        for form in _forms(value):
            assert not any(form in payload for payload in payloads), f"the {name} crossed the wire"
    # A signature part alone is still the token's proof.
    for token in (admin_token, ben):
        signature = token.rsplit(".", 1)[1].encode()
        assert not any(signature in payload for payload in payloads)
