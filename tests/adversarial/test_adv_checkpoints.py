"""A garbage checkpoint wherever medvlm loads one -- CNN ``last.pt``/``best.pt``, the fine-tuning
checkpoint and best adapter, ``eval-vlm --adapter`` -- is one line naming the file (exit 2). Nothing is
moved aside or replaced: the message says what to delete; the run's other outputs stay as they were."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
from tests.adversarial.checks import last_line_error
from tests.cnn.cnn_helpers import make_work

from medvlm.cli import invoke


def _zip_not_torch(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "not a torch archive")


def _torch_save(value_of):
    def damage(path: Path) -> None:
        import torch

        old = torch.load(path, weights_only=True) if path.suffix == ".pt" else None
        torch.save(value_of(old), path)
    return damage


def _as_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "x").write_text("x")


#: damage common to every torch file
TORCH_DAMAGE = {
    "random bytes": lambda p: p.write_bytes(os.urandom(3000)),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "zip, not torch": _zip_not_torch,
    "a list": _torch_save(lambda old: [1, 2, 3]),
    "a tensor": _torch_save(lambda old: __import__("torch").zeros(3)),
    "a python object": _torch_save(lambda old: {"model": Path("/x")}),
    "a folder": _as_folder,
}


# --------------------------------------------------------------------------------------------- the CNN
CNN_DAMAGE = {
    **TORCH_DAMAGE,
    "wrong keys": _torch_save(lambda old: {"weights": old["model"]}),
    "wrong shapes": _torch_save(lambda old: {**old, "model": {k: v.flatten()[:1]
                                                              for k, v in old["model"].items()}}),
    "other layer names": _torch_save(lambda old: {**old, "model": {f"x.{k}": v
                                                                   for k, v in old["model"].items()}}),
    "model not tensors": _torch_save(lambda old: {**old, "model": dict.fromkeys(old["model"], 1)}),
}
LAST_ONLY = {
    "no optimizer": _torch_save(lambda old: {k: v for k, v in old.items() if k != "optimizer"}),
    "history not a list": _torch_save(lambda old: {**old, "history": 7}),
    "rng state wrong": _torch_save(lambda old: {**old, "rng": {"torch": 5}}),
    "optimizer of another model": _torch_save(lambda old: {**old, "optimizer": {"state": {},
                                                                                "param_groups": []}}),
    "epoch past the history": _torch_save(lambda old: {**old, "epoch": 9}),
}


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    """A finished one-epoch CNN run on a tiny work folder: (work, run, its options)."""
    root = tmp_path_factory.mktemp("advcnn")
    work = make_work(root / "work", n=12, n_lgg=4, n_test=4, folds=2, shape=(4, 8, 12, 12))
    options = ["--workers", "0", "--bootstrap", "0", "--no-progress", "--device", "cpu", "--batch-size", "2"]
    run = root / "run"
    assert invoke(["train-cnn", str(work), "--out", str(run), "--epochs", "1", *options]) == 0
    return work, run, options


@pytest.mark.parametrize(("name", "how"), [("last.pt", h) for h in [*CNN_DAMAGE, *LAST_ONLY]]
                         + [("best.pt", h) for h in CNN_DAMAGE])
def test_a_damaged_cnn_checkpoint_is_one_line(cnn_run, tmp_path, capsys, name, how):
    work, base, options = cnn_run
    run = tmp_path / "run"
    shutil.copytree(base, run)
    path = run / "fold0" / name
    {**CNN_DAMAGE, **LAST_ONLY}[how](path)
    damaged = path.read_bytes() if path.is_file() else None
    kept = {f: (run / f).read_bytes() for f in ("history.csv", "predictions.csv", "metrics.json")}
    capsys.readouterr()
    # last.pt is read to resume (2 epochs); best.pt to score the finished run (1 epoch)
    epochs = "2" if name == "last.pt" else "1"
    assert invoke(["train-cnn", str(work), "--out", str(run), "--epochs", epochs, *options]) == 2
    line = last_line_error(capsys, str(path))
    assert ("restart this fold" if name == "last.pt" else "train this fold again") in line
    assert {f: (run / f).read_bytes() for f in kept} == kept
    assert (path.read_bytes() if path.is_file() else None) == damaged  # not moved, not replaced


@pytest.mark.parametrize("data", [b"\xff\xfe", b"[1, 2]", b'{"kind": "cn', b"", b"null"])
def test_a_damaged_run_json_of_a_cnn_run_is_one_line(cnn_run, tmp_path, capsys, data):
    work, base, options = cnn_run
    run = tmp_path / "run"
    shutil.copytree(base, run)
    (run / "run.json").write_bytes(data)
    capsys.readouterr()
    assert invoke(["train-cnn", str(work), "--out", str(run), "--epochs", "2", *options]) == 2
    last_line_error(capsys, str(run / "run.json"))
    assert (run / "run.json").read_bytes() == data


# ------------------------------------------------------------------------------------- the fine-tuning
def _safetensors(value_of):
    def damage(path: Path) -> None:
        from safetensors.torch import load_file, save_file

        save_file(value_of(load_file(str(path))), str(path))
    return damage


def _json(value_of):
    def damage(path: Path) -> None:
        path.write_text(json.dumps(value_of(json.loads(path.read_text()))))
    return damage


SAFETENSORS_DAMAGE = {
    "random bytes": TORCH_DAMAGE["random bytes"], "truncated": TORCH_DAMAGE["truncated"],
    "empty": TORCH_DAMAGE["empty"], "a folder": _as_folder,
    "other keys": _safetensors(lambda w: {"x.weight": next(iter(w.values()))}),
    "wrong shapes": _safetensors(lambda w: {k: v.flatten()[:1].clone() for k, v in w.items()}),
    "half the keys": _safetensors(lambda w: dict(list(w.items())[: len(w) // 2])),
}
STATE_DAMAGE = {
    "not UTF-8": lambda p: p.write_bytes(b"\xff\xfe\x00garbage"),
    "truncated": lambda p: p.write_text(p.read_text()[:30]),
    "a list": lambda p: p.write_text("[1, 2]"),
    "empty": lambda p: p.write_text(""),
    "no step": _json(lambda s: {k: v for k, v in s.items() if k != "step"}),
    "step not a number": _json(lambda s: {**s, "step": "two"}),
    "log not a list": _json(lambda s: {**s, "log": {"a": 1}}),
}
FT_CASES = ([("state.json", h) for h in STATE_DAMAGE]
            + [("adapter_model.safetensors", h) for h in SAFETENSORS_DAMAGE]
            + [(f, h) for f in ("optimizer.pt", "rng.pt") for h in TORCH_DAMAGE]
            + [("optimizer.pt", "another optimizer"), ("rng.pt", "not an RNG state")])
OTHER_TORCH = {"another optimizer": _torch_save(lambda old: {"state": {}, "param_groups": []}),
               "not an RNG state": _torch_save(lambda old: {"cpu": 5})}


@pytest.fixture(scope="module")
def ft_run(vlm_work, tiny_model, tmp_path_factory):
    """A LoRA run of 2 steps with a checkpoint after each step and a best adapter: (args, adapter)."""
    out = tmp_path_factory.mktemp("advft") / "adapter"
    args = ["finetune", str(vlm_work), "--base-model", str(tiny_model), "--orientations", "axial",
            "--max-slices-per-patient", "1", "--batch-size", "2", "--rank", "4", "--save-steps", "1"]
    assert invoke([*args, "--out", str(out), "--max-steps", "2"]) == 0
    assert (out / "checkpoint" / "state.json").is_file() and (out / "best_adapter.safetensors").is_file()
    return args, out


@pytest.mark.parametrize(("name", "how"), FT_CASES)
def test_a_damaged_finetune_checkpoint_is_one_line(ft_run, tmp_path, capsys, name, how):
    args, base = ft_run
    out = tmp_path / "adapter"
    shutil.copytree(base, out)
    path = out / "checkpoint" / name
    table = STATE_DAMAGE if name == "state.json" else (
        SAFETENSORS_DAMAGE if name.endswith(".safetensors") else {**TORCH_DAMAGE, **OTHER_TORCH})
    table[how](path)
    kept = {f: (out / f).read_bytes() for f in ("train_log.csv", "adapter_model.safetensors")}
    capsys.readouterr()
    assert invoke([*args, "--out", str(out), "--max-steps", "3"]) == 2  # resume
    line = last_line_error(capsys, str(path), "start this fine-tuning again")
    assert str(out / "checkpoint") in line
    assert {f: (out / f).read_bytes() for f in kept} == kept


@pytest.mark.parametrize("how", ["random bytes", "truncated", "other keys", "wrong shapes"])
def test_a_damaged_best_adapter_is_one_line(ft_run, tmp_path, capsys, how):
    args, base = ft_run
    out = tmp_path / "adapter"
    shutil.copytree(base, out)
    path = out / "best_adapter.safetensors"
    SAFETENSORS_DAMAGE[how](path)
    capsys.readouterr()
    assert invoke([*args, "--out", str(out), "--max-steps", "2"]) == 2  # finished: selects the best epoch
    last_line_error(capsys, str(path))


# --------------------------------------------------------------------------------- eval-vlm --adapter
def _in_weights(damage):
    return lambda d: damage(d / "adapter_model.safetensors")


def _config(value_of):
    return lambda d: _json(value_of)(d / "adapter_config.json")


ADAPTER_DAMAGE = {
    "no such folder": lambda d: shutil.rmtree(d),
    "a file": lambda d: (shutil.rmtree(d), d.write_text("x")),
    "no adapter_config.json": lambda d: (d / "adapter_config.json").unlink(),
    "an empty folder": lambda d: (shutil.rmtree(d), d.mkdir()),
    "config not UTF-8": lambda d: (d / "adapter_config.json").write_bytes(b"\xff\x00garbage"),
    "config a list": lambda d: (d / "adapter_config.json").write_text("[1]"),
    "config truncated": lambda d: (d / "adapter_config.json").write_text('{"peft_type": "LO'),
    "config of an unknown type": _config(lambda c: {"peft_type": "NOPE"}),
    "config rank not a number": _config(lambda c: {**c, "r": "x"}),
    "no weights": lambda d: (d / "adapter_model.safetensors").unlink(),
    **{f"weights: {k}": _in_weights(f) for k, f in SAFETENSORS_DAMAGE.items()},
}


@pytest.mark.parametrize("how", ["intact", *ADAPTER_DAMAGE])
def test_a_bad_adapter_folder_is_one_line(ft_run, vlm_work, tiny_model, tmp_path, capsys, how):
    _args, base = ft_run
    adapter = tmp_path / "adapter"
    shutil.copytree(base, adapter, ignore=shutil.ignore_patterns("checkpoint*"))
    if how != "intact":
        ADAPTER_DAMAGE[how](adapter)
    capsys.readouterr()
    code = invoke(["eval-vlm", str(vlm_work), "--out", str(tmp_path / "run"), "--backend", "transformers",
                   "--model", str(tiny_model), "--adapter", str(adapter), "--orientations", "axial",
                   "--scoring", "logprobs", "--bootstrap", "0", "--no-progress"])
    if how == "intact":
        assert code == 0
        return
    assert code == 2
    last_line_error(capsys, str(adapter))  # after the base model's loading bar, when PEFT refuses it
    assert not (tmp_path / "run" / "slices.csv").exists()


# ------------------------------------------------------------------------------- --engine trl (Trainer)
@pytest.fixture(scope="module")
def trl_run(ft_run, tmp_path_factory):
    """The same fine-tuning with ``--engine trl`` (its checkpoints are the Trainer's, in ADAPTER/trl/)."""
    args, _ = ft_run
    args = [*args, "--engine", "trl"]
    out = tmp_path_factory.mktemp("advtrl") / "adapter"
    assert invoke([*args, "--out", str(out), "--max-steps", "2"]) == 0
    return args, out


TRL_DAMAGE = {
    "trl/checkpoint-2/trainer_state.json": lambda p: p.write_text("[1]"),
    "trl/checkpoint-2/adapter_model.safetensors": TORCH_DAMAGE["random bytes"],
    "trl/checkpoint-2/optimizer.pt": TORCH_DAMAGE["truncated"],
    "trl/checkpoint-2/rng_state.pth": TORCH_DAMAGE["empty"],
    "trl/checkpoint-2/scheduler.pt": _zip_not_torch,
    "trl_val.json": lambda p: p.write_text('{"rows": 1}'),
}


@pytest.mark.parametrize("name", list(TRL_DAMAGE))
def test_a_damaged_trl_checkpoint_is_one_line(trl_run, tmp_path, capsys, name):
    args, base = trl_run
    out = tmp_path / "adapter"
    shutil.copytree(base, out)
    TRL_DAMAGE[name](out / name)
    capsys.readouterr()
    assert invoke([*args, "--out", str(out), "--max-steps", "3"]) == 2
    last_line_error(capsys, str(out / name), "start this fine-tuning again")
