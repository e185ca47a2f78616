"""The `v6` command in-process, as a user's shell would run it, for the CLI tests."""

from __future__ import annotations

import sys

import pytest

from deployments import cli


def v6(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the `v6` console entry point in-process: (exit code, stdout, stderr)."""
    saved = sys.argv
    sys.argv = ["v6", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code: int, err: str, *needles: str) -> None:
    """A user-fixable error: exit 2, one line starting `error: `, no traceback, naming
    every needle."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
