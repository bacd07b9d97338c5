"""Does fine-tuning the shipped model help on a small collection? (issue 15)

    .venv/bin/python -m bench.finetune defaults [--budget 60]            # choose the defaults
    .venv/bin/python -m bench.finetune compare [--sizes 20,50] [--budget 90] [--samples 200]
                                             [--corpus oneills-1850]

One fixed split of the collection (music21's O'Neill's 1850 by default, which the shipped
Nottingham model never saw), shuffled with seed 0: the first 200 tunes are the test tunes
for every model; the next 100 judge the `defaults` grid (so the defaults are not chosen on
the test tunes); training tunes come after those (the 20 are the first of the 50).

- defaults: fine-tunes the shipped model on 40 tunes with a few learning rates and batch
  sizes (weight decay 0, early stopping with patience 4, at most --budget seconds each) and
  reports the best validation and tuning-set bits per character and when each run stopped.
- compare: for each size N, (a) the shipped model as it is, (b) the default model trained
  from scratch on the N tunes and (c) the shipped model fine-tuned on them with the
  fine-tuning defaults, (b) and (c) with at most --budget seconds of training. Test bits per
  character on the test tunes every model can read; then --samples tunes from each model
  (temperature 0.8, structure rules and bar fixing on, no whole-tune check), compared with
  the test tunes on evaluate's statistics rows (overlap), their validity, and copying
  (4+ bars from a tune the model trained on: the N tunes, and Nottingham for (a) and (c)).

Timings depend on the machine and its load; the figures go to bench/results/finetune.md.
"""

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from abcgen.checkpoint import load_checkpoint
from abcgen.corpus import Corpus, load_corpus
from abcgen.finetune import SHIPPED_PATH
from abcgen.scoring import LN2, known_tunes
from abcgen.train import TrainConfig, finetune_config, train
from abcgen.vocab import Vocab

TEST, TUNING = 200, 100


def split(name: str):
    corpus = load_corpus(name)
    tunes = sorted(corpus.tunes)
    random.Random(0).shuffle(tunes)
    return tunes[:TEST], tunes[TEST : TEST + TUNING], tunes[TEST + TUNING :]


def small_corpus(name: str, tunes: list[str]) -> Corpus:
    # Every tune in training: train() holds two of them out for validation (and says so).
    return Corpus(name=name, train=list(tunes), val=[], test=[])


def score(checkpoint_path, tunes: list[str]) -> dict:
    from abcgen.sample import TuneModel

    return TuneModel(load_checkpoint(checkpoint_path)).score(tunes)


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_defaults(args):
    test, tuning, rest = split(args.corpus)
    pool = rest[:40]
    shipped = Vocab(load_checkpoint(SHIPPED_PATH).vocab.chars)
    judged = known_tunes(tuning, Vocab(shipped.chars + list("".join(pool))))
    print(
        f"{args.corpus}: 40 training tunes, {len(judged)} of {TUNING} tuning tunes scored; "
        f"budget {args.budget:g} s per run"
    )
    grid = [dict(lr=lr, batch_size=batch) for batch in (8, 16) for lr in (3e-4, 1e-3, 3e-3)]
    grid.append(dict(lr=1e-3, batch_size=8, weight_decay=0.1))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for number, options in enumerate(grid):
            out = Path(folder) / str(number)
            config = finetune_config(**options, max_time=args.budget, device=args.device, seed=0)
            result = train(
                small_corpus(args.corpus, pool),
                out,
                {},
                config,
                progress=False,
                log=lambda message: None,
                init="shipped",
            )
            history = read_metrics(out / "metrics.jsonl")
            best_epoch = min(history, key=lambda m: m["val_loss"])["epoch"]
            tuned = score(result.best_path, judged)
            rows.append(
                {
                    **options,
                    "val_bpc": result.best_val_loss / LN2,
                    "tuning_bpc": tuned["bpc"],
                    "best_epoch": best_epoch,
                    "epochs": history[-1]["epoch"],
                    "stopped": result.stopped_because,
                    "seconds": round(result.elapsed_s),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print("\n| lr | batch | weight decay | val bpc | tuning bpc | best epoch | epochs run | s | stopped |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['lr']:g} | {r['batch_size']} | {r.get('weight_decay', 0):g} | {r['val_bpc']:.3f} | "
            f"{r['tuning_bpc']:.3f} | {r['best_epoch']:.0f} | {r['epochs']:.0f} | {r['seconds']} | "
            f"{r['stopped']} |"
        )


def sample_and_judge(
    checkpoint_path, n: int, reference: list[str], copied_from: list[str], budget: float = 120
) -> dict:
    from abcgen.evaluate import COPY_BARS, CorpusProfile, TrainingIndex, compare, originality, profile_tunes
    from abcgen.sample import TuneModel

    started = time.perf_counter()
    model = TuneModel(load_checkpoint(checkpoint_path))
    tunes = []
    while len(tunes) < n and time.perf_counter() - started < budget:  # a poor model samples slowly
        tunes += model.generate(n=min(10, n - len(tunes)), temperature=0.8, seed=len(tunes) + 1, check=False)
    seconds = time.perf_counter() - started
    report = compare(tunes, CorpusProfile.from_tunes(reference, reference[:2]))
    index = TrainingIndex(profile_tunes(copied_from).sequences)
    copied = originality(profile_tunes(tunes).sequences, index)
    return {
        "valid": report["validity"]["valid"],
        "overlap": {row["feature"]: row["overlap"] for row in report["statistics"]},
        "copying": copied[f"share_copying_{COPY_BARS}_bars"],
        "identical": copied["share_identical"],
        "tunes": len(tunes),
        "sampling_s": round(seconds),
    }


def run_compare(args):
    test, _, rest = split(args.corpus)
    shipped = load_checkpoint(SHIPPED_PATH)
    nottingham = []
    if args.nottingham and Path(args.nottingham).exists():
        nottingham = (
            load_corpus(args.nottingham).train if Path(args.nottingham).is_dir() else load_corpus(args.nottingham).tunes
        )  # a file of training tunes (abcgen corpus --dump train)
    results = {"corpus": args.corpus, "budget_s": args.budget, "samples": args.samples, "sizes": {}}
    out_root = Path(args.out)
    for size in [int(s) for s in args.sizes.split(",")]:
        pool = rest[:size]
        scratch_dir, tuned_dir = (
            out_root / f"{args.corpus}-{size}-scratch",
            out_root / f"{args.corpus}-{size}-finetuned",
        )
        if args.skip_scratch:  # (c) again only: (b)'s vocabulary is its training tunes' characters
            from abcgen.train import with_validation_tunes

            held, _ = with_validation_tunes(small_corpus(args.corpus, pool), lambda m: None)
            scratch = None
            scratch_vocab = Vocab.from_text(held.text("train"))
        else:
            scratch = train(
                small_corpus(args.corpus, pool),
                scratch_dir,
                {},
                TrainConfig(epochs=None, max_time=args.budget, device=args.device, seed=0),
                force=True,
                progress=False,
                log=lambda m: None,
            )
            scratch_vocab = load_checkpoint(scratch.best_path).vocab
        tuned = train(
            small_corpus(args.corpus, pool),
            tuned_dir,
            {},
            finetune_config(max_time=args.budget, device=args.device, seed=0, **({"lr": args.lr} if args.lr else {})),
            force=True,
            progress=False,
            log=lambda m: None,
            init="shipped",
        )
        models = {
            "a shipped": SHIPPED_PATH,
            "b scratch": scratch and scratch.best_path,
            "c fine-tuned": tuned.best_path,
        }
        vocabs = [shipped.vocab, scratch_vocab, load_checkpoint(tuned.best_path).vocab]
        judged = [t for t in test if all(not v.unknown(t) for v in vocabs)]
        models = {name: path for name, path in models.items() if path}
        row = {
            "test_tunes_scored": len(judged),
            "train_s": {
                "b scratch": round(scratch.elapsed_s) if scratch else None,
                "c fine-tuned": round(tuned.elapsed_s),
            },
            "stopped": {"b scratch": scratch and scratch.stopped_because, "c fine-tuned": tuned.stopped_because},
            "bpc": {name: score(path, judged)["bpc"] for name, path in models.items()},
        }
        print(f"N={size}: {json.dumps(row)}", flush=True)
        if args.samples and str(size) in args.sample_at.split(","):
            row["samples"] = {}
            for name, path in models.items():
                trained_on = list(pool) + (nottingham if name != "b scratch" else [])
                row["samples"][name] = sample_and_judge(path, args.samples, test, trained_on, args.sample_budget)
                print(f"N={size} {name}: {json.dumps(row['samples'][name])}", flush=True)
        results["sizes"][size] = row
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if not args.skip_scratch:
        print_table(results)


def print_table(results: dict):
    print(f"\n{results['corpus']}, budget {results['budget_s']:g} s: test bits per character")
    print(
        "| tunes | test tunes | (a) shipped | (b) scratch | (c) fine-tuned | (c) vs (a) | (c) vs (b) | train s (b, c) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, row in results["sizes"].items():
        a, b, c = (row["bpc"][k] for k in ("a shipped", "b scratch", "c fine-tuned"))
        print(
            f"| {size} | {row['test_tunes_scored']} | {a:.3f} | {b:.3f} | {c:.3f} | {c / a - 1:+.0%} | "
            f"{c / b - 1:+.0%} | {row['train_s']['b scratch']}, {row['train_s']['c fine-tuned']} |"
        )
    for size, row in results["sizes"].items():
        if not row.get("samples"):
            continue
        names = list(row["samples"])
        print(f"\nN={size}, {results['samples']} sampled tunes against the test tunes (overlap per row)")
        print("| | " + " | ".join(names) + " |")
        print("|---|" + "---:|" * len(names))
        for feature in row["samples"][names[0]]["overlap"]:
            print(f"| {feature} | " + " | ".join(f"{row['samples'][n]['overlap'][feature]:.3f}" for n in names) + " |")
        mean = {n: statistics.fmean(v for v in row["samples"][n]["overlap"].values() if v is not None) for n in names}
        print("| mean overlap | " + " | ".join(f"{mean[n]:.3f}" for n in names) + " |")
        for key in ("valid", "copying", "identical"):
            print(f"| {key} | " + " | ".join(f"{row['samples'][n][key]:.1%}" for n in names) + " |")
        print(
            "| tunes sampled (s) | "
            + " | ".join(f"{row['samples'][n]['tunes']} ({row['samples'][n]['sampling_s']})" for n in names)
            + " |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["defaults", "compare"])
    parser.add_argument("--corpus", default="oneills-1850")
    parser.add_argument("--budget", type=float, default=90, help="seconds of training per run at most")
    parser.add_argument("--sizes", default="20,50")
    parser.add_argument("--samples", type=int, default=200, help="tunes sampled per model (0: none)")
    parser.add_argument("--sample-at", default="50", help="the sizes to sample at, comma-separated")
    parser.add_argument(
        "--sample-budget",
        type=float,
        default=120,
        help="seconds of sampling per model at most (fewer tunes if it runs out)",
    )
    parser.add_argument(
        "--nottingham", default=str(Path(__file__).resolve().parents[2] / "shared" / "corpora" / "nottingham")
    )
    parser.add_argument("--out", default="runs/bench-finetune")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--skip-scratch", action="store_true", help="train and score (c) only, not (b)")
    parser.add_argument("--lr", type=float, help="(c)'s learning rate, if not the default")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    (run_defaults if args.what == "defaults" else run_compare)(args)


if __name__ == "__main__":
    main()
