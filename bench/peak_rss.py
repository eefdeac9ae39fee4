"""Run one ``captioner`` command and print the peak memory of its process tree in MB.

    python bench/peak_rss.py caption FOLDER --quiet

Memory is sampled every 20 ms as the sum of the proportional set sizes (PSS, from
/proc/PID/smaps_rollup) of the command and its children (the DataLoader's image
readers). PSS splits pages that a forked reader shares with its parent between them,
so the sum is the memory the command really holds; adding up RSS would count those
shared pages twice. Linux only.
"""

import subprocess
import sys
import time
from pathlib import Path


def tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            pids.extend(tree(int(child)))
    return pids


def pss_kib(pid: int) -> int:
    """Proportional set size of ``pid`` in KiB (its resident size where the kernel has no
    smaps_rollup; 0 once the process is gone)."""
    for name, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            for line in Path(name).read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1])
        except OSError:
            continue
    return 0


def main() -> int:
    process = subprocess.Popen([sys.executable, "-m", "captioner", *sys.argv[1:]], stdout=subprocess.DEVNULL)
    peak = 0
    while process.poll() is None:
        peak = max(peak, sum(pss_kib(pid) for pid in tree(process.pid)))
        time.sleep(0.02)
    if process.returncode:
        print(f"captioner exited with {process.returncode}", file=sys.stderr)
        return process.returncode
    print(peak / 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
