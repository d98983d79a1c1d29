"""NAV's mock-oauth2-server (from Maven Central): a standalone OAuth 2.0 / OpenID
Connect server on loopback, for the tests that need a real identity provider (portal
sign-in, token exchange toward domain nodes)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from mesh_helpers import free_port

OAUTH_SERVER = "no.nav.security:mock-oauth2-server:2.3.0"


@contextlib.contextmanager
def mock_oauth2_server(work: Path, config: dict | None = None) -> Iterator[str]:
    """Runs the server (its JSON configuration `config`, if any) in `work`; yields the
    URL of its `default` issuer."""
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed for the OAuth tests (Java 17 and Maven)", pytrace=False)
    group, artifact, version = OAUTH_SERVER.split(":")
    (work / "pom.xml").write_text(f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
<modelVersion>4.0.0</modelVersion><groupId>meshgate.tests</groupId><artifactId>oidc</artifactId><version>1</version>
<dependencies><dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId><version>{version}</version></dependency></dependencies>
</project>""")
    done = subprocess.run(["mvn", "-q", "-B", "dependency:build-classpath", "-Dmdep.outputFile=cp.txt"],
                          capture_output=True, text=True, timeout=600, cwd=work)
    if done.returncode != 0:
        pytest.fail(f"could not fetch {OAUTH_SERVER}: {done.stdout[-2000:]}{done.stderr[-2000:]}", pytrace=False)
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "SERVER_PORT": str(port)}
    if config is not None:
        env["JSON_CONFIG"] = json.dumps(config)
    log = open(work / "server.log", "w")
    proc = subprocess.Popen(
        ["java", "-cp", (work / "cp.txt").read_text().strip(),
         "no.nav.security.mock.oauth2.StandaloneMockOAuth2ServerKt"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    issuer = f"http://127.0.0.1:{port}/default"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(issuer + "/.well-known/openid-configuration", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail("the OAuth server did not start: " + (work / "server.log").read_text()[-3000:],
                            pytrace=False)
            time.sleep(0.5)
        yield issuer
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
