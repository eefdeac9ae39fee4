"""The benchmark runner's smoke mode runs one tiny case of every row and writes the table (timings
are not checked).

The runs have no time limit that a busy machine could reach (HANG_GUARD_S only ends a run that has
hung). Most of a smoke run is starting the fresh processes that rows 4, 7 and 8 measure; it runs on
one torch thread, because on a busy machine two OpenMP threads stall on each other and make every
tiny step many times slower (bench/bench_visualize.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import HANG_GUARD_S

ROOT = Path(__file__).resolve().parent.parent


def _run(tmp_path, *args):
    env = {**os.environ, "CAPTIONER_BENCH_CORPUS": str(tmp_path / "corpus"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", *args],
                          capture_output=True, text=True, timeout=HANG_GUARD_S, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_smoke_bench_runs_every_row_and_writes_the_table(tmp_path):
    out = tmp_path / "RESULTS.md"
    _run(tmp_path, "--out", str(out))
    table = out.read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    numbers = sorted({row["row"].split(".")[0] for row in results["rows"]})
    assert sorted(numbers, key=int) == [str(n) for n in range(1, 15)]
    for row in results["rows"]:
        assert "error" not in row, row
        assert row["baseline_value"] > 0 and row["ours_value"] > 0 and row["ratio"] > 0
        assert row["row"] in table and "--smoke" in row["command"]
    assert "smoke mode" in table and results["mode"] == "smoke"
    assert "python bench/run.py --smoke" in table
    assert (tmp_path / "corpus" / "8-640x480-0" / ".complete").is_file()  # the corpus went where it was told


def test_smoke_device_table_runs_on_the_cpu(tmp_path):
    _run(tmp_path, "--device", "cpu", "--out", str(tmp_path / "RESULTS-cpu.md"))
    results = json.loads((tmp_path / "results-cpu.json").read_text())
    assert [row["row"].split(".")[0] for row in results["rows"]] == ["D1", "D2", "D3", "D4", "D5"]
    assert all(row["baseline_value"] > 0 and row["ours_value"] > 0 for row in results["rows"])
    assert results["mode"] == "smoke"
