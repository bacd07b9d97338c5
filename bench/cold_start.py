"""The cold start of `abcgen sample -n 1`: wall-clock time of a new process that writes one
tune, beside a bare `import torch` in the same loop (the machine's load moves both alike).

    .venv/bin/python -m bench.cold_start --rounds 5
    .venv/bin/python -m bench.cold_start --rounds 5 --checkout /tmp/old   # an older checkout beside

Each round runs every command once, in turn; the figures are the min, median and max over
the rounds. --checkout DIR adds the same sampling command run from another checkout of
abcgen (a `git worktree add DIR COMMIT`), with the same interpreter and packages.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SAMPLE = ["-m", "abcgen", "sample", "-n", "1", "--seed", "3"]


def timed(args: list[str], pythonpath: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "ABCGEN_MODEL"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    start = time.perf_counter()
    # from the checkout's folder: `python -m` puts the working folder first on the path
    subprocess.run([sys.executable, *args], env=env, cwd=pythonpath, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--checkout", type=Path, help="another abcgen checkout to time beside this one")
    args = parser.parse_args()
    here = str(Path(__file__).resolve().parents[1])
    commands = {"import torch": (["-c", "import torch"], None), "sample -n 1 (this checkout)": (SAMPLE, here)}
    if args.checkout:
        commands[f"sample -n 1 ({args.checkout})"] = (SAMPLE, str(args.checkout.resolve()))
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, (command, path) in commands.items():
            times[name].append(timed(command, path))
    for name, seen in times.items():
        print(f"{name:40s} min {min(seen):.2f} s  median {statistics.median(seen):.2f} s  max {max(seen):.2f} s")


if __name__ == "__main__":
    main()
