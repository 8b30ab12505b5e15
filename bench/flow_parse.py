"""Parse-and-check cost of a large workflow: ``treadle analyze -k`` against ``makeflow_analyze -k``.

Generates the spec's workflow of N independent rules (spec §5), runs both
tools on it in the same run, alternating, and prints the median wall time and
peak RSS of each and the ratios treadle/reference (targets: time <= 1.0x,
memory <= 0.33x). Also times both on a one-rule file (start-up cost).

    .venv/bin/python bench/flow_parse.py            # 100,000 rules, 3 rounds
    .venv/bin/python bench/flow_parse.py -n 20000 -r 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(path: Path, n: int) -> None:
    """The spec's generator: ``out.N:`` then TAB ``touch out.N``, for N = 1..n."""
    with open(path, "w") as f:
        f.writelines(f"out.{i}:\n\ttouch out.{i}\n" for i in range(1, n + 1))


def measure(cmd: list[str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run of ``cmd``, which must succeed."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()}")
    return wall, usage.ru_maxrss


def treadle_command() -> list[str]:
    script = Path(sys.executable).parent / "treadle"
    return [str(script)] if script.exists() else [sys.executable, "-m", "treadle"]


def compare(label: str, dag: str, cwd: Path, rounds: int) -> None:
    tools = {
        "treadle": [*treadle_command(), "analyze", "-k", dag],
        "reference": ["makeflow_analyze", "-k", dag],
    }
    walls: dict[str, list[float]] = {t: [] for t in tools}
    peaks: dict[str, list[int]] = {t: [] for t in tools}
    for _ in range(rounds):
        for tool, cmd in tools.items():
            wall, peak = measure(cmd, cwd)
            walls[tool].append(wall)
            peaks[tool].append(peak)
    print(f"\n{label} ({rounds} rounds, median)")
    print(f"  {'tool':<10} {'wall s':>8} {'peak RSS MB':>12}")
    for tool in tools:
        print(
            f"  {tool:<10} {statistics.median(walls[tool]):>8.3f} "
            f"{statistics.median(peaks[tool]) / 1024:>12.1f}"
        )
    t_ratio = statistics.median(walls["treadle"]) / statistics.median(walls["reference"])
    m_ratio = statistics.median(peaks["treadle"]) / statistics.median(peaks["reference"])
    print(f"  ratio treadle/reference: wall {t_ratio:.2f}x, peak memory {m_ratio:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-n", "--rules", type=int, default=100_000)
    ap.add_argument("-r", "--rounds", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("makeflow_analyze") is None:
        raise SystemExit("makeflow_analyze (cctools) is not installed: nothing to compare against")
    with tempfile.TemporaryDirectory(prefix="flow_parse.") as tmp:
        cwd = Path(tmp)
        generate(cwd / "big.mf", args.rules)
        generate(cwd / "one.mf", 1)
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        compare(f"{args.rules} rules: analyze -k", "big.mf", cwd, args.rounds)
        compare("1 rule: analyze -k (start-up)", "one.mf", cwd, max(args.rounds, 5))
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
