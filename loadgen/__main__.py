"""``python -m loadgen options``: every option the Locust plugin adds, grouped, with help.

Locust prints ``locust -f locustfile.py --help`` before it imports the locustfile, so the
options our plugin registers there never show in it (Locust's issue #2917). This lists
them from their one definition (:func:`loadgen.locust.settings.add_arguments`), so the
listing cannot drift from what the plugin accepts.
"""

from __future__ import annotations

import sys
import textwrap

USAGE = """usage: python -m loadgen options

  options   list the options of `locust -f locustfile.py` that this load generator adds
            (Locust's own: `locust --help`)
"""


def format_options(width: int = 100) -> str:
    """The options as text: a heading per group, each option with its environment variable
    and help, wrapped to ``width`` columns."""
    from loadgen.locust.settings import option_help  # imports Locust: only when asked

    lines = [
        "Options of `locust -f locustfile.py` added by the OCPP load generator.",
        "Each also reads LOCUST_<NAME> from the environment and `name = value` from a",
        "Locust config file (locust.conf); Locust's own options: `locust --help`.",
    ]
    heading = None
    for option in option_help():
        if option.heading != heading:
            heading = option.heading
            lines += ["", heading]
        flags = ", ".join(option.flags)
        env = "LOCUST_" + option.name.upper()
        lines.append(f"  {flags} {option.metavar}".rstrip() + f"  ({env})")
        lines += textwrap.wrap(
            option.help,
            width,
            initial_indent=" " * 6,
            subsequent_indent=" " * 6,
            break_on_hyphens=False,
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["options"]:
        sys.stdout.write(format_options())
        return 0
    sys.stderr.write(USAGE)
    return 0 if args in ([], ["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main())
