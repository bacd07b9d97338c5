"""Which tunes the ABC software musicians use accepts: abc2midi, abcm2ps, music21 and abcjs.

    .venv/bin/python -m bench.acceptance FILE.abc [FILE2.abc ...] [--json] [--top 10]
                                         [--tools abc2midi,abcm2ps,music21,abcjs]

For each file: how many tunes, how many each tool reads without an error (and all three
together), how many abcjs reads without a warning, and the most common kinds of error per
tool, counted in tunes (a kind counts once per tune; numbers in messages read N). Tools that
are not installed are left out; abcjs needs node and `npm install` in bench/abcjs.
music21 takes most of the time (about 0.2 s a tune); --tools abc2midi,abcm2ps,abcjs skips it.
"""

import argparse
import json
import sys
from pathlib import Path

from abcgen.abc import split_tunes
from abcgen.abctools import summarise

TOOLS = ("abc2midi", "abcm2ps", "music21", "abcjs")


def share(count: int, total: int) -> str:
    return f"{count} ({100 * count / total:.1f}%)" if total else "0"


def print_summary(path: Path, summary: dict, top: int) -> None:
    total, tools = summary["tunes"], summary["tools"]
    print(f"{path}: {total} tunes")
    for name, result in tools.items():
        if "error_free" in result:
            warned = f", warning-free {share(result['warning_free'], total)}" if "warning_free" in result else ""
            print(f"  {name:9s} error-free {share(result['error_free'], total)}{warned}")
    if "abcjs" in tools:
        abcjs = tools["abcjs"]
        print(f"  abcjs     warning-free {share(abcjs['warning_free'], total)}, {abcjs['total']} warnings")
    for name, result in tools.items():
        kinds = result["warnings" if name == "abcjs" else "errors"].most_common(top)
        if kinds and name != "all":
            print(f"  most common {'warnings' if name == 'abcjs' else 'errors'} of {name} (tunes):")
            for kind, count in kinds:
                print(f"    {count:5d}  {kind}")


def as_json(summary: dict, top: int) -> dict:
    """The summary with each Counter cut to its `top` kinds, most common first."""
    tools = {
        name: {
            key: dict(value.most_common(top)) if hasattr(value, "most_common") else value
            for key, value in result.items()
        }
        for name, result in summary["tools"].items()
    }
    return {"tunes": summary["tunes"], "tools": tools}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help=".abc files of tunes")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--top", type=int, default=10, help="how many kinds of error to list")
    parser.add_argument(
        "--tools", default=",".join(TOOLS), help=f"which tools to run, comma-separated (default {','.join(TOOLS)})"
    )
    args = parser.parse_args()
    tools = args.tools.split(",")
    if unknown := set(tools) - set(TOOLS):
        parser.error(f"unknown tools {', '.join(sorted(unknown))}; choose from {', '.join(TOOLS)}")
    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        sys.exit(f"not found: {', '.join(missing)}; pass .abc files")

    results = {}
    for path in args.files:
        tunes = split_tunes(path.read_text(encoding="utf-8", errors="replace"))
        print(f"checking {len(tunes)} tunes of {path}...", file=sys.stderr)
        summary = summarise(tunes, abcjs="abcjs" in tools, tools=[name for name in tools if name != "abcjs"])
        if args.json:
            results[str(path)] = as_json(summary, args.top)
        else:
            print_summary(path, summary, args.top)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
