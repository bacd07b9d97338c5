"""Device and precision choice, and checkpoints that move between devices, tested on the CPU:
the GPU answers are simulated by patching what torch reports about the hardware."""

import pytest
import torch
from click.testing import CliRunner

from abcgen import device, distributed
from abcgen.checkpoint import load_checkpoint
from abcgen.cli import cli
from abcgen.device import cpu_tensors, pick_device, use_bf16
from abcgen.errors import AbcgenError
from abcgen.train import TrainConfig, train


def fake_gpu(monkeypatch, count=1, bf16=True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)


def test_auto_picks_cuda_when_there_is_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    fake_gpu(monkeypatch)
    assert pick_device("auto") == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")


def test_a_missing_device_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AbcgenError, match="device 'cuda' is not available here.*--device cpu or auto"):
        pick_device("cuda")
    for command in (["sample", "--device", "cuda"], ["experiment", ".", "--device", "cuda"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 1 and result.output.startswith("Error: device 'cuda' is not available")


def test_precision_choice(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    fake_gpu(monkeypatch, bf16=True)
    assert use_bf16("auto", cuda) and use_bf16("bf16", cuda) and not use_bf16("fp32", cuda)
    fake_gpu(monkeypatch, bf16=False)  # a GPU older than Ampere: fp32 unless bf16 is forced
    assert not use_bf16("auto", cuda)
    with pytest.raises(AbcgenError, match="bf16 is not supported on this cuda; use --precision fp32"):
        use_bf16("bf16", cuda)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert not use_bf16("auto", cpu)


def test_each_process_gets_its_own_gpu_or_a_clear_refusal(monkeypatch):
    fake_gpu(monkeypatch, count=1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(distributed.LocalError, match="1 GPU\\(s\\): start at most 1 per machine"):
        distributed.join("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    with pytest.raises(AbcgenError, match="not mps"):
        distributed.join("mps")
    assert distributed.world().size == 1  # nothing joined


def test_checkpoints_hold_only_cpu_tensors_and_resume_on_the_device_asked_for(tiny_abc, tmp_path):
    config = TrainConfig(epochs=1, batch_size=4, seq_len=16, warmup_steps=2, precision="fp32", device="cpu", seed=1)
    model = {"hidden": 16, "layers": 1, "dropout": 0.0}
    train(tiny_abc, tmp_path / "run", model, config, progress=False)
    payload = torch.load(tmp_path / "run" / "last.pt", weights_only=True)

    def devices(obj):
        if isinstance(obj, torch.Tensor):
            yield obj.device.type
        elif isinstance(obj, dict):
            for value in obj.values():
                yield from devices(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                yield from devices(value)

    found = set(devices(payload))
    assert found == {"cpu"}
    assert payload["training"]["optimizer"]["state"], "the optimizer state is saved"
    # A model loads onto the device asked for, whichever device trained it.
    assert next(load_checkpoint(tmp_path / "run" / "best.pt", device="cpu").model.parameters()).device.type == "cpu"
    resumed = train(
        tiny_abc, tmp_path / "run", model, TrainConfig(**{**config.__dict__, "epochs": 2}), resume=True, progress=False
    )
    assert resumed.epochs == 2


def test_cpu_tensors_moves_nested_state():
    nested = {"a": [torch.ones(2), (torch.zeros(1), 3)], "b": "text"}
    moved = cpu_tensors(nested)
    assert isinstance(moved["a"], list) and isinstance(moved["a"][1], tuple)
    assert torch.equal(moved["a"][0], torch.ones(2)) and moved["a"][1][1] == 3 and moved["b"] == "text"


def test_auto_precision_keeps_the_gru_in_fp32_on_a_bf16_cpu(monkeypatch):
    """torch's CPU GRU has no fused kernel: bf16 adds casts at every time step."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert use_bf16("auto", cpu, "lstm") and use_bf16("auto", cpu)
    assert not use_bf16("auto", cpu, "gru")
    assert use_bf16("bf16", cpu, "gru")  # asked for: given
    fake_gpu(monkeypatch, bf16=True)  # cuDNN fuses the GRU: bf16 stays the GPU's choice
    assert use_bf16("auto", torch.device("cuda"), "gru")


def machine(monkeypatch, cores, others_per_second):
    """A machine of `cores` cores on which other processes keep others_per_second()
    cores busy (as /proc/stat would say); this process itself uses no CPU time."""
    clock = {"busy": 0.0, "now": 0.0}

    def busy_seconds():
        return clock["busy"]

    def sleep(seconds):
        clock["now"] += seconds
        clock["busy"] += others_per_second() * seconds

    monkeypatch.setattr(device, "cpu_cores", lambda: cores)
    monkeypatch.setattr(device, "TORCH_THREADS", cores)
    monkeypatch.setattr(device, "busy_seconds", busy_seconds)
    monkeypatch.setattr(device.time, "sleep", sleep)
    monkeypatch.setattr(device.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(device.time, "process_time", lambda: 0.0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return sleep


def test_training_threads_follow_the_free_cores(monkeypatch):
    before = torch.get_num_threads()
    load = {"cores": 0.0}
    wait = machine(monkeypatch, 2, lambda: load["cores"])
    try:
        threads = device.TrainingThreads()
        assert torch.get_num_threads() == 2  # an idle machine: a thread per core
        load["cores"] = 1.0  # another job takes a core: one thread, not two that wait on each other
        wait(30)
        assert threads.update() == 1
        load["cores"] = 0.5  # half a core taken is not free either
        wait(30)
        assert threads.update() == 1
        load["cores"] = 0.05  # the job has gone
        wait(30)
        assert threads.update() == 2
        load["cores"] = 1.9
        assert device.TrainingThreads().update() == 1  # never fewer than one
        load["cores"] = 0.0
        assert device.TrainingThreads(fixed=1).update() == 1  # TrainConfig.threads is kept
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert device.TrainingThreads().update() == 1  # so is OMP_NUM_THREADS
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert device.TrainingThreads(processes=2).update() == 1  # --nproc 2: a core each
        threads.restore()
        assert torch.get_num_threads() == before  # as the caller had it
    finally:
        torch.set_num_threads(before)
