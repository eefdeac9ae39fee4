"""The benchmark runner's quick mode runs every row and writes the table (timings are not checked)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_bench_runs_every_row_and_writes_the_table(tmp_path):
    out = tmp_path / "RESULTS.md"
    env = {**os.environ, "CAPTIONER_BENCH_CORPUS": str(tmp_path / "corpus")}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    table = out.read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    numbers = sorted({row["row"].split(".")[0] for row in results["rows"]})
    assert sorted(numbers, key=int) == [str(n) for n in range(1, 12)]
    for row in results["rows"]:
        assert "error" not in row, row
        assert row["baseline_value"] > 0 and row["ours_value"] > 0 and row["ratio"] > 0
        assert row["row"] in table
    assert "quick mode" in table and results["quick"] is True
    assert (tmp_path / "corpus" / "96-640x480-0" / ".complete").is_file()  # the corpus went where it was told


def test_quick_device_table_runs_on_the_cpu(tmp_path):
    env = {**os.environ, "CAPTIONER_BENCH_CORPUS": str(tmp_path / "corpus")}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--device", "cpu", "--out",
                           str(tmp_path / "RESULTS-cpu.md")], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results-cpu.json").read_text())
    assert [row["row"].split(".")[0] for row in results["rows"]] == ["D1", "D2", "D3", "D4", "D5"]
    assert all(row["baseline_value"] > 0 and row["ours_value"] > 0 for row in results["rows"])
