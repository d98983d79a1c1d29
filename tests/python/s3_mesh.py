"""The demo mesh on a real S3-protocol server (moto_server, from the test venv).

``S3Server`` runs moto on a free 127.0.0.1 port; ``demo_on_s3`` uploads the demo's
data to one bucket, writes a copy of its descriptors whose locations point there,
and a gateway configuration giving every domain its own root in that bucket and its
own keys: two domains read them from environment variables, the others from an AWS
shared-credentials file.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mesh_helpers import venv_tool

BUCKET = "meshgate-demo"
DOMAINS = ("analytics", "billing", "clinical", "patients", "reference")
# Domains whose keys come from environment variables; the others use the file.
ENV_KEYED = ("clinical", "patients")


def moto_binary() -> Path:
    explicit = os.environ.get("MESHGATE_MOTO_SERVER")
    if explicit:
        return Path(explicit)
    return venv_tool("moto_server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto_server on 127.0.0.1, stopped with ``stop()``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(moto_binary()), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.1)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="uploader",
            aws_secret_access_key="uploader-secret",
        )

    def upload_tree(self, bucket: str, local: Path, prefix: str) -> int:
        client = self.client()
        count = 0
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            relative = path.relative_to(local).as_posix()
            key = f"{prefix}/{relative}" if prefix else relative
            client.upload_file(str(path), bucket, key)
            count += 1
        return count

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def domain_keys(domain: str) -> tuple[str, str]:
    return f"AKIA{domain.upper():0<16}", f"{domain}-secret-key"


@dataclass
class S3Demo:
    mesh_dir: Path
    config: Path
    env: dict[str, str]


def demo_on_s3(s3: S3Server, demo_mesh: Path, root: Path, base_config: str) -> S3Demo:
    """Uploads the demo's data and writes the S3 copy of its mesh and configuration."""
    s3.client().create_bucket(Bucket=BUCKET)
    uploaded = s3.upload_tree(BUCKET, demo_mesh / "data", "")
    if uploaded == 0:
        raise RuntimeError(f"no demo data under {demo_mesh / 'data'}")

    mesh = root / "mesh"
    local_data = (demo_mesh / "data").resolve().as_uri() + "/"
    for domain in DOMAINS:
        (mesh / domain).mkdir(parents=True)
        for descriptor in (demo_mesh / domain).glob("*.yaml"):
            text = descriptor.read_text().replace(local_data, f"s3://{BUCKET}/")
            assert f"s3://{BUCKET}/{domain}/" in text, f"{descriptor} has no location under {local_data}"
            (mesh / domain / descriptor.name).write_text(text)
        for transform in (demo_mesh / domain).glob("*.sql"):
            (mesh / domain / transform.name).write_text(transform.read_text())

    credentials = root / "aws-credentials"
    profiles = []
    env = {}
    storage = ["storage:"]
    for domain in DOMAINS:
        key, secret = domain_keys(domain)
        if domain in ENV_KEYED:
            var = f"DEMO_S3_{domain.upper()}"
            env[f"{var}_KEY"], env[f"{var}_SECRET"] = key, secret
            source = f"{{ access_key_id_env: {var}_KEY, secret_access_key_env: {var}_SECRET }}"
        else:
            profiles.append(f"[{domain}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")
            source = f"{{ file: {json.dumps(str(credentials))}, profile: {domain} }}"
        storage.append(
            f"  {domain}:\n"
            f"    root: s3://{BUCKET}/{domain}/\n"
            f"    s3: {{ endpoint: {json.dumps(s3.endpoint)}, allow_http: true, credentials: {source} }}\n"
            f"    requests: {{ timeout: 10s, max_retries: 2, retry_timeout: 10s }}\n"
        )
    credentials.write_text("\n".join(profiles))
    config = root / "meshgate.yaml"
    config.write_text(base_config + "\n".join(storage))
    return S3Demo(mesh_dir=mesh, config=config, env=env)
