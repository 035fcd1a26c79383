"""The HTML report in a real headless Chromium (tests/browser.py): it renders, logs no
console error, asks the network for nothing, and its charts have lines with points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loadgen.report import write_reports
from tests.browser import CHROMIUM, Browser
from tests.test_report import plain_run, simulated

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")

#: per chart: its lines with at least one point, its markers, and its drawn size
CHARTS = """
Array.from(document.querySelectorAll('svg.chart')).map(svg => {
  const box = svg.getBoundingClientRect();
  const lines = Array.from(svg.querySelectorAll('polyline'))
    .filter(line => line.points.numberOfItems > 0);
  return {lines: lines.length, markers: svg.querySelectorAll('circle').length,
          width: box.width, height: box.height,
          label: svg.getAttribute('aria-label')};
})
"""


def check_page(browser: Browser, path: Path) -> tuple[Any, list[dict[str, Any]]]:
    tab = browser.open(path.as_uri())
    assert tab.errors() == []
    # self-contained: the page itself is the only thing loaded
    assert tab.requests() == [path.as_uri()]
    charts = tab.evaluate(CHARTS)
    assert charts, "no chart rendered"
    for chart in charts:
        assert chart["width"] > 100 and chart["height"] > 100, chart
    return tab, charts


def test_reports_render_in_a_real_browser(tmp_path: Path) -> None:
    _, plain_html = write_reports(plain_run(), tmp_path / "plain")
    _, search_html = write_reports(simulated(), tmp_path / "search")
    with Browser(tmp_path) as browser:
        tab, charts = check_page(browser, plain_html)
        # chargers, failures, and p50/p95/p99 of each of the two actions: all drawn
        assert len(charts) == 4
        assert all(chart["lines"] >= 3 and chart["markers"] > 0 for chart in charts), charts
        assert "plain-1" in tab.evaluate("document.title")
        assert (
            tab.evaluate("document.getElementById('first-problems').innerText").count("\n") >= 4
        )  # the heading and a row per problem
        # the settings that did not apply are folded: in the page, not shown
        assert tab.evaluate("document.getElementById('settings-not-applied').open") is False
        assert (
            tab.evaluate("document.querySelector('#settings-not-applied table').checkVisibility()")
            == 0
        )

        _, charts = check_page(browser, search_html)
        assert len(charts) == 3
        assert all(chart["lines"] > 0 and chart["markers"] > 0 for chart in charts), charts
