"""Writing the report: ``<name>.json`` and ``<name>.html`` side by side, atomically."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadgen.report import model, page

_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _stamp(started: Any) -> str:
    """``YYYYmmdd-HHMMSS`` of the run's start (now, when that is unknown), for file names."""
    try:
        moment = datetime.fromisoformat(str(started))
    except ValueError:
        moment = datetime.now(UTC)
    return moment.strftime("%Y%m%d-%H%M%S")


def report_basename(report: Mapping[str, Any]) -> str:
    """``ocpp-report-<run id>-<YYYYmmdd-HHMMSS>``, the run id reduced to safe characters."""
    run = report.get("run") or {}
    run_id = _FILENAME_UNSAFE.sub("-", str(run.get("run_id") or "")).strip("-.") or "run"
    return f"ocpp-report-{run_id[:80]}-{_stamp(run.get('started'))}"


def _write_atomically(path: Path, text: str) -> None:
    """Write beside the target, then rename over it: a reader (a CI artefact upload, a
    browser reloading) never sees half a report."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide the report from its readers
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_reports(report: Mapping[str, Any], directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.html`` into ``directory`` (created if needed);
    returns their paths, JSON first."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    name = report_basename(report)
    json_path, html_path = folder / f"{name}.json", folder / f"{name}.html"
    text = json.dumps(model.plain(report), indent=2, allow_nan=False, ensure_ascii=False)
    _write_atomically(json_path, text + "\n")
    _write_atomically(html_path, page.render_html(report))
    return json_path, html_path
