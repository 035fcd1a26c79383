"""Verdicts as JUnit XML (``--junit FILE``), the format CI systems show as test results.

One ``<testcase>`` per SLO of a plain run (``--check-slo``) and per capacity answer of a
search (concurrent chargers, connect rate): a failed one carries a ``<failure>`` with the
reason. Written with :mod:`xml.etree.ElementTree`, which escapes what needs escaping;
characters XML 1.0 cannot hold at all are dropped.
"""

from __future__ import annotations

import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from loadgen.capacity.config import CapacityConfig
from loadgen.capacity.judgement import SloCheck
from loadgen.capacity.search import CapacityResult

SUITE = "ocpp-loadgen"
#: what XML 1.0 cannot carry, even escaped
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Case:
    """One test case: passed when ``failure`` is None (else its one-line message)."""

    classname: str
    name: str
    failure: str | None = None
    #: what was measured, for people (the case's ``system-out``)
    output: str = ""


def slo_cases(checks: Sequence[SloCheck], problems: Sequence[str] = ()) -> list[Case]:
    """A case per SLO (``slo.<name>``; guards: ``guard.<name>``) and per other problem."""
    cases = [
        Case(
            "guard" if check.guard else "slo",
            check.name,
            None if check.held else check.reason,
            f"{check.figure} (limit {check.limit})",
        )
        for check in checks
    ]
    cases += [Case("run", "load generator", problem, problem) for problem in problems]
    return cases


def capacity_cases(result: CapacityResult, config: CapacityConfig, finished: bool) -> list[Case]:
    """A case per capacity searched: passed when the search found it."""
    cases: list[Case] = []
    unfinished = None if finished else "the run ended before the search did"
    if config.searches_chargers:
        line = result.summary()
        found = result.max_chargers is not None
        cases.append(Case("capacity", "chargers", unfinished or (None if found else line), line))
    if config.searches_connect_rate:
        line = result.connect_rate_line()
        found = result.max_connect_rate is not None
        cases.append(
            Case("capacity", "connect rate", unfinished or (None if found else line), line)
        )
    return cases


def _text(value: str) -> str:
    return _NOT_XML.sub("", value)


def render(cases: Sequence[Case], seconds: float = 0.0, suite: str = SUITE) -> bytes:
    """The JUnit XML document (UTF-8, with its declaration)."""
    failures = sum(case.failure is not None for case in cases)
    attributes = {"name": suite, "tests": str(len(cases)), "failures": str(failures)}
    root = ET.Element("testsuites", {**attributes, "errors": "0", "time": f"{seconds:.3f}"})
    element = ET.SubElement(
        root, "testsuite", {**attributes, "errors": "0", "skipped": "0", "time": f"{seconds:.3f}"}
    )
    for case in cases:
        item = ET.SubElement(
            element,
            "testcase",
            {
                "classname": _text(f"{suite}.{case.classname}"),
                "name": _text(case.name),
                "time": "0",
            },
        )
        if case.failure is not None:
            failure = ET.SubElement(item, "failure", {"message": _text(case.failure)})
            failure.text = _text(case.failure)
        if case.output:
            ET.SubElement(item, "system-out").text = _text(case.output)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write(path: str, cases: Sequence[Case], seconds: float = 0.0) -> None:
    """Write the document to ``path`` whole (a temporary file renamed): a CI job that
    reads it never sees half of it."""
    data = render(cases, seconds)
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".junit-", dir=directory)
    try:
        os.fchmod(fd, 0o644)  # as an ordinary file, not mkstemp's private one
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
