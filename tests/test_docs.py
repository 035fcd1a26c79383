"""The docs stand alone and say what the code does.

A clone of this repository is all a reader has: nothing may point outside it, every relative
link must land on a file (and heading) that exists, and docs/design.md's lists of public
names (the metric contract, the stub's endpoints, metrics and tables) must match the code.
"""

from __future__ import annotations

import re
import subprocess
import sys
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


#: the documented commands whose options are checked, and how to list what each accepts
#: (``--help``, in a process of its own: Locust monkey-patches the process that imports it)
COMMANDS = {
    "locust": (
        re.compile(r"(?:^|[\s/])locust\s"),
        [["-m", "locust", "--help"], ["-m", "loadgen", "options"]],
    ),
    "csms_stub": (
        re.compile(r"-m csms_stub\b|(?:^|[\s/])csms-stub\s+-"),
        [["-m", "csms_stub", "--help"]],
    ),
    "loadgen.reconcile": (
        re.compile(r"-m loadgen\.reconcile\b"),
        [["-m", "loadgen.reconcile", "--help"]],
    ),
    "loadgen.scenarios": (
        re.compile(r"-m loadgen\.scenarios\b"),
        [["-m", "loadgen.scenarios", "--help"]],
    ),
}
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def shell_lines(markdown: str) -> list[str]:
    """The command lines of the shell blocks (```sh, or no language), continuations
    joined, and the code spans of the text."""
    lines: list[str] = []
    language = None  # outside a block; else the block's language
    for line in markdown.splitlines():
        fence = re.match(r"^\s*```(\w*)", line)
        if fence:
            language = fence.group(1) if language is None else None
            continue
        if language in ("", "sh", "bash", "shell"):
            lines.append(line)
    commands = "\n".join(lines).replace("\\\n", " ").splitlines()
    # and the commands quoted in the prose: `locust -f locustfile.py --master ...`
    return commands + re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", markdown, flags=re.S))


def test_the_documented_commands_use_options_that_exist() -> None:
    """Every option a command in README.md or docs/ passes to the load generator, the stub,
    the reconciliation or the scenarios is one that command accepts (what a reader pastes
    must run: the worked example of docs/testing-your-csms.md, the compose commands ...)."""
    known: dict[str, set[str]] = {}
    for name, (_, helps) in COMMANDS.items():
        found: set[str] = set()
        for args in helps:
            listed = subprocess.run(
                [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
            )
            assert listed.returncode == 0, listed.stderr[-2000:]
            found |= set(OPTION.findall(listed.stdout))
        known[name] = found
    unknown = []
    checked = 0
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in shell_lines(path.read_text(encoding="utf-8")):
            for name, (command, _) in COMMANDS.items():
                if command.search(line):
                    options = OPTION.findall(line)
                    checked += len(options)
                    unknown += [(path.name, name, o) for o in options if o not in known[name]]
    assert checked > 60  # the docs' commands were found
    assert unknown == []
