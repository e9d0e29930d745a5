"""``--device`` everywhere it exists (train-cnn, eval-vlm, consistency, EXPERIMENT.yaml): a value that is
not a device, or a device this machine does not have, is one line naming the option and the allowed
values (exit 2), before any model is loaded or any stage runs."""

from __future__ import annotations

import pytest
import yaml
from tests.adversarial.checks import one_line_error

from medvlm.cli import invoke

NOT_DEVICES = ["foo", "CUDA", "", "gpu", "cuda:x", "cuda:-1", " cuda", "cuda:1:2", "cpu;rm"]


def _cnn(work, out, device, model):
    return ["train-cnn", str(work), "--out", str(out), "--epochs", "1", "--no-progress", "--device", device]


def _eval(backend):
    def args(work, out, device, model):
        return ["eval-vlm", str(work), "--out", str(out), "--backend", backend, "--model",
                str(model) if backend == "transformers" else "hash", "--orientations", "axial",
                "--bootstrap", "0", "--no-progress", "--device", device]
    return args


def _consistency(backend):
    def args(work, out, device, model):
        return ["consistency", str(work), "--out", str(out), "--backend", backend, "--model",
                str(model) if backend == "transformers" else "hash", "--repeats", "2", "--no-progress",
                "--device", device]
    return args


COMMANDS = {"train-cnn": _cnn, "eval-vlm transformers": _eval("transformers"), "eval-vlm mock": _eval("mock"),
            "eval-vlm openai": _eval("openai"), "consistency transformers": _consistency("transformers"),
            "consistency mock": _consistency("mock")}


@pytest.mark.parametrize("device", NOT_DEVICES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_value_that_is_no_device_is_one_line_listing_the_allowed(vlm_work, tmp_path, capsys, command,
                                                                   device):
    out = tmp_path / "run"
    assert invoke(COMMANDS[command](vlm_work, out, device, "no-model-needed")) == 2
    line = one_line_error(capsys, "device", "auto", "cpu", "cuda")
    assert repr(device) in line
    assert not (out / "cache.sqlite").exists()


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps() -> bool:
    import torch

    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def _exists_here(device: str) -> bool:
    if device == "mps":
        return _mps()
    return int(device.partition(":")[2] or 0) < _cuda_count()


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1", "cuda:99", "mps"])
@pytest.mark.parametrize("command", ["train-cnn", "eval-vlm transformers", "consistency transformers"])
def test_a_device_this_machine_lacks_is_one_line(vlm_work, tiny_model, tmp_path, capsys, command, device):
    if _exists_here(device):
        pytest.skip(f"{device} exists here")
    assert invoke(COMMANDS[command](vlm_work, tmp_path / "run", device, tiny_model)) == 2
    line = one_line_error(capsys, "device", device)
    if command != "train-cnn" or device == "cuda":  # train-cnn takes cuda only (not cuda:N, mps)
        expected = ("no CUDA device", "only") if device.startswith("cuda") else ("no Apple MPS",)
        assert any(e in line for e in expected), line


MINI = {"name": "adv", "out": "out", "data": {"synthetic": {"patients": 8, "size": "small"}},
        "prepare": {"shape": [8, 12, 12]}, "split": {"test_fraction": 0.25, "folds": 2}}


def _experiment(where: str, device: str) -> dict:
    config = dict(MINI)
    if where == "cnn":
        config["cnn"] = [{"name": "c", "epochs": 1, "device": device}]
    elif where in ("vlm", "consistency"):
        config[where] = [{"name": "v", "backend": "transformers", "model": "tiny", "device": device}]
    else:
        config["finetune"] = [{"name": "f", "base_model": "tiny", "max_steps": 1,
                               "evaluate": {"device": device}}]
    return config


@pytest.mark.parametrize("device", ["foo", "gpu", "cuda:x", ""])
@pytest.mark.parametrize("where", ["cnn", "vlm", "consistency", "finetune"])
def test_experiment_yaml_with_a_bad_device_is_one_line(tmp_path, capsys, where, device):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(_experiment(where, device)))
    for extra in (["--check"], []):
        assert invoke(["run", str(path), *extra]) == 2
        one_line_error(capsys, str(path), "device", "auto", "cpu", "cuda")
    assert not (tmp_path / "out").exists()


MISSING_DEVICE_CASES = [(where, device) for where in ("cnn", "vlm", "consistency", "finetune")
                        for device in ("cuda", "cuda:3", "mps")
                        if where != "cnn" or device == "cuda"]  # train-cnn takes cuda only (test above)


@pytest.mark.parametrize("where, device", MISSING_DEVICE_CASES)
def test_experiment_yaml_asking_for_a_missing_device_stops_before_any_stage(tmp_path, capsys, where, device):
    if _exists_here(device):
        pytest.skip(f"{device} exists here")
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(_experiment(where, device)))
    assert invoke(["run", str(path), "--check"]) == 0  # the file is valid (for a machine that has it)
    capsys.readouterr()
    assert invoke(["run", str(path)]) == 2
    one_line_error(capsys, str(path), f"{where}.0", device)
    assert not (tmp_path / "out").exists()  # no stage ran


@pytest.mark.parametrize("dtype", ["foo", "float", "int8", ""])
def test_experiment_yaml_with_a_bad_dtype_is_one_line(tmp_path, capsys, dtype):
    config = {**MINI, "vlm": [{"name": "v", "backend": "transformers", "model": "tiny", "dtype": dtype}]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    assert invoke(["run", str(path), "--check"]) == 2
    one_line_error(capsys, str(path), "vlm.0.dtype", "float32", "bfloat16")
