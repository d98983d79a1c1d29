"""Graceful shutdown: on SIGTERM the gateway stops accepting, reports not ready on its
operator listener (while still healthy), lets a running query's stream go on until the
drain timeout, then closes it, writes out the audit log and exits 0."""

from __future__ import annotations

import json
import shutil
import signal
import time
import urllib.error
import urllib.request

from conftest import serve_config, start_server
from s3_mesh import free_port
from mesh_helpers import (
    DEMO_SECRET_FILE,
    FlightConn,
    command_statement_query,
    flight_command_info,
)

DRAIN_S = 2


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_sigterm_drains_then_exits_cleanly_with_the_audit_written(demo, meshgate_bin, mint, tmp_path):
    mesh = tmp_path / "mesh"
    shutil.copytree(demo.mesh_dir, mesh, ignore=shutil.ignore_patterns(".state", "audit.jsonl"))
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "meshgate.yaml"
    config.write_text(
        serve_config(mesh / DEMO_SECRET_FILE)
        + f"transport: {{ drain_timeout: {DRAIN_S}s, stream_window: 65536, connection_window: 65536 }}\n"
        + f"audit: {{ file: {json.dumps(str(audit))} }}\n"
        + "quality: { enabled: false }\n"
    )
    operator = f"http://127.0.0.1:{free_port()}"
    argv = [meshgate_bin, "serve", "--mesh", mesh, "--listen", "127.0.0.1:0", "--plaintext",
            "--config", config, "--metrics-listen", operator.removeprefix("http://")]
    srv = start_server(argv, "shutdown")
    token = mint("--sub", "drainer", "--role", "admin", "--role", "pii_reader")
    client = FlightConn(srv.uri, token)
    try:
        # A large result, read one batch and then left waiting: a query still running.
        sql = "SELECT * FROM clinical.encounters.visits a CROSS JOIN reference.regions.regions b"
        info = flight_command_info(client, command_statement_query(sql))
        reader = client.do_get(info.endpoints[0].ticket)
        reader.read_chunk()

        assert http_status(f"{operator}/ready") == 200
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        # While draining: alive, but no longer ready for new traffic.
        time.sleep(0.5)
        during = [(http_status(f"{operator}/ready"), http_status(f"{operator}/health"))]
        code = srv.stop(grace=DRAIN_S + 20)
        took = time.monotonic() - started
    finally:
        client.close()
    assert code == 0, srv.output()
    assert during == [(503, 200)], during
    # It waited for the running query (up to the drain timeout), and not much longer.
    assert DRAIN_S - 0.5 <= took < DRAIN_S + 15, took

    records = [json.loads(line) for line in audit.read_text().splitlines()]
    doget = [r for r in records if r.get("subject") == "drainer" and r["rpc"].startswith("DoGet")]
    assert len(doget) == 1, records
    # The stream was closed under it: recorded, not lost.
    assert doget[0]["outcome"] in {"cancelled", "error"}, doget[0]
    assert doget[0]["rows"] > 0, doget[0]
