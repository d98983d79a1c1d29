"""Installs the JSON Schemas the suite validates meshgate's output against, into the
test virtual environment, each from a registry and checked against its SHA-256:

- OpenLineage spec 2-0-2 and its facets (`openlineage/OpenLineage.json`,
  `openlineage/facets/*.json`), verbatim from the OpenLineage repository inside the crate
  `datafusion-openlineage` 0.0.12 on crates.io (its conformance tests' fixtures);
- the Open Data Contract Standard v3.1.0 (`odcs-3.1.0.schema.json`), inside the wheel
  of `datacontract-cli` 1.2.8 on PyPI.

Only those files are extracted; nothing else of either package is installed.

Usage: python spec_schemas.py DEST
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

OPENLINEAGE_CRATE = "https://static.crates.io/crates/datafusion-openlineage/datafusion-openlineage-0.0.12.crate"
OPENLINEAGE_SHA256 = "c3174cdfb83e6ada02b64b2684f696ca382886cae5ce98d12ec802bbb1392129"
OPENLINEAGE_PREFIX = "datafusion-openlineage-0.0.12/tests/schemas/openlineage/"

ODCS_WHEEL = "datacontract-cli==1.2.8"
ODCS_WHEEL_SHA256 = "43bc341b82a77ae56fcb365e73dc02b901cd6e7afbef63fb5476deb91e383d2a"
ODCS_MEMBER = "datacontract/schemas/odcs-3.1.0.schema.json"


def _checked(data: bytes, expected: str, what: str) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise SystemExit(f"{what}: sha256 {digest}, expected {expected}")
    return data


def _openlineage(dest: Path) -> None:
    with urllib.request.urlopen(OPENLINEAGE_CRATE, timeout=60) as response:  # noqa: S310 (fixed https URL)
        archive = _checked(response.read(), OPENLINEAGE_SHA256, OPENLINEAGE_CRATE)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = member.name
            if not (member.isfile() and name.startswith(OPENLINEAGE_PREFIX) and name.endswith(".json")):
                continue
            relative = Path(name[len(OPENLINEAGE_PREFIX):])
            if ".." in relative.parts:
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            target = dest / "openlineage" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())


def _odcs(dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--only-binary", ":all:", "-d", tmp, ODCS_WHEEL], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        data = _checked(wheel.read_bytes(), ODCS_WHEEL_SHA256, wheel.name)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (dest / "odcs-3.1.0.schema.json").write_bytes(archive.read(ODCS_MEMBER))


def install(dest: Path) -> None:
    if (dest / "openlineage" / "OpenLineage.json").is_file() and (dest / "odcs-3.1.0.schema.json").is_file():
        return
    staged = dest.with_name(dest.name + ".partial")
    staged.mkdir(parents=True, exist_ok=True)
    _openlineage(staged)
    _odcs(staged)
    if not (staged / "openlineage" / "OpenLineage.json").is_file():
        raise SystemExit(f"{OPENLINEAGE_CRATE}: no OpenLineage.json under {OPENLINEAGE_PREFIX}")
    staged.rename(dest)


if __name__ == "__main__":
    install(Path(sys.argv[1]))
