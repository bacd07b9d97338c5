"""Generating tunes: batched sampling with temperature and top-k, header priming,
tune endings, and the ABC check with retries.

Each tune is written as a sequence of segments: fixed text that is fed to the model
as it is (the X: line, a title or meter the user asked for, a --prime) and free text
that the model writes (a header value up to its line end, then the tune body up to
the blank line that ends a tune in the training text). All n tunes advance together,
one character per step, in one batch.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from abcgen.checkpoint import Checkpoint, load_checkpoint
from abcgen.errors import AbcgenError

PRETRAINED = Path(__file__).parent / "pretrained" / "nottingham.pt"
TUNE_END = "\n\n"


def default_model_path() -> Path:
    return Path(os.environ.get("ABCGEN_MODEL") or PRETRAINED)


def load_model(path=None, device="cpu") -> "TuneModel":
    """The model at path, or ABCGEN_MODEL, or the shipped Nottingham model."""
    from abcgen.train import pick_device

    return TuneModel(load_checkpoint(path or default_model_path(), device=pick_device(device)))


def read_prime(prime: str | None) -> str | None:
    """--prime TEXT, or @FILE for the contents of FILE."""
    if prime and prime.startswith("@"):
        path = Path(prime[1:])
        if not path.is_file():
            raise AbcgenError(f"prime file {path} does not exist")
        return path.read_text(encoding="utf-8", errors="replace")
    return prime


@dataclass
class Stream:
    """One tune being written: what is still to be forced, and what is done."""

    plan: list  # remaining segments: ("fixed", text) or ("line", None) or ("body", None)
    text: str = ""
    forced: str = ""
    mode: str = "fixed"
    done: bool = False
    cut: bool = False

    def next_segment(self):
        if not self.plan:
            self.done = True
            return
        self.mode, value = self.plan.pop(0)
        if self.mode == "fixed":
            self.forced = value
            if not value:
                self.next_segment()

    def feed(self, sampled: str, max_chars: int) -> str:
        """The character this stream takes this step (forced or sampled)."""
        if self.forced:
            ch, self.forced = self.forced[0], self.forced[1:]
        else:
            ch = sampled
        self.text += ch
        if self.mode == "fixed" and not self.forced:
            self.next_segment()
        elif self.mode == "line" and ch == "\n":
            self.next_segment()
        elif self.mode == "body" and self.text.endswith(TUNE_END):
            self.text = self.text[: -len(TUNE_END)]
            self.done = True
        if not self.done and len(self.text) >= max_chars:
            self.done = self.cut = True
        return ch


def header_plan(title=None, meter=None, length=None, key=None, prime=None) -> list:
    """Segments that write X:, T:, M:, L:, K: in order, then the body."""
    if prime and prime.lstrip().startswith("X:"):
        return [("fixed", prime), ("body", None)]
    plan = [("fixed", "X:1\n")]
    for name, value in (("T", title), ("M", meter), ("L", length), ("K", key)):
        if value:
            plan.append(("fixed", f"{name}:{value}\n"))
        else:
            plan += [("fixed", f"{name}:"), ("line", None)]
    if prime:
        plan.append(("fixed", prime))
    plan.append(("body", None))
    return plan


def close_cut_tune(text: str) -> str:
    """A tune cut at --max-chars: keep complete bars only, end with a final barline."""
    head, sep, body = text.partition("\nK:")
    key_line, _, music = body.partition("\n")
    last_bar = music.rfind("|")
    music = music[: last_bar + 1] if last_bar >= 0 else ""
    if music.endswith("|") and not music.endswith(("||", "|]", ":|")):
        music += "]"
    return f"{head}{sep}{key_line}\n{music}".rstrip()


def finish_tune(text: str, cut: bool, number: int) -> str:
    """Number the tune and make its header standard: X, T, ..., M, L, K, each on a line."""
    from abcgen.corpus import normalise_tune

    text = close_cut_tune(text) if cut else text.strip()
    tune, _ = normalise_tune(text)
    tune = tune or text
    return re.sub(r"^X:.*$", f"X:{number}", tune, count=1, flags=re.M)


@dataclass
class TuneModel:
    """A trained model ready to write tunes: `abcgen.load_model().generate(n=4)`."""

    checkpoint: Checkpoint
    warnings: list = field(default_factory=list)

    @property
    def model(self):
        return self.checkpoint.model

    @property
    def vocab(self):
        return self.checkpoint.vocab

    def generate(self, n=1, temperature=0.8, top_k=None, seed=None, meter=None, key=None,
                 title=None, length=None, prime=None, max_chars=1500, check=True, retries=5,
                 report=None) -> list[str]:
        """Write n tunes as ABC text; with check, regenerate any that fail the ABC check.

        report, if given, is called with one line for each regeneration round.
        """
        if not temperature > 0:
            raise AbcgenError("--temperature must be greater than 0")
        if top_k is not None and top_k < 1:
            raise AbcgenError("--top-k must be at least 1")
        if n < 1:
            raise AbcgenError("-n/--num must be at least 1")
        if max_chars < 20:
            raise AbcgenError("--max-chars must be at least 20")
        prime = read_prime(prime)
        plan = header_plan(title, meter, length, key, prime)
        # A title may use letters the model never saw (they are fed to it as spaces);
        # anything else it is asked to continue from must be in its vocabulary.
        self.vocab.encode("".join(v for v in (prime, meter, key, length) if v))
        self.warn_unseen(meter, key)
        generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
        tunes = self.sample_batch(n, plan, temperature, top_k, max_chars, generator)
        if check:
            tunes = self.regenerate_failures(tunes, plan, temperature, top_k, max_chars,
                                             generator, retries, report)
        return [finish_tune(text, cut, i) for i, (text, cut) in enumerate(tunes, 1)]

    def warn_unseen(self, meter, key):
        seen = self.checkpoint.meta
        for name, value, known in (("meter", meter, seen.get("meters")), ("key", key, seen.get("keys"))):
            if value and known and value not in known:
                self.warnings.append(f"the model has never seen the {name} {value}; expect odd tunes")

    def regenerate_failures(self, tunes, plan, temperature, top_k, max_chars, generator,
                            retries, report):
        from abcgen.abc import check_tune

        pending, failures = list(range(len(tunes))), Counter()
        for attempt in range(retries + 1):
            results = {i: check_tune(finish_tune(*tunes[i], number=1)) for i in pending}
            pending = [i for i in pending if not results[i].ok]
            failures.update(failure_kind(results[i].reason) for i in pending)
            if not pending or attempt == retries:
                break
            fresh = self.sample_batch(len(pending), plan, temperature, top_k, max_chars, generator)
            for i, tune in zip(pending, fresh):
                tunes[i] = tune
        if report and failures:
            kinds = ", ".join(f"{count} {kind}" for kind, count in failures.most_common())
            regenerated = sum(failures.values()) - (len(pending) if pending else 0)
            report(f"regenerated {regenerated} tune(s) that failed the ABC check ({kinds})")
            if pending:
                report(f"{len(pending)} tune(s) still fail the ABC check after {retries} "
                       "retries; they are kept (use --retries to try harder)")
        return tunes

    @torch.no_grad()
    def sample_batch(self, n, plan, temperature, top_k, max_chars, generator):
        """Sample n tunes side by side; returns (text, cut at max_chars) pairs."""
        with one_cpu_thread():
            return self._sample_batch(n, plan, temperature, top_k, max_chars, generator)

    def _sample_batch(self, n, plan, temperature, top_k, max_chars, generator):
        model, vocab = self.model, self.vocab
        device = next(model.parameters()).device
        model.eval()
        streams = [Stream(plan=list(plan)) for _ in range(n)]
        for stream in streams:
            stream.next_segment()
        active = list(range(n))
        fallback = vocab.index.get(" ", 0)
        # The training text separates tunes by a blank line: start as if after one.
        ids = torch.tensor([vocab.encode(TUNE_END)] * n, device=device)
        logits, state = model(ids)
        while active:
            probs = next_char_probs(logits[:, -1], temperature, top_k)
            sampled = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).tolist()
            chars = [streams[i].feed(vocab.chars[s], max_chars) for i, s in zip(active, sampled)]
            keep = [j for j, i in enumerate(active) if not streams[i].done]
            if not keep:
                break
            if len(keep) < len(active):
                state = model.select_state(state, torch.tensor(keep, device=device))
                active = [active[j] for j in keep]
                chars = [chars[j] for j in keep]
            ids = torch.tensor([[vocab.index.get(c, fallback)] for c in chars], device=device)
            logits, state = model(ids, state)
        return [(s.text, s.cut) for s in streams]

    def score(self, tunes: list[str]) -> dict:
        """Next-character loss (nats), bits per character and accuracy on some tunes."""
        from abcgen.train import evaluate, known_tunes

        usable = known_tunes(tunes, self.vocab)
        if not usable:
            raise AbcgenError("none of these tunes can be scored: all have unknown characters")
        ids = torch.tensor(self.vocab.encode("".join(t + TUNE_END for t in usable)))
        result = evaluate(self.model, ids)
        return {"loss": result["loss"], "bpc": result["bpc"], "accuracy": result["acc"],
                "tunes_scored": len(usable)}


@contextmanager
def one_cpu_thread():
    """Run on one CPU thread: a sampling step is a few small matrix products, and
    a second thread costs more in hand-over than it saves (10x slower on a busy
    2-core machine, measured in bench/RESULTS.md)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def failure_kind(reason: str) -> str:
    """A check failure in a few words, for the summary line."""
    if reason.startswith("bar "):
        return "with a bar of the wrong length"
    if reason.startswith("music21"):
        return "that music21 could not parse"
    return reason


def next_char_probs(logits, temperature, top_k):
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        threshold = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    return torch.softmax(logits, dim=-1)

