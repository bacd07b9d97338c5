"""Where does a model think a tune ends? Its probability of the blank line that ends a tune,
read on real tunes (teacher forcing) at the end of each line that closes a part.

    .venv/bin/python -m bench.tune_ends [MODEL ...] [--corpus DIR]

For the validation and test tunes of the corpus it prints the mean probability of ending
the tune at the end of the first part (where a real tune rarely ends), at the end of a later
part that is not the last, and at the real end. A model that knows the form of a tune puts
little weight on the first and much on the last. "-" is the shipped model.
"""

import argparse
import re
import statistics

import torch

from abcgen.corpus import load_corpus
from abcgen.form import encode_text
from abcgen.sample import load_model
from abcgen.watch import TUNE_END
from bench.common import corpus_path

PART_END = re.compile(r"(:\||\|\]|\|\|)\s*$")


def part_end_lines(text: str) -> list[tuple[int, bool]]:
    """(index of the newline, whether it is the first part end) for each body line that
    closes a part, the tune's last line excepted."""
    body = text.index("\n", text.index("\nK:") + 1) + 1
    found = []
    for match in re.finditer("\n", text[body:]):
        index = body + match.start()
        if index < len(text) - len(TUNE_END) and PART_END.search(text[:index]):
            found.append((index, not found))
    return found


@torch.no_grad()
def end_probabilities(model_path, tunes) -> dict:
    model = load_model(None if model_path == "-" else model_path)
    net, vocab = model.model.eval(), model.vocab
    newline = vocab.index["\n"]
    seen = {"first part end": [], "later part end": [], "tune end": []}
    state = None
    for tune in tunes:
        text = tune + TUNE_END
        if set(text) - set(vocab.chars):
            continue
        inputs, _ = encode_text(text, vocab, net.config.form)
        logits, state = net(inputs.unsqueeze(0), state)
        probs = torch.softmax(logits[0].float(), dim=-1)[:, newline]  # P(next char is "\n")
        for index, first in part_end_lines(text):
            seen["first part end" if first else "later part end"].append(probs[index].item())
        seen["tune end"].append(probs[len(text) - 2].item())
    return {name: (statistics.mean(values), len(values)) for name, values in seen.items() if values}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="*", default=["-"])
    parser.add_argument("--corpus")
    args = parser.parse_args()
    corpus = load_corpus(corpus_path([None, args.corpus] if args.corpus else [None]))
    for path in args.models:
        figures = end_probabilities(path, corpus.val + corpus.test)
        print(
            path if path != "-" else "shipped model",
            "  ".join(f"{name} {mean:.3f} (n={count})" for name, (mean, count) in figures.items()),
        )


if __name__ == "__main__":
    main()
