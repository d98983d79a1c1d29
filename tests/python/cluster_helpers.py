"""A Ballista cluster of meshgate processes on loopback, for the scale-out suites.

``start_cluster`` runs one `meshgate scheduler` and N `meshgate executor` processes,
each logging to a file in the given work directory; ``TrafficRecorder`` is a TCP relay
that keeps every byte it forwards, to look into what crosses the cluster's wire.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from mesh_helpers import bearer, command_statement_query, flight_call_options, free_port, hermetic_env

# What a gateway logs when a job fails on the cluster and runs in the gateway instead.
FALLBACK = "the cluster could not run a query"
# The log filter under which a gateway says which queries it sends to the cluster.
GATEWAY_LOG = "warn,meshgate_engine::query::planned=info"

# Queries over the demo's products that a cluster runs: scans, aggregates, joins,
# top-k, windows, distinct counts.
DEMO_QUERIES = [
    "SELECT count(*) AS n FROM clinical.encounters.visits WHERE diagnosis_code LIKE 'E%'",
    "SELECT region, count(*) AS n, min(encounter_id) AS first FROM clinical.encounters.visits GROUP BY region",
    "SELECT v.region, count(*) AS n, sum(c.amount) AS total FROM clinical.encounters.visits v "
    "JOIN billing.claims.claims c ON c.encounter_id = v.encounter_id GROUP BY v.region",
    "SELECT encounter_id, patient_id FROM clinical.encounters.visits ORDER BY encounter_id DESC LIMIT 25",
    "SELECT patient_id, row_number() OVER (PARTITION BY patient_id ORDER BY encounter_id) AS nth "
    "FROM clinical.encounters.visits",
    "SELECT p.region, count(DISTINCT v.patient_id) AS patients FROM patients.registry.patients p "
    "JOIN clinical.encounters.visits v ON v.patient_id = p.patient_id GROUP BY p.region",
    # A virtual derived table: its transform (the analytics domain's rights) runs there too.
    "SELECT region, count(*) AS stays, sum(CASE WHEN readmitted_30d THEN 1 ELSE 0 END) AS readmitted "
    "FROM analytics.readmissions.stays GROUP BY region",
]


def cluster_runs(gateway) -> int:
    """How many queries `gateway` (logging as `GATEWAY_LOG` says) sent to its cluster."""
    return gateway.output(tail=1_000_000).count("the query runs on the cluster")


def wait_for_port(port: int, proc: subprocess.Popen, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode} (see its .log in the test's directory)",
                        pytrace=False)
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"{name} did not listen on {port} within {timeout:.0f}s", pytrace=False)


class Cluster:
    """A running scheduler and its executors; ``stop()`` ends them all."""

    def __init__(self, work: Path):
        self.work = work
        self.scheduler_port = 0
        self.scheduler: subprocess.Popen | None = None
        self.executors: list[subprocess.Popen] = []
        self.work_dirs: list[Path] = []
        # The gateway sending queries to it, when a suite starts one.
        self.gateway = None
        # The relay in front of the scheduler, when its traffic is recorded.
        self.recorder: TrafficRecorder | None = None
        self._procs: list[subprocess.Popen] = []

    def spawn(self, argv, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        # Output to a file: a pipe nobody reads would stall a chatty process.
        with open(self.log_path(name), "w") as log:
            proc = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT,
                                    env=env or hermetic_env(), start_new_session=True)
        self._procs.append(proc)
        return proc

    def log_path(self, name: str) -> Path:
        return self.work / f"{name.replace(' ', '-')}.log"

    def log(self, name: str) -> str:
        return self.log_path(name).read_text(errors="replace")

    @property
    def scheduler_address(self) -> str:
        """Where clients reach the scheduler (through the recorder, if any)."""
        return f"127.0.0.1:{self.recorder.port if self.recorder else self.scheduler_port}"

    def jobs(self) -> set[str]:
        """The jobs whose data the executors keep (a directory per job id; spill files
        go under `spill/`)."""
        return {p.name for d in self.work_dirs if d.is_dir() for p in d.iterdir() if p.name != "spill"}

    def stop(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def start_cluster(meshgate_bin: Path, work: Path, executor_config: Path, *, executors: int = 2,
                  env: dict[str, str] | None = None, scheduler_log: str = "warn",
                  recorded: bool = False) -> Cluster:
    """A scheduler and `executors` executors reading storage as `executor_config` says
    (with `env` for their credentials), local domains allowed. With `recorded`, the
    executors reach the scheduler through a ``TrafficRecorder`` (``cluster.recorder``),
    and so should every other client: ``cluster.scheduler_address`` is its address."""
    cluster = Cluster(work)
    try:
        cluster.scheduler_port = free_port()
        scheduler_env = {**hermetic_env(), "MESHGATE_LOG": scheduler_log}
        cluster.scheduler = cluster.spawn(
            [meshgate_bin, "scheduler", "--listen", f"127.0.0.1:{cluster.scheduler_port}"], "scheduler",
            scheduler_env)
        wait_for_port(cluster.scheduler_port, cluster.scheduler, "scheduler")
        if recorded:
            cluster.recorder = TrafficRecorder(cluster.scheduler_port)
        scheduler_port = cluster.recorder.port if cluster.recorder else cluster.scheduler_port
        for i in range(executors):
            flight_port, grpc_port = free_port(), free_port()
            work_dir = work / f"executor-{i}"
            proc = cluster.spawn([
                meshgate_bin, "executor", "--config", executor_config,
                "--scheduler", f"127.0.0.1:{scheduler_port}", "--bind-host", "127.0.0.1",
                "--flight-port", flight_port, "--grpc-port", grpc_port, "--slots", "2",
                "--work-dir", work_dir, "--allow-local-domains",
            ], f"executor {i}", {**hermetic_env(), **(env or {})})
            cluster.work_dirs.append(work_dir)
            wait_for_port(flight_port, proc, f"executor {i}")
            wait_for_port(grpc_port, proc, f"executor {i}")
            cluster.executors.append(proc)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def cpu_seconds(proc: subprocess.Popen) -> float:
    """CPU time (user + system) `proc` has used so far, from /proc."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def query(server, token: str, sql: str, timeout: str | None = None) -> pa.Table:
    """`sql` through Flight SQL, every endpoint read; `timeout` is the query's deadline
    (`x-meshgate-timeout`)."""
    client = flight.connect(server.uri)
    options = flight_call_options(bearer(token))
    if timeout is not None:
        options = flight.FlightCallOptions(timeout=options.timeout, headers=[
            (b"authorization", bearer(token).encode()), (b"x-meshgate-timeout", timeout.encode())])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command_statement_query(sql)), options)
    return pa.concat_tables([client.do_get(e.ticket, options).read_all() for e in info.endpoints])


def rows(table: pa.Table) -> Counter:
    """The table's rows as a multiset. Floats are kept to 12 significant digits: a sum
    computed on other partitions, in another order, differs in its last bits."""
    columns = (table.column(i).to_pylist() for i in range(table.num_columns))
    return Counter(tuple(_comparable(v) for v in row) for row in zip(*columns))


def _comparable(value):
    return float(f"{value:.12g}") if isinstance(value, float) else value


class TrafficRecorder:
    """A TCP relay on 127.0.0.1 to `target_port` that keeps every byte it forwards, each
    direction of each connection apart, for ``payloads()``."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._directions: list[bytearray] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                kept = bytearray()
                with self._lock:
                    self._directions.append(kept)
                threading.Thread(target=self._pump, args=(a, b, kept), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, kept: bytearray) -> None:
        try:
            while chunk := src.recv(65536):
                with self._lock:
                    kept.extend(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def payloads(self) -> list[bytes]:
        """What went through: each direction of each connection as sent, and the body
        of each HTTP/2 stream in it (its DATA frames joined), where a message the
        framing cut in two is whole again."""
        with self._lock:
            directions = [bytes(d) for d in self._directions]
        out = list(directions)
        for raw in directions:
            out.extend(_http2_bodies(raw))
        return out

    def close(self) -> None:
        self._listener.close()


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _http2_bodies(raw: bytes) -> list[bytes]:
    """The DATA of each stream of one direction of an HTTP/2 connection."""
    pos = len(_HTTP2_PREFACE) if raw.startswith(_HTTP2_PREFACE) else 0
    bodies: dict[int, bytearray] = {}
    while pos + 9 <= len(raw):
        length = int.from_bytes(raw[pos:pos + 3], "big")
        kind, flags = raw[pos + 3], raw[pos + 4]
        stream = int.from_bytes(raw[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        payload = raw[pos + 9:pos + 9 + length]
        pos += 9 + length
        if kind == 0:  # DATA
            if flags & 0x8:  # PADDED
                payload = payload[1:len(payload) - payload[0]]
            bodies.setdefault(stream, bytearray()).extend(payload)
    return [bytes(b) for b in bodies.values()]
