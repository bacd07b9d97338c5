"""The abcgen command line: thin click commands over the library.

Heavy imports (torch, music21, requests) happen inside the commands that need
them, so `abcgen --help` and `abcgen sample` start quickly.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from abcgen.errors import AbcgenError
from abcgen.options import (
    DEVICE_NAMES,
    EVALUATION_TUNES,
    PRECISIONS,
    SAMPLE_TUNES,
    SAMPLING_DEVICE,
    OptionError,
    SamplingOptions,
)

if TYPE_CHECKING:  # types only: the commands import what they use when they run
    from abcgen.export import ExportReport
    from abcgen.train import TrainResult

F = TypeVar("F", bound=Callable[..., Any])  # a command function, under its decorators


class AbcgenGroup(click.Group):
    """Turns AbcgenError (and Ctrl-C) into one line on stderr, no traceback.

    ABCGEN_DEBUG=1 lets the traceback through.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AbcgenError as error:
            if os.environ.get("ABCGEN_DEBUG"):
                raise
            # the library names its parameters (top_k); the command line names its flags (--top-k)
            click.echo(f"Error: {error.flag_message() if isinstance(error, OptionError) else error}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            if os.environ.get("ABCGEN_DEBUG"):
                raise
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


@click.group(cls=AbcgenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="abcgen", prog_name="abcgen")
def cli() -> None:
    """Generate folk tunes in ABC notation with a character-level LSTM."""


def main() -> None:
    try:
        cli(prog_name="abcgen")
    except SystemExit as end:
        if QuickExit.ready:
            quick_exit(end.code)
        raise


class QuickExit:
    """Set by a command once its output is written and closed: the process may then end at
    once. The interpreter's own exit frees torch's modules one by one, about 0.5 s of the
    2.3 s an `abcgen sample -n 1` takes on a 2-core machine (bench/results/wellformed.md)."""

    ready = False


def quick_exit(code: object) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (`| head`): nothing more can be written anyway
        pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def default_of(source: str) -> Any:
    """The value at source: "module:Name.attribute", or "module:function(parameter)" for a
    parameter's default."""
    module, _, path = source.partition(":")
    value: Any = importlib.import_module(module)
    path, _, parameter = path.partition("(")
    for name in path.split("."):
        value = getattr(value, name)
    return inspect.signature(value).parameters[parameter.rstrip(")")].default if parameter else value


class LibraryDefault(click.Option):
    """An option whose default is the library's own (a dataclass field's, a parameter's: see
    default_of), looked up when the command runs or shows its help, so that the module
    holding it (and torch) is imported then, not whenever abcgen starts."""

    def __init__(self, param_decls: Sequence[str] | None = None, *, source: str, **attrs: Any):
        attrs["show_default"] = True
        super().__init__(param_decls, **attrs)
        self.source = source

    def get_default(self, ctx: click.Context, call: bool = True) -> Any:
        self.default = default_of(self.source)
        if isinstance(self.default, tuple):  # a list of names, given as one comma-separated value
            self.default = ",".join(self.default)
        return super().get_default(ctx, call=call)


def library_default(*decls: str, source: str, **attrs: Any) -> Callable[[F], F]:
    return click.option(*decls, cls=LibraryDefault, source=source, **attrs)


class LibraryChoice(click.Choice):
    """A click.Choice of the names at source (see default_of: the architectures in
    abcgen.model's registry, say), read when the command runs or shows its help."""

    def __init__(self, source: str):
        self.source = source
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(default_of(self.source))

    @choices.setter
    def choices(self, value: tuple[str, ...]) -> None:
        pass


# ---- commands are added below, one section per pipeline stage ----


# ---- download ----


@cli.command("download")
@click.argument("name", default="nottingham")
@click.option(
    "--dest",
    type=click.Path(file_okay=False),
    help="Folder to write the files into.  [default: corpora/NAME]",
)
@click.option(
    "--base-url",
    metavar="URL",
    help="Fetch from this mirror instead of the canonical address (also: env ABCGEN_MIRROR).",
)
@click.option("--force", is_flag=True, help="Fetch every file again, even those already present and verified.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary; errors are still shown.")
def download_command(name: str, dest: str | None, base_url: str | None, force: bool, quiet: bool) -> None:
    """Download corpus NAME (default: nottingham) and verify each file's sha256.

    Files already present and verified are skipped, so running again fetches only what
    is missing.
    """
    from abcgen.download import SHIPPED, fetch

    result = fetch(name, dest=dest, base_url=base_url, force=force, progress=not quiet)
    if quiet:
        return
    if name in SHIPPED:
        click.echo(
            f"{name}: nothing to download: music21 ships its {len(result.paths)} files in "
            f"{result.dest}; use the name itself (abcgen corpus {name}, abcgen train {name})",
            err=True,
        )
        return
    total, fetched = len(result.paths), len(result.downloaded)
    if fetched:
        click.echo(
            f"{result.corpus}: {total} files in {result.dest} "
            f"({fetched} downloaded, {total - fetched} already present)",
            err=True,
        )
    else:
        click.echo(
            f"{result.corpus}: all {total} files already present and verified in {result.dest}; "
            "nothing downloaded (--force fetches them again)",
            err=True,
        )


# ---- corpus


@cli.command()
@click.argument("path", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as one JSON object.")
@click.option(
    "--dump",
    type=click.Choice(["train", "val", "test"]),
    help="Print that split's normalised tunes as ABC instead of statistics.",
)
@click.option(
    "--list", "list_names", is_flag=True, help="List the corpora abcgen knows by name (tunes, source, licence) instead."
)
def corpus(path: str | None, as_json: bool, dump: str | None, list_names: bool) -> None:
    """Read, normalise and split the tunes in PATH (a folder, an .abc file, - for stdin, or
    a corpus name from --list)."""
    from abcgen.corpus import join_tunes, load_corpus, summary

    if list_names:
        _list_corpora(as_json)
        return
    if path is None:
        raise click.UsageError("give a PATH (a folder, an .abc file, - or a corpus name), or --list")
    loaded = load_corpus(path)
    for reason, count in loaded.dropped.items():
        click.echo(f"dropped {count} tune(s): {reason}", err=True)
    if dump:
        click.echo(join_tunes(loaded.split(dump), renumber=True), nl=False)
        return
    stats = summary(loaded)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    splits = stats["splits"]
    click.echo(f"corpus      {stats['name']} ({stats['files']} files, fingerprint {stats['fingerprint']})")
    click.echo(
        f"tunes       {stats['tunes']:,} (train {splits['train']:,}, val {splits['val']:,}, test {splits['test']:,})"
    )
    click.echo(f"characters  {stats['characters']:,}")
    click.echo(f"vocabulary  {stats['vocabulary_size']} characters (training split)")
    click.echo("meters      " + ", ".join(f"{m} {n}" for m, n in stats["meters"].items()))
    click.echo("keys        " + ", ".join(f"{k} {n}" for k, n in stats["keys"].items()))


def _list_corpora(as_json: bool) -> None:
    """The named corpora: one line each (name, tunes, where from), the licence below it."""
    from abcgen.download import known_corpora

    rows = known_corpora()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        how = "abcgen download" if row["kind"] == "download" else "in music21, no download"
        click.echo(f"{row['name']:14s}{row['tunes']:>6,} tunes  ({how})  {row['source']}")
        click.echo(f"{'':14s}{'':>6s}        licence: {row['licence']}")


# ---- train and info

DEVICES = click.Choice(DEVICE_NAMES)
TRAIN_CONFIG, MODEL_CONFIG = "abcgen.train:TrainConfig.", "abcgen.model_config:ModelConfig."


@cli.command()
@click.argument("path")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Folder for best.pt, last.pt and metrics.jsonl [default: runs/<corpus folder name>].",
)
@click.option(
    "--epochs",
    type=int,
    default=None,
    help="Passes over the training split [default: 30, or unlimited with --max-time].",
)
@click.option("--max-time", type=float, help="Stop after this many seconds of training.")
@library_default("--batch-size", type=int, source=TRAIN_CONFIG + "batch_size", help="Parallel streams per step.")
@library_default(
    "--seq-len",
    type=int,
    source=TRAIN_CONFIG + "seq_len",
    help="Characters per stream per step (truncated back-propagation length).",
)
@library_default("--lr", type=float, source=TRAIN_CONFIG + "lr", help="Peak learning rate (AdamW).")
@library_default(
    "--weight-decay",
    type=float,
    source=TRAIN_CONFIG + "weight_decay",
    help="AdamW weight decay of the weight matrices.",
)
@click.option("--patience", type=int, help="Stop after this many evaluations without a better validation loss.")
@library_default(
    "--arch", type=LibraryChoice("abcgen.model:ARCHITECTURES"), source=MODEL_CONFIG + "arch", help="Model architecture."
)
@library_default(
    "--layers", type=int, source=MODEL_CONFIG + "layers", help="Recurrent layers (transformer: decoder blocks)."
)
@library_default(
    "--hidden",
    type=int,
    source=MODEL_CONFIG + "hidden",
    help="Units per layer (bilstm-window: per direction; transformer: width).",
)
@library_default(
    "--dropout", type=float, source=MODEL_CONFIG + "dropout", help="Dropout between layers and before the output."
)
@library_default(
    "--heads",
    type=int,
    source=MODEL_CONFIG + "heads",
    help="Attention heads (lstm-attention, transformer); must divide --hidden.",
)
@library_default(
    "--window",
    type=int,
    source=MODEL_CONFIG + "window",
    help="lstm-attention: LSTM outputs attended over; bilstm-window: characters read per "
    "prediction (costs --window times the work).",
)
@library_default(
    "--kernel",
    type=int,
    source=MODEL_CONFIG + "kernel",
    help="conv-lstm: width of the causal convolution in characters.",
)
@library_default(
    "--context", type=int, source=MODEL_CONFIG + "context", help="transformer: characters each position attends over."
)
@click.option(
    "--form/--no-form",
    default=True,
    show_default=True,
    help="Tell the model, beside each character, how many bars of its tune are complete.",
)
@library_default(
    "--form-count",
    type=LibraryChoice("abcgen.form:COUNTS"),
    source=MODEL_CONFIG + "form_count",
    help="With --form, count bars from the tune's start, or from the part's (and which part).",
)
@library_default(
    "--precision",
    type=click.Choice(PRECISIONS),
    source=TRAIN_CONFIG + "precision",
    help="bf16 autocast where the hardware supports it (auto), or plain float32.",
)
@library_default(
    "--seed",
    type=int,
    source=TRAIN_CONFIG + "seed",
    help="Random seed: with --epochs rather than --max-time, same seed, same model.",
)
@library_default(
    "--device",
    type=DEVICES,
    source=TRAIN_CONFIG + "device",
    help="Where to train: auto is a CUDA GPU when there is one, else Apple's MPS, else the CPU.",
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Train in N processes on this machine with DistributedDataParallel (gloo on CPUs, "
    "NCCL with a GPU each); --batch-size streams in all, split between them. On several "
    "machines, start `torchrun ... -m abcgen train` instead.",
)
@click.option(
    "--init",
    "init",
    metavar="MODEL",
    help="Fine-tune: start from this trained model (a .pt file, or `shipped` for the model "
    "in the package) instead of random weights; it decides the architecture, size and "
    "form inputs, and the defaults for small collections apply (abcgen.finetune's "
    "FINETUNE_DEFAULTS: a higher learning rate, a smaller batch, early stopping; the README lists them).",
)
@click.option("--resume", is_flag=True, help="Continue the run saved in OUT/last.pt.")
@click.option("--force", is_flag=True, help="Replace a model already in OUT.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-epoch lines.")
@click.pass_context
def train(
    ctx: click.Context,
    path: str,
    out_dir: str | None,
    epochs: int | None,
    max_time: float | None,
    batch_size: int,
    seq_len: int,
    lr: float,
    weight_decay: float,
    patience: int | None,
    arch: str,
    layers: int,
    hidden: int,
    dropout: float,
    heads: int,
    window: int,
    kernel: int,
    context: int,
    form: bool,
    form_count: str,
    precision: str,
    seed: int,
    device: str,
    nproc: int,
    init: str | None,
    resume: bool,
    force: bool,
    quiet: bool,
) -> None:
    """Train a character model on the ABC tunes in PATH (a folder, an .abc file, or a corpus
    name from `abcgen corpus --list`)."""
    from abcgen.download import known_corpora
    from abcgen.finetune import FINETUNE_DEFAULTS, recorded_init
    from abcgen.form import FORM_BLOCKS
    from abcgen.train import TrainConfig, TrainingInterrupted, train as run_training

    named = not Path(path).exists() and path in {row["name"] for row in known_corpora()}
    if not Path(path).exists() and not named:
        raise AbcgenError(
            f"{path} does not exist; run `abcgen download` to fetch the Nottingham corpus, "
            "or name a corpus from `abcgen corpus --list`"
        )
    stem = path if named else (Path(path).resolve().stem or "corpus")
    out = Path(out_dir or Path("runs") / (f"{stem}-finetuned" if init else stem))
    given = lambda name: ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)  # noqa: E731
    settings: dict[str, Any] = dict(
        batch_size=batch_size,
        seq_len=seq_len,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        seed=seed,
        device=device,
        precision=precision,
    )
    if init or (resume and recorded_init(out / "last.pt")):  # fine-tuning, or resuming one
        settings.update({key: value for key, value in FINETUNE_DEFAULTS.items() if key != "epochs" and not given(key)})
        default_epochs = FINETUNE_DEFAULTS["epochs"]
    else:
        default_epochs = TrainConfig.epochs
    config = TrainConfig(
        epochs=epochs if epochs is not None else (None if max_time else default_epochs), max_time=max_time, **settings
    )
    model_config = {
        "arch": arch,
        "layers": layers,
        "hidden": hidden,
        "dropout": dropout,
        "heads": heads,
        "window": window,
        "kernel": kernel,
        "context": context,
        "form": FORM_BLOCKS if form else 0,
        "form_count": form_count,
    }
    if init:  # only what was asked for: the rest comes from the starting model
        model_config = {key: value for key, value in model_config.items() if given(key)}
    from abcgen.distributed import TrainingFailed, env_world, launch_training, should_report

    training: Callable[..., TrainResult] = run_training
    if nproc > 1:  # the same training, in nproc processes started through torchrun's launcher
        training = partial(launch_training, nproc)
    world = env_world()  # under torchrun: this process's rank; rank 0 speaks for all
    try:
        result = training(
            path,
            out,
            model_config,
            config,
            resume=resume,
            force=force,
            progress=not quiet,
            init=init if not resume else None,
        )
    except TrainingInterrupted as stop:
        limits = "".join(
            f" {flag} {value:g}"
            for flag, value in (
                ("--epochs", epochs),
                ("--max-time", max_time),
                ("--nproc", nproc if nproc > 1 else None),
            )
            if value is not None
        )
        launcher = "torchrun <the same options> -m abcgen" if world.distributed else "abcgen"
        if world.main:
            click.echo(
                f"Stopped; progress saved in {stop.last_path}. Resume with:\n"
                f"  {launcher} train {shlex.quote(str(path))} --out {shlex.quote(str(out))}"
                f"{limits} --resume",
                err=True,
            )
        sys.exit(128 + stop.signum)
    except TrainingFailed as failed:
        if failed.reported:  # a training process has said why
            sys.exit(1)
        raise
    except AbcgenError as error:
        if not should_report(error, world):
            sys.exit(1)
        raise
    if not world.main:
        return
    figure = "best training-set loss (no validation tunes)" if result.validation_is_training else "best validation"
    click.echo(
        f"Done ({result.stopped_because}): {figure} {result.best_val_loss / math.log(2):.3f} bpc, "
        f"{result.best_val_acc:.1%} accuracy, {result.elapsed_s:.0f} s of training. "
        f"Model: {result.best_path}. Sample from it with:\n"
        f"  abcgen sample --model {shlex.quote(str(result.best_path))}",
        err=True,
    )


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the information as one JSON object.")
def info(model: str, as_json: bool) -> None:
    """Show a model's configuration, vocabulary size, parameter count and metrics."""
    from abcgen.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(model)
    details = {
        "path": model,
        "config": checkpoint.config.to_dict(),
        "vocabulary_size": len(checkpoint.vocab),
        "parameters": checkpoint.model.num_parameters(),
        **checkpoint.meta,
    }
    if as_json:
        click.echo(json.dumps(details, indent=2))
        return
    for key, value in details.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
        click.echo(f"{key:20s}{value}")


# ---- sample and evaluate


S = SamplingOptions  # its defaults are the command line's


def sampling_options(command: F) -> F:
    """The options that sample and evaluate share, declared once (as simonw/llm does)."""
    options = [
        click.option(
            "--model",
            "model_path",
            type=click.Path(dir_okay=False),
            help="Model file [default: $ABCGEN_MODEL, else the shipped Nottingham model].",
        ),
        click.option(
            "--temperature",
            "-t",
            type=float,
            default=S.temperature,
            show_default=True,
            help="Higher is more adventurous, lower more conventional; 0.01 to 10.",
        ),
        click.option("--top-k", type=int, default=S.top_k, help="Sample only among the k likeliest characters."),
        click.option(
            "--seed", type=int, default=S.seed, help="Random seed: the same seed and options give the same tunes."
        ),
        click.option(
            "--fix-bars/--no-fix-bars",
            default=S.fix_bars,
            show_default=True,
            help="Write again, as the tune is written, any bar whose length does not fit the meter, "
            "and any meter or key in the header that the model's training tunes never used; "
            "with evaluate, --no-fix-bars measures the model alone.",
        ),
        click.option(
            "--keep-rhythm/--plain-temperature",
            default=S.keep_rhythm,
            show_default=True,
            help="Apply the temperature among pitches only, so that note lengths, "
            "barlines and tune endings keep the model's own odds.",
        ),
        click.option(
            "--pitch-top-p",
            type=float,
            default=S.pitch_top_p,
            show_default=True,
            help="With --keep-rhythm, write a pitch only from the likeliest ones that hold this "
            "share of the pitch odds (nucleus sampling); 1 allows any.",
        ),
        click.option(
            "--structure",
            default=S.structure,
            show_default=True,
            help="The form to write each tune to: parts as letters, a doubled letter for a repeated "
            "part, bars after a letter when not 8 (AABB, AAB, A16B16, AABBCC); auto draws one "
            "from the training tunes' forms in the tune's meter; none leaves form to the model.",
        ),
        click.option("--device", type=DEVICES, default=SAMPLING_DEVICE, show_default=True, help="Where to sample."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _split_formats(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    from abcgen.export import FORMATS

    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise click.BadParameter(f"{', '.join(unknown) or 'none given'}: choose from {', '.join(FORMATS)}")
    return names


FORMATS_OPTION = library_default(
    "--format",
    "-f",
    "formats",
    source="abcgen.export:DEFAULT_FORMATS",
    callback=_split_formats,
    help="Comma-separated: midi, musicxml, svg, pdf (pdf needs LilyPond or MuseScore).",
)


@cli.command()
@sampling_options
@click.option("-n", "--num", type=int, default=SAMPLE_TUNES, show_default=True, help="How many tunes.")
@click.option(
    "--max-chars",
    type=int,
    default=S.max_chars,
    show_default=True,
    help="Longest tune; a longer one is cut after its last complete bar.",
)
@click.option("--meter", "-m", default=S.meter, help="Meter to write the tune in, e.g. 6/8 (the M: field).")
@click.option("--key", "-k", default=S.key, help="Key, e.g. D, Ador, Emin (the K: field).")
@click.option("--title", default=S.title, help="Title (the T: field).")
@click.option("--length", default=S.length, help="Unit note length, e.g. 1/8 (the L: field).")
@click.option("--prime", default=S.prime, help="ABC to start from (a header or first bars), or @FILE.")
@click.option(
    "--check/--no-check",
    default=S.check,
    show_default=True,
    help="Regenerate tunes that fail the ABC check (parse, notes, bar lengths).",
)
@click.option(
    "--retries", type=int, default=S.retries, show_default=True, help="How many times to regenerate failing tunes."
)
@click.option(
    "--max-seconds",
    type=float,
    default=S.max_seconds,
    help="Stop after this long, cutting the tunes where they stand [default: 30 + 2 a tune].",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the tunes to this file instead of stdout.")
@click.option(
    "--export",
    "export_dir",
    type=click.Path(file_okay=False),
    help="Also write MIDI, MusicXML and SVG for each tune into this folder.",
)
@FORMATS_OPTION
@click.option("--force", is_flag=True, help="Let --export overwrite files that exist already.")
@click.option("--quiet", "-q", is_flag=True, help="No messages on stderr.")
def sample(
    model_path: str | None,
    num: int,
    device: str,
    output: str | None,
    export_dir: str | None,
    formats: list[str],
    force: bool,
    quiet: bool,
    **settings: Any,
) -> None:
    """Write new tunes as ABC on stdout."""
    from abcgen.sample import load_model

    say = _say(quiet)
    model = load_model(model_path, device=device, log=say)
    tunes = model.generate(num, SamplingOptions(**settings), log=say)
    text = "\n\n".join(tunes) + "\n"
    if output:
        from abcgen.files import write_text_atomic

        write_text_atomic(output, text)
        say(f"wrote {len(tunes)} tune(s) to {output}")
    else:
        click.echo(text, nl=False)
    if export_dir:
        from abcgen.export import export_tunes

        report = export_tunes(text, export_dir, formats, force=force, progress=not quiet)
        _show_export(report, export_dir, quiet, paths_to_stdout=False)
    QuickExit.ready = True


def _say(quiet: bool) -> Callable[[str], None]:
    """The message callback: one line on stderr, or nothing with --quiet."""
    return (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))


@cli.command()
@click.argument("corpus_path", metavar="CORPUS", type=click.Path(exists=True))
@sampling_options
@click.option("-n", "--num", type=int, default=EVALUATION_TUNES, show_default=True, help="How many tunes to sample.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Also write the report as JSON to this file (- prints it instead of the table).",
)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(file_okay=False),
    help="Write a PNG chart per feature into this folder (needs: pip install 'abcgen[plots]').",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress or messages on stderr.")
def evaluate(
    corpus_path: str,
    model_path: str | None,
    num: int,
    device: str,
    json_path: str | None,
    plots_dir: str | None,
    quiet: bool,
    **settings: Any,
) -> None:
    """Sample tunes without the check and compare them with CORPUS: validity, musical
    statistics against the training tunes, and how much they copy from them."""
    from abcgen.evaluate import evaluate_model, format_report, require_matplotlib, write_json, write_plots

    if plots_dir:
        require_matplotlib()  # before minutes of work, not after
    say = _say(quiet)
    report = evaluate_model(
        corpus_path,
        model_path,
        num,
        SamplingOptions(**settings),
        device=device,
        log=say,
        progress=not quiet and sys.stderr.isatty(),
    )
    if json_path == "-":
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_report(report), nl=False)
    if json_path and json_path != "-":
        write_json(report, json_path)
        say(f"wrote the report to {json_path}")
    if plots_dir:
        paths = write_plots(report, plots_dir)
        say(f"wrote {len(paths)} charts to {plots_dir}")


# ---- experiment


EXPERIMENT = "abcgen.experiment:run_experiment"


@cli.command()
@click.argument("corpus_path", metavar="CORPUS", type=click.Path(exists=True))
@library_default(
    "--archs",
    source=EXPERIMENT + "(archs)",
    help="Comma-separated architectures to compare, each with optional model options, "
    "e.g. lstm:layers=3 or bilstm-window:window=8:hidden=64.",
)
@library_default(
    "--budget", type=float, source=EXPERIMENT + "(budget)", help="Seconds of training for every architecture and seed."
)
@library_default(
    "--seeds",
    type=int,
    source=EXPERIMENT + "(seeds)",
    help="Repeat every run with seeds 0..N-1 and report mean ± standard deviation.",
)
@library_default(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    source=EXPERIMENT + "(out_dir)",
    help="Folder for results.md, results.json and every run's model.",
)
@click.option(
    "--corpus-mix",
    help="Also train on CORPUS's training split mixed with this collection "
    "(a corpus name such as oneills-1850, see `abcgen corpus --list`, or a "
    "path to .abc files); both are judged on CORPUS's test split.",
)
@click.option(
    "-n",
    "--num",
    type=int,
    default=EVALUATION_TUNES,
    show_default=True,
    help="Tunes sampled per run for validity, musical statistics and copying.",
)
@click.option(
    "--temperature",
    "-t",
    type=float,
    default=S.temperature,
    show_default=True,
    help="Higher is more adventurous, lower more conventional; 0.01 to 10.",
)
@library_default(
    "--device",
    type=DEVICES,
    source=TRAIN_CONFIG + "device",
    help="Where to train each model (auto: a CUDA GPU when there is one); the models are "
    "sampled and scored on the CPU.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress messages on stderr.")
def experiment(
    corpus_path: str,
    archs: str,
    budget: float,
    seeds: int,
    out_dir: str,
    corpus_mix: str | None,
    num: int,
    temperature: float,
    device: str,
    quiet: bool,
) -> None:
    """Train several architectures for the same time on the same splits and compare them
    in one table (printed, and written to OUT as Markdown and JSON)."""
    from abcgen.device import pick_device
    from abcgen.experiment import markdown_table, run_experiment
    from abcgen.train import TrainingInterrupted

    say = _say(quiet)
    try:
        pick_device(device)  # an unavailable device is refused before any work
        report = run_experiment(
            corpus_path,
            archs,
            budget=budget,
            seeds=seeds,
            out_dir=out_dir,
            train_options={"device": device},
            corpus_mix=corpus_mix,
            n=num,
            temperature=temperature,
            log=say,
        )
    except TrainingInterrupted as stop:
        sys.exit(128 + stop.signum)
    click.echo(markdown_table(report), nl=False)
    say(f"wrote {out_dir}/results.md and {out_dir}/results.json")


# ---- export


@cli.command("export")
@click.argument("input_file", metavar="INPUT", type=click.File("rb"))  # decoded as the corpus reader decodes files
@click.option(
    "--out-dir",
    "-o",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Folder for the files; created when missing.",
)
@FORMATS_OPTION
@click.option("--force", is_flag=True, help="Overwrite files that exist already.")
@click.option("--chords", is_flag=True, help="Play the chord symbols in the MIDI, as a second track.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Worker processes; 0: one per CPU core when there are many tunes.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress, summary or warnings on stderr.")
def export_command(
    input_file: IO[bytes], out_dir: str, formats: list[str], force: bool, chords: bool, jobs: int, quiet: bool
) -> None:
    """Write MIDI, MusicXML and engraved SVG for every tune in INPUT (an .abc file, - for stdin).

    Files are named from each tune's X: number and title (003-the-american-dwarf.mid) and
    listed on stdout. A tune that cannot be converted is named on stderr, the others are
    still written, and the exit status is 1.
    """
    from abcgen.export import export_tunes

    report = export_tunes(
        input_file.read(), out_dir, formats, force=force, chords=chords, jobs=jobs or None, progress=not quiet
    )
    _show_export(report, out_dir, quiet, paths_to_stdout=True)


def _show_export(report: ExportReport, out_dir: str, quiet: bool, paths_to_stdout: bool) -> None:
    """List the written files, warnings and failures; exit 1 when a tune failed."""
    for path in report.written:
        if paths_to_stdout or not quiet:
            click.echo(str(path), err=not paths_to_stdout)
    if not quiet:
        for warning in report.warnings:
            click.echo(f"Warning: {warning}", err=True)
    for failure in report.failed:
        click.echo(f"Failed: {failure}", err=True)
    tunes = f"{report.tunes} tune{'s' if report.tunes != 1 else ''}"
    if not quiet:
        files = f"{len(report.written)} file{'s' if len(report.written) != 1 else ''}"
        done = f"{report.tunes - len(report.failed)} of {tunes}" if report.failed else tunes
        click.echo(f"wrote {files} for {done} to {out_dir}", err=True)
    if report.failed:
        raise AbcgenError(f"{len(report.failed)} of {tunes} could not be exported (see above)")


# ---- serve ----


@cli.command("serve")
@library_default(
    "--host",
    source="abcgen.serve:run(host)",
    help="Address to listen on; anything but 127.0.0.1/localhost makes the page reachable from other machines.",
)
@library_default("--port", type=click.IntRange(1, 65535), source="abcgen.serve:run(port)", help="Port to listen on.")
@click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False),
    help="Checkpoint to write with.  [default: $ABCGEN_MODEL or the shipped model]",
)
@click.option(
    "--library",
    "library_path",
    type=click.Path(dir_okay=False),
    help="SQLite file of kept tunes.  [default: $ABCGEN_LIBRARY or ~/.local/share/abcgen/library.sqlite3]",
)
@click.option(
    "--open/--no-open",
    "open_browser",
    default=False,
    show_default=True,
    help="Open the page in the default web browser.",
)
def serve_command(host: str, port: int, model_path: str | None, library_path: str | None, open_browser: bool) -> None:
    """A local web page to write, hear, read, edit, vary, download and keep tunes.

    Prints the address; Ctrl-C stops it. Everything runs on this machine, offline.
    """
    from abcgen.serve import run

    run(
        host=host,
        port=port,
        model_path=model_path,
        library_path=library_path,
        open_browser=open_browser,
        log=lambda message: click.echo(message, err=True),
    )


# ---- library ----


@cli.group("library")
def library_group() -> None:
    """The tune library that `abcgen serve` keeps (SQLite)."""


@library_group.command("export")
@click.option(
    "--library",
    "library_path",
    type=click.Path(dir_okay=False),
    help="SQLite file of kept tunes.  [default: $ABCGEN_LIBRARY or ~/.local/share/abcgen/library.sqlite3]",
)
def library_export(library_path: str | None) -> None:
    """Print every kept tune as one ABC tunebook (X:1, X:2, ...) on stdout."""
    from abcgen.serve.library import Library, default_library_path

    path = Path(library_path) if library_path else default_library_path()
    if not path.exists():
        raise AbcgenError(f"no tune library at {path}; keep a tune with `abcgen serve` first, or give --library")
    library = Library(path)
    click.echo(library.tunebook(), nl=False)
    click.echo(f"{library.count()} tune(s) from {path}", err=True)
