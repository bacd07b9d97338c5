"""Form classes: how far into its tune each character is, counted the same way for the
training text, for evaluation and for the sampler."""

import numpy as np
import torch

from abcgen.checkpoint import Checkpoint
from abcgen.form import BARS_PER_BLOCK, FormTracker, Place, encode_text, form_classes, input_ids
from abcgen.model import build_model, input_table
from abcgen.model_config import ModelConfig
from abcgen.sample import SamplingRun, TuneModel, header_plan
from abcgen.vocab import Vocab
from abcgen.watch import TUNE_END

HEADER = "X:1\nT:Counting\nM:4/4\nL:1/8\nK:G\n"


def bars_after(text: str) -> int:
    place = Place()
    for ch in text:
        place = place.after(ch)
    return place.bars


def test_a_bar_is_complete_at_a_bar_line_after_music_in_the_body():
    assert bars_after(HEADER) == 0
    assert bars_after(HEADER + "|:GABc dedc|BAGF GABc:|\n") == 2  # not the opening |:
    assert bars_after(HEADER + "GABc|dedc::BAGF|GABc|]\n|:z8|\n") == 5  # :: and |] once each
    assert bars_after(HEADER + "GABc|\nP:B\nBAGF|\n") == 2  # the field line P:B is not a bar
    assert bars_after(HEADER + '"G"d2|[1 GABc:|[2 GAB2||\n') == 3  # an anacrusis is a bar
    assert bars_after("X:1\nT:a:b|c\nM:4/4\nL:1/8\nK:G\n") == 0  # | and : in the header


def test_a_blank_line_starts_the_next_tune_at_zero():
    tune = HEADER + "GABc|" * 20 + "\n"
    classes = form_classes(tune + TUNE_END + tune, blocks=6)
    assert classes[len(tune) - 1] == 20
    assert classes[len(tune) + len(TUNE_END) + len(HEADER)] == 0


def test_a_class_is_the_block_of_eight_bars_and_the_bar_within_it():
    body = "GABc|" * 60
    classes = form_classes(HEADER + body, blocks=6)
    after = {n: classes[len(HEADER) + 5 * n - 1] for n in (7, 8, 15, 16, 39, 40, 47, 60)}
    blocks = {n: divmod(c, BARS_PER_BLOCK) for n, c in after.items()}
    assert blocks == {
        7: (0, 7),
        8: (1, 0),
        15: (1, 7),
        16: (2, 0),
        39: (4, 7),
        40: (5, 0),
        47: (5, 7),
        60: (5, 4),
    }  # the last block is open-ended


def test_the_tracker_agrees_with_the_whole_text_also_after_cutting_back():
    text = HEADER + "|:GABc dedc|BAGF GABc|" * 6 + ":|\n"
    tracker = FormTracker(6)
    seen = [tracker.feed(text[: i + 1]) for i in range(len(text))]
    assert seen == form_classes(text, 6)
    cut = len(text) - 40
    tracker.feed(text[:cut])  # the sampler rewinds: the text is cut back, then grows again
    again = [tracker.feed(text[: i + 1]) for i in range(cut, len(text))]
    assert again == form_classes(text, 6)[cut:]


def test_model_inputs_pair_each_character_with_its_class():
    vocab = Vocab.from_text(HEADER + "GABcde|")
    text = HEADER + "GABc|" * 17
    inputs, ids = encode_text(text, vocab, blocks=6)
    assert torch.equal(inputs % len(vocab), ids)
    assert (inputs // len(vocab)).tolist() == form_classes(text, 6)
    assert input_ids(text, vocab, blocks=0) == ids.tolist()


def test_input_table_rows_are_the_character_the_block_and_the_bar():
    config = ModelConfig(vocab_size=5, form=3)
    table = input_table(config, padded=True)
    assert table.shape == (5 * 3 * BARS_PER_BLOCK + 1, 5 + 3 + BARS_PER_BLOCK)
    row = table[2 + 5 * (1 * BARS_PER_BLOCK + 6)]  # character 2, block 1, bar 6
    assert row.nonzero().flatten().tolist() == [2, 5 + 1, 5 + 3 + 6]
    assert table[-1].sum() == 0  # padding: before the text starts
    assert torch.equal(input_table(ModelConfig(vocab_size=5, form=0)), torch.eye(5))


class Recording(torch.nn.Module):
    """A model that remembers the ids it was given."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.config, self.seen = model, model.config, []

    def forward(self, ids, state=None):
        self.seen.append(ids[0])
        return self.inner(ids, state)

    def step(self, ids, state=None):  # the sampler's one-step call
        self.seen.append(ids[0])
        return self.inner.step(ids, state)


def test_the_sampler_feeds_the_classes_that_training_uses():
    vocab = Vocab.from_text(HEADER + "ABcd efga|]:\n")
    torch.manual_seed(0)
    recording = Recording(build_model(ModelConfig(vocab_size=len(vocab), hidden=16, layers=1)))
    tune_model = TuneModel(Checkpoint(recording, vocab, {}))
    options = SamplingRun(0.8, None, 0.9, 600, fix_bars=False, keep_rhythm=True, rng=np.random.default_rng(3))
    [(text, _)] = tune_model.sample_batch(1, header_plan(prime="GABc|" * 18), options)
    fed = torch.cat(recording.seen).tolist()
    assert max(fed) >= 2 * BARS_PER_BLOCK * len(vocab)  # it got past 16 bars
    assert fed == encode_text(TUNE_END + text + TUNE_END, vocab, 6)[0].tolist()[: len(fed)]


def test_counting_by_part_starts_again_after_each_section_bar_line():
    from abcgen.form import Place

    text = "X:1\nT:t\nM:4/4\nL:1/8\nK:G\nD|GABc dedc|B4 G4:|\n|:B|dBdB c2A2|G6:|\n"
    place = Place()
    seen = []
    for ch in text:
        place = place.after(ch)
        seen.append((place.part, place.part_bars))
    assert seen[text.index(":|") + 2] == (1, 0)  # the next part begins after the first :|
    assert seen[text.index("|:") + 2] == (1, 0)  # a |: at the part's start is not a new part
    assert seen[-2] == (1, 3)  # B| dBdB c2A2| G6: three bars of the second part
    assert place.form_class(6, "part") == 2 * 2 * 8  # the last :| ends part 2: part 3, bar 0
