"""`meshgate lint <mesh> --against <previous>`: every product change since a previous
version of the mesh (a directory, or a git revision of the repository holding it),
classified as breaking or compatible for consumers; breaking changes under an unchanged
major version fail the lint (exit 1).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mesh_helpers import hermetic_env

BEFORE = """\
domain: shop
product: orders
version: 1.4.0
description: Orders, one row per order.
owner: { team: shop-data, contact: shop@example.org }
sla: { freshness: 24h }
tables:
  - name: orders
    format: parquet
    location: data/orders/
    columns:
      - { name: id, type: Int32, nullable: false }
      - { name: region, type: Utf8, nullable: false }
      - { name: note, type: Utf8 }
      - { name: amount, type: "Decimal128(10, 2)" }
  - name: returns
    format: parquet
    location: data/returns/
    columns:
      - { name: id, type: Int64, nullable: false }
policy:
  read: { any_role: [analyst, admin] }
  columns:
    note: { mask: redact, unless_role: [admin] }
"""

# id widened, amount narrowed, note removed, channel added, returns removed, a row
# filter and an aggregation threshold added, the freshness promise weakened, the note
# rule gone with its column.
AFTER = """\
domain: shop
product: orders
version: {version}
description: Orders, one row per order.
owner: { team: shop-data, contact: shop@example.org }
sla: { freshness: 48h }
tables:
  - name: orders
    format: parquet
    location: data/orders/
    columns:
      - { name: id, type: Int64, nullable: false }
      - { name: region, type: Utf8, nullable: false }
      - { name: amount, type: "Decimal128(8, 2)" }
      - { name: channel, type: Utf8 }
policy:
  read: { any_role: [analyst, admin, auditor] }
  rows:
    - { filter: "region = principal.region", unless_role: [admin] }
  aggregate_only: { min_group_size: 5, unless_role: [admin] }
"""

WANT = [
    "breaking: shop.orders (1.4.0 -> {v}): orders.amount: type Decimal128(10, 2) -> Decimal128(8, 2) (changed)",
    "breaking: shop.orders (1.4.0 -> {v}): orders.note: column removed",
    "breaking: shop.orders (1.4.0 -> {v}): policy.aggregate_only: aggregation threshold added: rows are no longer readable",
    "breaking: shop.orders (1.4.0 -> {v}): policy.rows: row filter added: region = principal.region",
    "breaking: shop.orders (1.4.0 -> {v}): returns: table removed",
    "breaking: shop.orders (1.4.0 -> {v}): sla: freshness promise weakened (1day -> 2days)",
    "compatible: shop.orders (1.4.0 -> {v}): orders.channel: column added",
    "compatible: shop.orders (1.4.0 -> {v}): orders.id: type Int32 -> Int64 (widened)",
    "compatible: shop.orders (1.4.0 -> {v}): policy.columns.note: column rule loosened",
    "compatible: shop.orders (1.4.0 -> {v}): policy.read: read rule admits more principals",
]


def git(repo: Path, *args: str) -> str:
    env = hermetic_env() | {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
                            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    run = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def lint(meshgate_bin, mesh: Path, against: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(meshgate_bin), "lint", str(mesh), "--against", against],
                          capture_output=True, text=True, env=hermetic_env(), timeout=120)


@pytest.fixture
def repo(tmp_path) -> Path:
    if shutil.which("git") is None:
        pytest.fail("git is not installed", pytrace=False)
    repo = tmp_path / "repo"
    (repo / "mesh" / "shop").mkdir(parents=True)
    (repo / "mesh" / "shop" / "orders.yaml").write_text(BEFORE)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "orders 1.4.0")
    return repo


def changes(run: subprocess.CompletedProcess) -> list[str]:
    return [line for line in run.stdout.splitlines() if line.startswith(("breaking:", "compatible:"))]


def test_breaking_changes_under_the_same_major_version_fail(meshgate_bin, repo):
    (repo / "mesh" / "shop" / "orders.yaml").write_text(AFTER.replace("{version}", "1.5.0"))
    run = lint(meshgate_bin, repo / "mesh", "main")
    assert run.returncode == 1, run.stdout + run.stderr
    assert changes(run) == [w.format(v="1.5.0") for w in WANT], run.stdout
    assert "error: shop.orders: breaking changes need a new major version (1.4.0 -> 1.5.0)" in run.stdout
    assert "1 product(s) changed: 6 breaking change(s), 4 compatible" in run.stdout


def test_a_new_major_version_passes_and_still_lists_what_breaks(meshgate_bin, repo):
    (repo / "mesh" / "shop" / "orders.yaml").write_text(AFTER.replace("{version}", "2.0.0"))
    run = lint(meshgate_bin, repo / "mesh", "HEAD")
    assert run.returncode == 0, run.stdout + run.stderr
    assert changes(run) == [w.format(v="2.0.0") for w in WANT], run.stdout


def test_a_previous_directory_and_added_or_removed_products(meshgate_bin, repo, tmp_path):
    previous = tmp_path / "previous"
    shutil.copytree(repo / "mesh", previous)
    (repo / "mesh" / "shop" / "orders.yaml").unlink()
    (repo / "mesh" / "shop" / "baskets.yaml").write_text(
        BEFORE.replace("product: orders", "product: baskets").replace("version: 1.4.0", "version: 0.1.0"))
    run = lint(meshgate_bin, repo / "mesh", str(previous))
    assert changes(run) == [
        "compatible: shop.baskets (new -> 0.1.0): product added",
        "breaking: shop.orders (1.4.0 -> removed): product removed",
    ], run.stdout
    # A removed product has no version to raise: it is listed, not an error.
    assert run.returncode == 0, run.stdout


def test_an_unknown_revision_is_a_clear_error(meshgate_bin, repo):
    run = lint(meshgate_bin, repo / "mesh", "no-such-branch")
    assert run.returncode == 1
    assert "error: --against no-such-branch: not a directory, and not a git revision" in run.stdout, run.stdout


def test_a_tag_added_is_breaking_for_platform_rules_select_by_tag(meshgate_bin, repo):
    (repo / "mesh" / "shop" / "orders.yaml").write_text(
        BEFORE.replace("{ name: region, type: Utf8, nullable: false }",
                       "{ name: region, type: Utf8, nullable: false, tags: [pii] }"))
    run = lint(meshgate_bin, repo / "mesh", "main")
    assert changes(run) == [
        "breaking: shop.orders (1.4.0 -> 1.4.0): orders.region: "
        "tag pii added (platform rules on it may restrict readers or values)",
    ], run.stdout
    assert run.returncode == 1


def test_a_revision_without_the_mesh_is_an_error(meshgate_bin, repo):
    (repo / "other").mkdir()
    (repo / "other" / "x.txt").write_text("x")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "other")
    moved = repo / "moved"
    (repo / "mesh").rename(moved)
    run = lint(meshgate_bin, moved, "HEAD~1")
    assert run.returncode == 1
    assert "holds no product" in run.stdout, run.stdout
