"""The open-file arithmetic (pure) and raising the soft limit (in a child process)."""

from __future__ import annotations

import resource
import subprocess
import sys

from loadgen import limits


def test_users_that_fit_is_the_largest_count_whose_files_fit() -> None:
    for limit in [*range(0, 400), 1024, 4096, 20_000, 65_536, 1_048_576]:
        fit = limits.users_that_fit(limit)
        assert fit == 0 or limits.files_needed(fit) <= limit
        assert limits.files_needed(fit + 1) > limit
    assert limits.files_needed(20_000) == 21_100  # 5 % + 100 on top of one per charger
    assert limits.users_that_fit(20_000) == 18_952


def test_refusal_says_how_many_fit_and_how_many_processes_would_do() -> None:
    assert limits.refusal(18_952, 20_000) is None
    line = limits.refusal(20_000, 20_000)
    assert line is not None and "\n" not in line
    assert "18,952 fit in one" in line and "over 2 or more processes" in line
    assert limits.refusal(20_000, 20_000, processes=2) is None  # 10,000 each
    split = limits.refusal(40_000, 20_000, processes=2)
    assert split is not None and "(20,000 each)" in split and "3 or more" in split
    assert "ulimit -Hn" in (limits.refusal(5, 90) or "")


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))

    code = "from loadgen import limits as l; print(l.raise_open_file_limit(), l.open_file_limit())"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, preexec_fn=lower
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "(256, 1024) 1024"


def test_csms_stub_raises_its_soft_limit_and_says_how_many_chargers_fit(tmp_path) -> None:
    """The stub holds a socket per charger: a soft limit of 256 must not cap it at ~250."""

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))

    command = [sys.executable, "-m", "csms_stub", "--host", "127.0.0.1", "--port", "0"]
    command += ["--api-host", "127.0.0.1", "--api-port", "0"]
    command += ["--database-url", f"sqlite:///{tmp_path / 'limits.db'}"]
    stub = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=lower)
    try:
        assert stub.stderr is not None
        first = stub.stderr.readline()
    finally:
        stub.terminate()
        stub.communicate(timeout=30)
    assert "open-file limit 1024: room for about 880 chargers" in first, first
