"""Where in its tune each character stands: the model's sense of form.

A character model decides when a tune ends at the end of a part, and a part end looks
the same after the first strain as after the last; it decides when a part ends after a
phrase of bars that it has to count. From the text alone it has to count across 150-300
characters, more than its training windows see: models without help closed a quarter of
their tunes after one strain, or let a strain wander on for 30 bars. So the model is also
told where each character stands: how many bars of its tune are complete, as two one-hot
inputs beside the character's, the block of BARS_PER_BLOCK bars (0-7, 8-15, ..., the
last block open-ended) and the bar within the block (see model.input_table). The
counting is done here, character by character, the same way for the training text and
for the sampler.

A bar is complete at a bar line (a run of `|` and `:` characters) after some music in the
tune body; bar lines that only open a repeat (`|:` at the start of a line) do not count,
and field lines in the body such as P:B are left out. A blank line starts the next tune.
A form class numbers the pair: block x BARS_PER_BLOCK + bar within the block.

Counted by part (count="part"), the same six blocks say which part a character is in and
which half of it: part 1, 2, 3 or later, times bars 1-8 or 9 and on, and the bar is counted
from the part's start. A part starts after a section bar line (`:|`, `|:`, `::`, `||`,
`|]`) that follows some bars of the part before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from abcgen.vocab import Vocab

BARS_PER_BLOCK = 8
FORM_BLOCKS = 6  # 0-7 bars, 8-15, ..., 40 or more
MUSIC = set("ABCDEFGabcdefgzxZ")
COUNTS = ("tune", "part")  # what the bars are counted from (see the module doc)


@dataclass(frozen=True)
class Place:
    """The counter after some text: what the next character is read against."""

    bars: int = 0
    music: bool = False  # notes or rests since the last bar line
    in_body: bool = False
    line_head: str = ""  # the first two characters of the current line
    previous: str = "\n"
    part: int = 0  # parts complete (count="part")
    part_bars: int = 0  # bars complete in this part
    run: str = ""  # the bar line being read

    def after(self, ch: str) -> "Place":
        if ch == "\n":
            if self.previous == "\n":  # a blank line: the next tune
                return Place()
            return self._next(self.bars, self.music, self.in_body or self.line_head == "K:", "", ch)
        head = self.line_head if len(self.line_head) >= 2 else self.line_head + ch
        field_line = len(head) == 2 and head[0].isalpha() and head[1] == ":"
        music = self.in_body and not field_line and (self.music or ch in MUSIC)
        if music and ch in "|:":
            return self._next(self.bars + 1, False, self.in_body, head, ch, bar_done=True)
        return self._next(self.bars, music, self.in_body, head, ch)

    def _next(self, bars: int, music: bool, in_body: bool, head: str, ch: str, bar_done: bool = False) -> "Place":
        part, part_bars = self.part, self.part_bars + bar_done
        run = self.run + ch if ch in "|:]" and in_body else ""
        if not run and (":" in self.run or "||" in self.run or "|]" in self.run) and part_bars:
            part, part_bars = part + 1, 0
        return Place(bars, music, in_body, head, ch, part, part_bars, run)

    def form_class(self, blocks: int, count: str = "tune") -> int:
        """block x BARS_PER_BLOCK + bar within the block (0 without blocks)."""
        if not blocks:
            return 0
        if count == "part":
            block = min(self.part, blocks // 2 - 1) * 2 + min(self.part_bars // BARS_PER_BLOCK, 1)
            return block * BARS_PER_BLOCK + self.part_bars % BARS_PER_BLOCK
        return min(self.bars // BARS_PER_BLOCK, blocks - 1) * BARS_PER_BLOCK + self.bars % BARS_PER_BLOCK


def class_count(blocks: int) -> int:
    """How many form classes a model with this many blocks reads (1: none)."""
    return max(1, blocks * BARS_PER_BLOCK)


def form_classes(text: str, blocks: int, count: str = "tune") -> list[int]:
    """The form class of each character of a text: where its tune stands once that
    character is read."""
    place, found = Place(), []
    for ch in text:
        place = place.after(ch)
        found.append(place.form_class(blocks, count))
    return found


def input_ids(text: str, vocab: Vocab, blocks: int, count: str = "tune") -> list[int]:
    """The ids a model reads for a text: the character ids, or with form classes the
    id of each (character, form class) pair, character + vocab_size * class."""
    ids = vocab.encode(text)
    if not blocks:
        return ids
    return [i + len(vocab) * form for i, form in zip(ids, form_classes(text, blocks, count))]


def encode_text(text: str, vocab: Vocab, blocks: int, count: str = "tune") -> tuple[torch.Tensor, torch.Tensor]:
    """(model inputs, character ids) of a text, as tensors."""
    import torch  # here, not at the top: the sampler reads form classes without torch

    inputs = torch.tensor(input_ids(text, vocab, blocks, count), dtype=torch.long)
    return inputs, torch.tensor(vocab.encode(text), dtype=torch.long)


class FormTracker:
    """Form classes of a text that grows one character at a time and may be cut back
    (the sampler's rewinds): the place after each prefix is kept."""

    def __init__(self, blocks: int, count: str = "tune"):
        self.blocks, self.count = blocks, count
        self.places = [Place()]  # places[i]: after the first i characters

    def feed(self, text: str) -> int:
        """The form class once the last character of text is read (the text before it
        is the one fed so far, perhaps cut back since)."""
        del self.places[len(text) :]
        self.places.append(self.places[-1].after(text[-1]))
        return self.places[-1].form_class(self.blocks, self.count)
