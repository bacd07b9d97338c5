"""SamplingOptions: keyword-only, its own checks, and the one source of the command line's
sampling defaults; library errors name parameters, the command line names flags."""

import dataclasses

import click
import pytest
from click.testing import CliRunner

from abcgen.cli import cli
from abcgen.errors import AbcgenError
from abcgen.options import OptionError, SamplingOptions


def test_options_are_keyword_only_and_checked():
    with pytest.raises(TypeError):
        SamplingOptions(0.8)  # type: ignore[misc]
    with pytest.raises(OptionError, match="^top_k must be at least 1$"):
        SamplingOptions(top_k=0)
    with pytest.raises(AbcgenError, match="^temperature must be between 0.01 and 10$"):
        SamplingOptions(temperature=0)
    with pytest.raises(AbcgenError, match="^meter 'abc' is not an ABC meter"):
        SamplingOptions(meter="abc")
    with pytest.raises(AbcgenError, match="structure 'AB1x'"):
        SamplingOptions(structure="AB1x")
    with pytest.raises(OptionError, match="^seed must be a whole number from 0 up$"):
        SamplingOptions(seed=-1)
    assert SamplingOptions(seed=0).seed == 0
    assert dataclasses.replace(SamplingOptions(), temperature=1.2).temperature == 1.2


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_cli_sampling_defaults_are_the_options_defaults(command):
    context = click.Context(cli.commands[command])
    params = {param.name: param for param in cli.commands[command].params}
    defaults = SamplingOptions()
    for field in dataclasses.fields(SamplingOptions):
        if field.name in params:
            assert params[field.name].get_default(context) == getattr(defaults, field.name), field.name
    assert {"temperature", "top_k", "seed", "fix_bars", "keep_rhythm", "pitch_top_p", "structure"} <= set(params)


def test_library_names_the_parameter_and_the_cli_the_flag():
    assert OptionError("max_chars", "must be at least 100").flag_message() == "--max-chars must be at least 100"
    assert OptionError("n", "must be at least 1").flag_message() == "-n must be at least 1"
    result = CliRunner().invoke(cli, ["sample", "--pitch-top-p", "0"])
    assert result.exit_code == 1 and result.output.strip().endswith(
        "Error: --pitch-top-p must be greater than 0 and at most 1"
    ), result.output
