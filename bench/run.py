"""Run every benchmark and write bench/RESULTS.md (and bench/results.json).

    python bench/run.py [--quick | --smoke] [--rows 1,2,3] (rows 1-14) [--out bench/RESULTS.md]
    python bench/run.py --device cuda [--quick | --smoke]   (the device table: bench/RESULTS-cuda.md)

`make bench` runs the full set (about 10 minutes on 2 cores), and the device table on CUDA
when there is a GPU; `--quick` runs every row small to check that they work, not to measure;
`--smoke` runs one tiny case of each row (seconds of work; what tests/test_bench.py runs).
`--device cpu` runs the device table on the CPU (bench/RESULTS-cpu.md).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import machine  # noqa: E402
from modes import add_mode_flags, mode_flag  # noqa: E402

from captioner.fileio import write_json_atomic, write_text_atomic  # noqa: E402


def _module_rows(name: str):
    """The rows of a bench module whose ``rows(mode)`` reports them as they are."""
    def rows(mode):
        return importlib.import_module(name).rows(mode)
    rows.__name__ = name  # what the progress line and an error row say
    return rows


def _row_5(mode):
    import bench_attacks
    rows = bench_attacks.rows(mode)
    for row in rows:  # bench_attacks reports time ours/baseline
        row["row"] = f"5. {row['row']} vs torchattacks"
        row["ratio_is"] = "time ours / torchattacks (max |output difference| " + f"{row['max_abs_diff']:.1e})"
    return rows


def _row_6(mode):
    import bench_visualize
    row = bench_visualize.row_filters(mode)
    row["row"] = f"6. {row['row']}"
    row["ratio_is"] = "speed-up"
    return [row]


_captioning, _training = _module_rows("bench_captioning"), _module_rows("bench_training")
GROUPS = {"1": _captioning, "2": _captioning, "4": _captioning, "8": _captioning, "9": _captioning,
          "3": _training, "7": _training, "5": _row_5, "6": _row_6, "10": _module_rows("bench_greedy"),
          "11": _module_rows("bench_beam"), "12": _module_rows("bench_explain"), "13": _module_rows("bench_onnx"),
          "14": _module_rows("bench_processes")}


MODE_NOTE = {"full": "", "quick": " (quick mode: small sizes, for checking that the rows run, not for the figures)",
             "smoke": " (smoke mode: one tiny case of each row, for checking their code paths, not for the figures)"}


def markdown(results: dict) -> str:
    info = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured {results['date']} with `{results['command']}` in {results['seconds']:.0f} s"
        + MODE_NOTE[results["mode"]]
        + ".",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory']} RAM, Python {info['python']}, "
        f"torch {info['torch']} ({info['torch_threads']} threads), CUDA: {'yes' if info['cuda'] else 'no'}; "
        f"load average at the start: {info['load_average']:.2f}.",
        "",
        "Each timed row runs its two sides alternately, several times, and compares medians; row 4 runs each "
        "side in fresh processes, alternately, and compares their median peak memory. Ratios are the claims.",
        "",
        "| row | baseline | ours | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        if "error" in row:
            lines.append(f"| {row['row']} | | | error: {row['error']} | | no |")
            continue
        met = {True: "yes", False: "**no**", None: "n/a"}[row["met"]]
        lines.append(
            f"| {row['row']} | {row['baseline']}: {row['baseline_value']} {row['unit']} | "
            f"{row['ours']}: {row['ours_value']} {row['unit']} | {row['ratio']}x ({row['ratio_is']}) | "
            f"{row['target']} | {met} |"
        )
    lines += ["", "## Notes and commands", ""]
    for row in results["rows"]:
        lines.append(f"- {row['row']}: `{row.get('command', '')}`. {row.get('notes', '')}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_mode_flags(parser)
    parser.add_argument("--rows", default=",".join(sorted(GROUPS)), help="comma-separated row numbers")
    parser.add_argument("--out", help="the table (default bench/RESULTS.md; with --device, RESULTS-DEVICE.md)")
    parser.add_argument("--device", help="run the device table (rows D1-D5) on cpu or cuda instead of rows 1-14")
    args = parser.parse_args()
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(wanted) - set(GROUPS))
    if unknown:
        parser.error(f"unknown rows {unknown}; rows are 1-14")
    started = time.time()
    info = machine()
    if args.device:
        import bench_device
        from captioner.runtime import resolve_device

        device = resolve_device(args.device)
        out = Path(args.out or BENCH / f"RESULTS-{device.type}.md")
        rows = bench_device.rows(args.mode, device)
        command = f"python bench/run.py --device {args.device}" + mode_flag(args.mode)
        return _write(rows, out, started, info, command, args.mode)
    rows, done = [], set()
    for number in wanted:
        group = GROUPS[number]
        if group in done:
            continue
        done.add(group)
        print(f"bench: running {group.__name__.strip('_').replace('_', ' ')}", file=sys.stderr, flush=True)
        try:
            rows.extend(group(args.mode))
        except Exception as error:  # a failing row is reported in the table, the others still run
            traceback.print_exc()
            rows.append({"row": f"{number}. ({group.__name__})", "error": f"{type(error).__name__}: {error}",
                         "met": False})
    rows = [r for r in rows if r["row"].split(".")[0] in wanted] or rows
    rows.sort(key=lambda r: (int(r["row"].split(".")[0]) if r["row"].split(".")[0].isdigit() else 0, r["row"]))
    command = ("python bench/run.py" + mode_flag(args.mode)
               + ("" if args.rows == parser.get_default("rows") else f" --rows {args.rows}"))
    return _write(rows, Path(args.out or BENCH / "RESULTS.md"), started, info, command, args.mode)


def _write(rows: list[dict], out: Path, started: float, info: dict, command: str, mode: str) -> int:
    """Write the table and its JSON (``results*.json`` beside it); 1 if a row failed."""
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "mode": mode, "seconds": time.time() - started,
        "command": command, "machine": info, "rows": rows,
    }
    write_text_atomic(out, markdown(results))
    write_json_atomic(out.with_name(out.stem.replace("RESULTS", "results") + ".json"), results, indent=2)
    print(markdown(results))
    return 0 if all(r.get("error") is None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
