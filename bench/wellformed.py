"""Well-formed tunes: the strict ABC check, the ABC tools and the form, for sampled tunes
against the training tunes.

    .venv/bin/python -m bench.wellformed [--n 200] [--seed 1] [--model PATH] [--save DIR]

With the shipped model (or --model) at temperature 0.8: n tunes (a) at the defaults
(check=True, structure auto), (b) with check=False and (c) with check=False and structure
none, the model on its own; and the Nottingham training tunes as the reference. For each: the share passing abcgen.abc.check_tune, abctools.summarise (error-free
in abc2midi, abcm2ps, music21 and all three; abcjs warning-free) and evaluate.form_summary.
Prints a markdown table; --save writes the sampled tunes as DIR/defaults.abc, DIR/no-check.abc.
"""

import argparse
import time
from pathlib import Path

import abcgen
from abcgen.abc import check_tune
from abcgen.abctools import summarise
from abcgen.corpus import load_corpus
from abcgen.evaluate import form_summary
from bench.common import NOTTINGHAM


def figures(tunes):
    total = len(tunes)
    pct = lambda count: f"{count}/{total} ({100 * count / total:.1f}%)"  # noqa: E731
    tools, form = summarise(tunes)["tools"], form_summary(tunes)
    rows = {"pass check_tune": pct(sum(check_tune(t).ok for t in tunes))}
    for name in ("abc2midi", "abcm2ps", "music21", "all"):
        if name in tools:
            rows[f"error-free: {'all three' if name == 'all' else name}"] = pct(tools[name]["error_free"])
    for name in ("abc2midi", "abcm2ps"):
        if name in tools:
            rows[f"{name} warning-free"] = pct(tools[name]["warning_free"])
    if "abc2midi" in tools:  # a joint out of step between parts; pickups inside a repeat are usual
        outside = sum(
            n for kind, n in tools["abc2midi"]["warnings"].items() if "time units" in kind and "repeat" not in kind
        )
        rows["abc2midi: a bar's time units off, outside a repeat"] = pct(outside)
    if "abcjs" in tools:
        rows["abcjs warning-free"] = pct(tools["abcjs"]["warning_free"])
    for key, label in (
        ("repeats_paired", "repeats paired"),
        ("sections_4_8_16", "sections of 4/8/16 bars"),
        ("ends_on_tonic", "ends on tonic"),
        ("all_three", "form: all three"),
    ):
        rows[label] = f"{100 * form[key]:.1f}%"
    rows["section lengths (bars: sections)"] = ", ".join(f"{k}: {v}" for k, v in form["section_lengths"].items())
    kinds = {
        name: found["errors"].most_common(3)
        for name, found in tools.items()
        if name not in ("all", "abcjs") and found["errors"]
    }
    if "abcjs" in tools and tools["abcjs"]["warnings"]:
        kinds["abcjs warnings"] = tools["abcjs"]["warnings"].most_common(3)
    return rows, kinds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--save", type=Path)
    args = parser.parse_args()

    model = abcgen.load_model(args.model)
    start = time.perf_counter()
    defaults = model.generate(n=args.n, temperature=0.8, seed=args.seed)
    seconds = time.perf_counter() - start
    raw = model.generate(n=args.n, temperature=0.8, seed=args.seed, check=False)
    alone = model.generate(n=args.n, temperature=0.8, seed=args.seed, check=False, structure="none")
    train = load_corpus(NOTTINGHAM).train
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        (args.save / "defaults.abc").write_text("\n\n".join(defaults) + "\n")
        (args.save / "no-check.abc").write_text("\n\n".join(raw) + "\n")
        (args.save / "no-structure.abc").write_text("\n\n".join(alone) + "\n")

    columns = {
        "defaults (check, structure auto)": defaults,
        "check=False": raw,
        "check=False, structure none": alone,
        f"training tunes ({len(train)})": train,
    }
    results = {name: figures(tunes) for name, tunes in columns.items()}
    print(f"generated {args.n} tunes at the defaults in {seconds:.1f} s (temperature 0.8, seed {args.seed})\n")
    print("| measure | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for row in results[next(iter(columns))][0]:
        print(f"| {row} | " + " | ".join(rows.get(row, "-") for rows, _ in results.values()) + " |")
    for name, (_, kinds) in results.items():
        for tool, common in kinds.items():
            print(f"\n{name}, {tool}: " + "; ".join(f"{count} x {kind}" for kind, count in common))


if __name__ == "__main__":
    main()
