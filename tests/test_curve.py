"""scripts/curve.py's reporting, on hand-made points and a hand-made py-spy sample file (the sweep
itself needs a server and minutes: BENCHMARKS.md, cmd 21)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from curve import Point, _top_frames, table  # noqa: E402


def _point(where: str, method: str, c: int, done: int, tokens: int, refused: int = 0) -> Point:
    return Point(where, method, c, seconds=10.0, latencies_s=[0.1] * (done - 2) + [0.9, 0.9],
                 first_step_s=[0.02] * done, tokens=tokens, refused=refused)


def test_the_table_reports_each_level_and_the_ratios() -> None:
    points = [_point("served", "target", 8, 50, 2000), _point("served", "rsd", 8, 120, 4800, refused=3),
              _point("in-process", "rsd", 8, 240, 9600), _point("in-process", "target", 8, 80, 3200)]
    text = table(points, ["target", "rsd"], [8])
    row = next(line for line in text.splitlines() if line.startswith("| 8 | 5.00"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # 12 / 5 requests/s = 2.40x; p50 0.10 s, p99 (index 118 of 120) a slow one; served / in process 480 / 960 tokens/s
    assert cells == ["8", "5.00", "12.00", "**2.40x**", "200", "480", "0.10 / 0.90", "0.020", "0, 3", "0", "0.50x"]
    assert "| 8 | 320 | 960 |" in text  # the in-process table, target then rsd


def test_py_spy_samples_are_summed_by_innermost_project_frame(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "Thread.run (threading.py:982);answer (runtime/in_server/host.py:383) 6\n"
        "Thread.run (threading.py:982);serve (runtime/in_server/bls.py:10);send (runtime/in_server/host.py:205) 3\n"
        "Thread.run (threading.py:982);select (selectors.py:468) 1\n")
    assert _top_frames(raw) == [" 60.0%  answer (host.py:383)", " 30.0%  send (host.py:205)"]
    assert _top_frames(tmp_path / "missing.txt") == ["(no py-spy output)"]
