"""The run's report: a JSON file for machines and a self-contained HTML page for people.

The HTML page is opened where the run happened, often on a machine without Internet access
or as a CI artefact, so it carries everything inline: CSS in a ``<style>`` element, charts
as SVG drawn here in Python, no scripts, fonts, images or links to anywhere else.

Pure: no Locust, gevent or network. The Locust layer gathers plain mappings and calls::

    steps = [step_dict(measurement, verdict, phase=..., started_s=...) for each hold]
    report = build_report(run=..., settings=..., steps=steps, timeline=..., totals=...,
                          capacity=capacity_dict(search.result(), config))
    json_path, html_path = write_reports(report, directory)

The inputs are plain data (``StepMeasurement.to_dict()`` and friends), so a page can be
rebuilt from a JSON report later: ``render_html(json.load(f))``.

Modules: :mod:`.model` (the JSON) and :mod:`.applied` (which settings applied);
:mod:`.page` (the HTML) with :mod:`.search` (a capacity search's sections), :mod:`.plain`
(a plain run's) and :mod:`.sections` (both's); :mod:`.charts` (SVG line charts) and
:mod:`.figures` (the report's charts); :mod:`.format` (numbers for people); :mod:`.files`
(writing both).
"""

from loadgen.report.charts import PALETTE, Rule, Series, svg_chart
from loadgen.report.files import report_basename, write_reports
from loadgen.report.model import (
    REDACTED,
    REPORT_KIND,
    REPORT_VERSION,
    build_report,
    capacity_dict,
    step_dict,
)
from loadgen.report.page import render_html

__all__ = [
    "PALETTE",
    "REDACTED",
    "REPORT_KIND",
    "REPORT_VERSION",
    "Rule",
    "Series",
    "build_report",
    "capacity_dict",
    "render_html",
    "report_basename",
    "step_dict",
    "svg_chart",
    "write_reports",
]
