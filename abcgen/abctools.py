"""What the ABC software musicians use says about a tune.

Each available tool reads one tune (text starting at its X: line) and we keep what it
complains about, split into errors and warnings:

- abc2midi (abcmidi): lines starting "Error" / "Warning" while writing a MIDI file;
- abcm2ps: lines containing "error:" / "warning:" while engraving to PostScript;
- music21 (in this process): an exception while parsing, or a score with no notes;
- abcjs (the renderer behind thesession.org, run by node from bench/abcjs): its parser's
  warnings, for a whole list of tunes at once (abcjs_warnings).

A tool that is not installed is left out of every result. A tool that times out or crashes
counts as one error line. Warnings are kept apart because bar-length warnings on pickup bars
are common in real tunes too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

from abcgen.errors import AbcgenError

TIMEOUT = 5.0  # seconds one external tool may take over one tune
WORKERS = 2
ABCJS = Path(__file__).resolve().parents[1] / "bench" / "abcjs"
ABCJS_SCRIPT = ABCJS / "warnings.mjs"


class Messages(NamedTuple):
    """What one tool said about one tune."""

    errors: list[str]
    warnings: list[str]


def available_tools() -> list[str]:
    """The per-tune tools found here: abc2midi, abcm2ps (on PATH) and music21 (importable)."""
    found = [name for name in ("abc2midi", "abcm2ps") if shutil.which(name)]
    if importlib.util.find_spec("music21") is not None:
        found.append("music21")
    return found


def tool_messages(tune: str, tools: list[str] | None = None) -> dict[str, Messages]:
    """Errors and warnings from each available tool (or those of `tools` that are
    available), keyed by tool name."""
    tools = [name for name in available_tools() if tools is None or name in tools]
    with tempfile.TemporaryDirectory(prefix="abcgen-tools-") as folder:
        (Path(folder) / "tune.abc").write_text(tune.strip() + "\n\n", encoding="utf-8")
        return {name: CHECKS[name](Path(folder), tune) for name in tools}


def tool_problems(tune: str) -> dict[str, list[str]]:
    """The error lines each available tool printed for `tune`, keyed by tool name."""
    return {name: said.errors for name, said in tool_messages(tune).items()}


def tool_warnings(tune: str) -> dict[str, list[str]]:
    """The warning lines each available tool printed for `tune`, keyed by tool name."""
    return {name: said.warnings for name, said in tool_messages(tune).items()}


def accepted(tune: str) -> bool:
    """True when no available tool reports an error (warnings allowed)."""
    return not any(tool_problems(tune).values())


# ---- the tools ---------------------------------------------------------------------------------


def run_tool(command: list[str], folder: Path) -> tuple[list[str], list[str]]:
    """Run `command` in `folder`: (its output lines, stdout and stderr together; failure lines
    for a timeout, a crash or a tool that would not start)."""
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, errors="replace", timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return [], [f"{command[0]} timed out after {TIMEOUT:g} s"]
    except OSError as error:
        return [], [f"{command[0]} could not run: {error}"]
    lines = (done.stdout + done.stderr).splitlines()
    if done.returncode < 0:
        return lines, [f"{command[0]} crashed (signal {-done.returncode})"]
    return lines, []


def check_abc2midi(folder: Path, tune: str) -> Messages:
    lines, failed = run_tool(["abc2midi", "tune.abc", "-o", "tune.mid"], folder)
    return Messages(
        [line for line in lines if line.startswith("Error")] + failed,
        [line for line in lines if line.startswith("Warning")],
    )


def check_abcm2ps(folder: Path, tune: str) -> Messages:
    lines, failed = run_tool(["abcm2ps", "-q", "tune.abc", "-O", "tune.ps"], folder)
    return Messages(
        [line for line in lines if "error:" in line] + failed, [line for line in lines if "warning:" in line]
    )


# Silencing music21's stderr and warnings (both process-wide) is only safe one parse at a
# time when tool_messages is called from several threads.
MUSIC21_LOCK = threading.Lock()


def check_music21(folder: Path, tune: str) -> Messages:
    from music21 import converter

    printed = io.StringIO()
    with MUSIC21_LOCK, contextlib.redirect_stderr(printed), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            score = converter.parse(tune.strip() + "\n", format="abc")
            errors = [] if score.flatten().notes else ["music21 found no notes"]
        except Exception as error:  # any failure of the parser is what we measure
            first = (str(error).strip().splitlines() or [""])[0]
            errors = [f"{type(error).__name__}: {first}"[:200]]
    said = [f"{each.category.__name__}: {each.message}" for each in caught]
    said += [line for line in printed.getvalue().splitlines() if line.strip()]
    return Messages(errors, said)


CHECKS = {"abc2midi": check_abc2midi, "abcm2ps": check_abcm2ps, "music21": check_music21}


# ---- abcjs, through node -----------------------------------------------------------------------


def abcjs_available() -> bool:
    return shutil.which("node") is not None and (ABCJS / "node_modules" / "abcjs").is_dir()


def abcjs_warnings(tunes: list[str]) -> list[list[str]] | None:
    """abcjs's parser warnings for each tune, in order; None when node or
    bench/abcjs/node_modules is missing (run `npm install` in bench/abcjs)."""
    if not abcjs_available():
        return None
    text = "".join(
        tune.strip() + "\n\n" if tune.lstrip().startswith("X:") else f"X:{number}\n{tune.strip()}\n\n"
        for number, tune in enumerate(tunes, start=1)
    )
    try:
        done = subprocess.run(
            ["node", str(ABCJS_SCRIPT)], input=text, capture_output=True, text=True, timeout=30 + len(tunes) * 0.1
        )
    except subprocess.TimeoutExpired:
        raise AbcgenError(f"abcjs took too long over {len(tunes)} tunes; try fewer") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise AbcgenError(f"abcjs failed: {last}; try `npm install` in {ABCJS}")
    report = json.loads(done.stdout)
    if len(report) != len(tunes):
        raise AbcgenError(
            f"abcjs read {len(report)} tunes where {len(tunes)} were given; does a tune hold a second X: line?"
        )
    return [entry["warnings"] for entry in report]


# ---- many tunes --------------------------------------------------------------------------------

LOCATION = re.compile(
    r"^(?:(?:Error|Warning) in line-char [\d-]+ : "  # abc2midi
    r"|.*?:\d+:\d+: (?:error|warning): "  # abcm2ps
    r"|Music Line:\d+:\d+: )"
)  # abcjs


def error_kind(line: str) -> str:
    """An error or warning line without its place, so that lines of one kind group:
    the location prefix and any quoted excerpt go, every number becomes N."""
    message = LOCATION.sub("", line.strip())
    message = message.split(":  ", 1)[0]  # abcjs follows its message with the text around it
    return re.sub(r"\d+", "N", message).strip()[:100]


def check_tunes(tunes: list[str], workers: int = WORKERS, tools: list[str] | None = None) -> list[dict[str, Messages]]:
    """tool_messages for each tune, `workers` tunes at a time: processes, not threads,
    because music21 (most of the time) holds the interpreter while it parses."""
    if workers <= 1 or len(tunes) <= 1:
        return [tool_messages(tune, tools) for tune in tunes]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(tool_messages, tunes, [tools] * len(tunes), chunksize=8))


def count_kinds(reports: list[list[str]]) -> Counter:
    """How many tunes show each kind of message (a kind counts once per tune)."""
    return Counter(kind for lines in reports for kind in {error_kind(line) for line in lines})


def summarise(tunes: list[str], workers: int = WORKERS, abcjs: bool = True, tools: list[str] | None = None) -> dict:
    """Per tool (all available ones, or those of `tools`), and for "all" of them together:
    how many tunes are error-free and warning-free, and Counters of error and warning kinds
    (tunes showing each). With abcjs (when installed), its warnings too: "abcjs" has
    warning_free, warnings and total."""
    checked = check_tunes(tunes, workers, tools)
    per_tool: dict[str, dict] = {}
    summary = {"tunes": len(tunes), "tools": per_tool}
    for name in checked[0] if checked else {}:
        errors = [report[name].errors for report in checked]
        found = [report[name].warnings for report in checked]
        per_tool[name] = {
            "error_free": sum(not lines for lines in errors),
            "warning_free": sum(not lines for lines in found),
            "errors": count_kinds(errors),
            "warnings": count_kinds(found),
        }
    together = [[line for said in report.values() for line in said.errors] for report in checked]
    per_tool["all"] = {"error_free": sum(not lines for lines in together), "errors": count_kinds(together)}
    said = abcjs_warnings(tunes) if abcjs else None
    if said is not None:
        per_tool["abcjs"] = {
            "warning_free": sum(not lines for lines in said),
            "total": sum(map(len, said)),
            "warnings": count_kinds(said),
        }
    return summary
