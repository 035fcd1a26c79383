"""The docs stand alone and say what the code does.

A clone of this repository is all a reader has: nothing may point outside it, every relative
link must land on a file (and heading) that exists, and docs/design.md's lists of public
names (the metric contract, the stub's endpoints, metrics and tables) must match the code.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from csms_stub import store
from csms_stub.api import create_app
from csms_stub.metrics import StubMetrics
from loadgen.metrics import SPECS

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
#: what a clone does not have: the notes the project was once planned from
OUTSIDE = re.compile(r"\.\./shared|shared/seed|DESIGN\.md")
#: a Markdown link or image: [text](target)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def tracked_files() -> list[Path]:
    """The repository's files as git knows them (what a clone gets)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout: no list of tracked files")
    return [ROOT / name for name in listed.decode().split("\0") if name]


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
        return None  # binary, or deleted but not yet committed


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    body = re.sub(r"```.*?```", "", markdown, flags=re.S)  # a "# comment" in code is no heading
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", body, flags=re.M)}


def test_nothing_refers_outside_the_repository() -> None:
    found = []
    for path in tracked_files():
        if path == Path(__file__).resolve():
            continue  # this file names what it looks for
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "references to files outside the repository:\n" + "\n".join(found)


def test_relative_links_land() -> None:
    broken = []
    for path in tracked_files():
        if path.suffix != ".md" or (text := text_of(path)) is None:
            continue
        for target in LINK.findall(re.sub(r"```.*?```", "", text, flags=re.S)):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_slug_matches_github() -> None:
    assert slug("5. Did the CSMS store everything? Reconciliation") == (
        "5-did-the-csms-store-everything-reconciliation"
    )
    assert slug("Metrics: the contract") == "metrics-the-contract"


def _design_section(title: str) -> str:
    text = DESIGN.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_the_metric_contract_is_the_code() -> None:
    documented = {}
    for line in _design_section("Metrics: the contract").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`ocpp_loadgen_"):
            kind = re.match(r"\w+", cells[1])
            documented[cells[0].strip("`")] = (kind.group() if kind else "", cells[2])
    in_code = {spec.name: (spec.kind, ", ".join(spec.labels)) for spec in SPECS}
    assert documented == in_code


def test_the_stubs_public_names_are_the_code() -> None:
    section = _design_section("Public names")
    # create_app only keeps what it is given for its handlers: listing routes needs none
    app = create_app(None, None, None, store_timeout=1)  # type: ignore[arg-type]
    routes = {
        f"{method} {route.path.replace('{charger_id}', '{id}')}"
        for route in app.routes
        if route.path.startswith("/") and not route.path.startswith(("/docs", "/openapi", "/redoc"))
        for method in getattr(route, "methods", ()) - {"HEAD"}
    }
    documented = set(re.findall(r"`((?:GET|POST) /[^`]*)`", section))
    assert documented == routes
    for table in store.metadata.tables:
        assert f"`{table}`" in section, f"table {table} missing from docs/design.md"
    metrics = _design_section("Metrics: the contract")
    for family in StubMetrics().registry.collect():
        name = family.name.removeprefix("csms_stub_")
        name += "_total" if family.type == "counter" else ""
        assert f"`{name}`" in metrics, f"csms_stub_{name} missing from docs/design.md"
