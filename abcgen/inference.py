"""A trained model, one character at a time, for the sampler: next-character logits and the
state to carry, in numpy arrays, from one of two engines behind one interface:

    with steps.running():                   # one CPU thread, no autograd
        logits, state = steps.start(ids, n) # n rows that have read ids (the start of a tune)
    logits, state = steps.step(ids, state)  # ids: (n,) int64 input ids; logits: (n, vocab)
    state = steps.select(state, rows)       # keep some rows (finished tunes leave)
    state = steps.merge([a, b])             # join row pieces again (the sampler's rewinds)

- TorchSteps: any architecture, through its torch module (abcgen.model).
- OnnxSteps: an LSTM or GRU exported to ONNX beside its checkpoint (export_onnx) and run by
  ONNX Runtime. `import torch` takes 1.6-2.7 s on a 2-core machine, longer than writing a
  tune; onnxruntime 0.2 s, and its step is faster too (bench/results). The shipped model
  comes with its export, so `abcgen sample` starts without torch.

An export is used in place of its checkpoint only where it is known to be that checkpoint's:
it records the SHA-256 of the checkpoint file it was made from (with the checkpoint's
config, vocabulary and metadata, so that nothing else needs reading).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager, Protocol

import numpy as np

from abcgen.errors import AbcgenError
from abcgen.model_config import ModelConfig
from abcgen.vocab import Vocab

if TYPE_CHECKING:
    from abcgen.model import CharModel, CharRNN

EXPORTABLE = ("lstm", "gru")  # one-step graphs of plain recurrent layers
METADATA_KEY = "abcgen"


class Steps(Protocol):
    """The engine interface (see the module doc)."""

    def running(self) -> ContextManager: ...
    def start(self, ids: list[int], n: int) -> tuple[np.ndarray, Any]: ...
    def step(self, ids: np.ndarray, state: Any) -> tuple[np.ndarray, Any]: ...
    def select(self, state: Any, rows: list[int]) -> Any: ...
    def merge(self, states: list) -> Any: ...


def export_path(checkpoint_path: str | Path) -> Path:
    """Where a checkpoint's ONNX export lives: beside it, as NAME.onnx."""
    return Path(checkpoint_path).with_suffix(".onnx")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Exported:
    """A checkpoint's ONNX export, opened: what sampling needs, without torch."""

    config: ModelConfig
    vocab: Vocab
    meta: dict
    steps: OnnxSteps


def open_export(checkpoint_path: Path, log: Callable[[str], None] | None = None) -> Exported | None:
    """The export of the checkpoint at checkpoint_path, or None where there is none that
    was made from this very file (or where onnxruntime is not installed); log, if given,
    hears why an export that is there is not used."""
    onnx_path = export_path(checkpoint_path)
    if not (onnx_path.is_file() and checkpoint_path.is_file()):
        return None
    try:
        import onnxruntime
    except ImportError:
        return None
    again = f"export it again: python -m abcgen.inference {checkpoint_path}"
    try:
        session = onnxruntime.InferenceSession(
            str(onnx_path), one_thread(onnxruntime), providers=["CPUExecutionProvider"]
        )
        record = json.loads(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "{}"))
    except Exception as error:  # a truncated file, or one from a newer ONNX than this runtime reads
        if log:
            log(f"Warning: {onnx_path} cannot be read ({str(error).strip()[:120]}); sampling through torch; {again}")
        return None
    if record.get("checkpoint_sha256") != file_sha256(checkpoint_path):
        if log:
            log(
                f"Warning: {onnx_path} was exported from another {checkpoint_path.name}; sampling through torch; {again}"
            )
        return None
    config = ModelConfig.from_dict(record["config"])
    return Exported(config, Vocab.from_dict(record["vocab"]), record["meta"], OnnxSteps(session, config))


def one_thread(onnxruntime: Any) -> Any:
    """Session options for one thread: a step is a few small matrix products, and a second
    thread costs more in hand-over than it saves (the torch engine runs on one, too)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return options


class OnnxSteps:
    """An exported LSTM or GRU step in ONNX Runtime. State: (h,) or (h, c), each an array of
    shape (layers, rows, hidden), as torch's recurrent layers keep it."""

    def __init__(self, session: Any, config: ModelConfig):
        self.session = session
        self.state_names = [node.name for node in session.get_inputs()[1:]]
        self.state_shape = (config.layers, config.hidden)

    def running(self) -> ContextManager:
        return contextlib.nullcontext()

    def start(self, ids: list[int], n: int) -> tuple[np.ndarray, tuple]:
        layers, hidden = self.state_shape
        state = tuple(np.zeros((layers, n, hidden), np.float32) for _ in self.state_names)
        logits = np.zeros(0)
        for i in ids:
            logits, state = self.step(np.full(n, i, np.int64), state)
        return logits, state

    def step(self, ids: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        logits, *new_state = self.session.run(None, {"ids": ids, **dict(zip(self.state_names, state))})
        return logits, tuple(new_state)

    def select(self, state: tuple, rows: list[int]) -> tuple:
        return tuple(part[:, rows] for part in state)

    def merge(self, states: list[tuple]) -> tuple:
        return tuple(np.concatenate(parts, axis=1) for parts in zip(*states))


class TorchSteps:
    """Any architecture's torch module, one step at a time. State: the model's own (torch
    tensors)."""

    def __init__(self, model: CharModel):
        import torch

        self.torch, self.model = torch, model.eval()
        self.device = next(model.parameters()).device

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        with self.torch.no_grad(), one_cpu_thread():
            yield

    def start(self, ids: list[int], n: int) -> tuple[np.ndarray, Any]:
        logits, state = self.model(self.torch.tensor([ids], device=self.device).expand(n, -1))
        return self.numpy(logits), state

    def step(self, ids: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        logits, state = self.model.step(self.torch.from_numpy(ids).to(self.device).unsqueeze(1), state)
        return self.numpy(logits), state

    def select(self, state: Any, rows: list[int]) -> Any:
        return self.model.select_state(state, self.torch.tensor(rows, device=self.device))

    def merge(self, states: list) -> Any:
        return self.model.merge_states(states)

    @staticmethod
    def numpy(logits: Any) -> np.ndarray:
        return logits[:, -1].float().cpu().numpy()


@contextlib.contextmanager
def one_cpu_thread() -> Iterator[None]:
    """Run torch on one CPU thread: a sampling step is a few small matrix products, and
    a second thread costs more in hand-over than it saves (on a busy 2-core machine a step
    took 20.2 against 0.66 ms, 100 tunes 8.2 against 1.8 s: bench/results/sampling.md)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def export_onnx(checkpoint_path: str | Path) -> Path:
    """Export a checkpoint's one-step graph to NAME.onnx beside it, with what sampling reads
    of the checkpoint. Needs torch's ONNX exporter: `pip install 'abcgen[onnx]'`."""
    import torch

    from abcgen.checkpoint import load_checkpoint

    checkpoint_path = Path(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path)
    config = checkpoint.config
    if config.arch not in EXPORTABLE:
        raise AbcgenError(f"only {' and '.join(EXPORTABLE)} models can be exported, not {config.arch}")
    lstm = config.arch == "lstm"
    step = OneStep(checkpoint.model).eval()  # type: ignore[arg-type]  # an lstm or gru: a CharRNN
    rows = torch.export.Dim("rows")
    # distinct tensors: an example state whose h and c were one tensor exported as one input
    states = tuple(torch.zeros(config.layers, 2, config.hidden) for _ in range(2 if lstm else 1))
    names = ["h", "c"][: len(states)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on its own internals
            program = torch.onnx.export(
                step,
                (torch.zeros(2, dtype=torch.long), *states),
                input_names=["ids", *names],
                output_names=["logits", *[f"{name}_out" for name in names]],
                dynamic_shapes={"ids": {0: rows}, "state": tuple({1: rows} for _ in states)},
                dynamo=True,
                verbose=False,
            )
    except ImportError as error:
        raise AbcgenError(f"exporting needs torch's ONNX exporter ({error}): pip install 'abcgen[onnx]'") from None
    record = {
        "checkpoint_sha256": file_sha256(checkpoint_path),
        "config": config.to_dict(),
        "vocab": checkpoint.vocab.to_dict(),
        "meta": checkpoint.meta,
    }
    assert program is not None  # dynamo=True always returns the program
    program.model.metadata_props[METADATA_KEY] = json.dumps(record)
    out = export_path(checkpoint_path)
    program.save(str(out), external_data=False)
    return out


def OneStep(model: CharRNN) -> Any:
    """The model's step as a module of plain tensors: (ids, *state) -> (logits, *state).
    Its input table goes in as bytes (a quarter of the float table's size: 0.4 of 1.6 MB
    for the shipped model), turned into floats for the rows read."""
    import torch

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("table", model.get_buffer("one_hot_table").to(torch.uint8))

        def forward(self, ids: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
            rows = self.get_buffer("table")[ids].float()
            logits, new_state = model.step_inputs(rows, state if len(state) > 1 else state[0])
            return (logits[:, 0], *(new_state if isinstance(new_state, tuple) else (new_state,)))

    return Step()


def main() -> None:
    """python -m abcgen.inference MODEL.pt ...: write each checkpoint's export beside it."""
    import sys

    if len(sys.argv) < 2:
        sys.exit("usage: python -m abcgen.inference MODEL.pt [MODEL.pt ...]")
    for name in sys.argv[1:]:
        try:
            print(export_onnx(name))
        except AbcgenError as error:
            sys.exit(f"Error: {error}")


if __name__ == "__main__":
    main()
