"""How many bars the staff lines of some tunes hold (lines continued with a trailing `\\`
joined, as engravers set them): the share of lines of 1 or 2 bars, which abcm2ps sets
"underfull", and the whole histogram.

    .venv/bin/python -m bench.staff_lines FILE.abc [FILE2.abc ...]
"""

import argparse
from collections import Counter

from abcgen.abc import split_tunes


def staff_lines(tune: str) -> list[str]:
    body = tune.split("\nK:", 1)[-1].split("\n", 1)[-1]
    return [line for line in body.replace("\\\n", " ").split("\n") if line.strip()]


def bar_histogram(tunes: list[str]) -> Counter:
    """Staff lines by the bar lines on them (a bar line's characters counted each, so `:|`
    is 1 and `|]` is 1; 9 or more as 9)."""
    return Counter(min(line.count("|"), 9) for tune in tunes for line in staff_lines(tune))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    for path in parser.parse_args().files:
        with open(path, encoding="utf-8") as file:
            tunes = split_tunes(file.read())
        counts = bar_histogram(tunes)
        total = sum(counts.values())
        short = (counts[1] + counts[2]) / total
        shares = ", ".join(f"{bars}: {count / total:.1%}" for bars, count in sorted(counts.items()))
        print(f"{path}: {len(tunes)} tunes, {total} staff lines, {short:.1%} of 1-2 bars ({shares})")


if __name__ == "__main__":
    main()
