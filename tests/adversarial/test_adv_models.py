"""A damaged local model folder -- truncated or garbage weights, a broken config, tokenizer or processor
file -- is one ``medvlm: error:`` line naming the folder and the library's first error line (exit 2),
wherever medvlm loads one: ``eval-vlm --backend transformers --model``, ``consistency``, ``finetune
--base-model``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tests.adversarial.checks import last_line_error, one_line_error

from medvlm.cli import invoke


def _truncate(size: int):
    def damage(folder: Path) -> None:
        with open(folder / "model.safetensors", "r+b") as fh:
            fh.truncate(size)
    return damage


def _write(name: str, data: bytes):
    return lambda folder: (folder / name).write_bytes(data)


def _weights_as_folder(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").mkdir()


def _weights_header_only(folder: Path) -> None:
    """A valid safetensors header whose tensors lie past the end of the file."""
    data = (folder / "model.safetensors").read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    (folder / "model.safetensors").write_bytes(data[:header + 16])


DAMAGE = {
    "weights truncated to 10000 bytes": _truncate(10_000),
    "weights truncated inside the header": _truncate(20),
    "weights truncated after the header": _weights_header_only,
    "weights empty": _truncate(0),
    "weights random bytes": _write("model.safetensors", os.urandom(50_000)),
    "weights a folder": _weights_as_folder,
    "config.json not JSON": _write("config.json", b"{not json"),
    "config.json a list": _write("config.json", b"[1, 2]"),
    "config.json of an unknown model type": _write("config.json", b'{"model_type": "no-such-model"}'),
    "tokenizer.json garbage": _write("tokenizer.json", b"\xff\xfe garbage"),
    "processor_config.json not JSON": _write("processor_config.json", b"{"),
}


@pytest.fixture()
def damaged(tiny_model, tmp_path):
    def make(how: str) -> Path:
        folder = tmp_path / "model"
        shutil.copytree(tiny_model, folder)
        DAMAGE[how](folder)
        return folder
    return make


@pytest.mark.parametrize("how", list(DAMAGE))
@pytest.mark.parametrize("command", ["eval-vlm", "consistency"])
def test_a_damaged_model_folder_is_one_line(vlm_work, tmp_path, capsys, damaged, how, command):
    folder = damaged(how)
    common = ["--out", str(tmp_path / "run"), "--backend", "transformers", "--model", str(folder),
              "--no-progress"]
    args = (["eval-vlm", str(vlm_work), *common, "--orientations", "axial", "--bootstrap", "0"]
            if command == "eval-vlm" else ["consistency", str(vlm_work), *common, "--repeats", "2"])
    capsys.readouterr()
    assert invoke(args) == 2
    line = one_line_error(capsys, str(folder))
    assert len(line) < 400


@pytest.mark.parametrize("how", ["weights truncated to 10000 bytes", "weights random bytes",
                                 "config.json of an unknown model type", "tokenizer.json garbage"])
def test_a_damaged_finetune_base_model_is_one_line(vlm_work, tmp_path, capsys, damaged, how):
    folder = damaged(how)
    capsys.readouterr()
    assert invoke(["finetune", str(vlm_work), "--out", str(tmp_path / "adapter"), "--base-model", str(folder),
                   "--orientations", "axial", "--max-slices-per-patient", "1", "--batch-size", "2",
                   "--rank", "4", "--max-steps", "1"]) == 2
    line = last_line_error(capsys, f"--base-model {folder}")
    assert len(line) < 400
