"""Smoke tests of the benchmark harness (tiny sizes) and of the GPU script's code path on CPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.slow
def test_quick_run_writes_every_ratio(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["mode"] == "quick" and results["errors"] == []
    by_name = {r["name"]: r for r in results["results"]}
    assert set(by_name) == {"vlm_concurrency", "vlm_rerun", "vlm_engine_overhead", "vlm_two_servers",
                            "prepare_vs_decode", "prepare_workers", "cnn_epoch_workers0",
                            "logprobs_vs_generate", "logprob_scoring_vs_bare_forward"}
    for r in by_name.values():
        assert r["figure"] is not None and r["figure"] > 0, r
        assert (r["met"] is None) == (r["goal"] is None)
    rerun = by_name["vlm_rerun"]["measured"]
    assert rerun["rerun_requests_at_server"] == 0 and rerun["rerun_n_sent"] == 0
    assert rerun["rerun_n_cached"] == by_name["vlm_concurrency"]["measured"]["c16_calls"]
    spread = by_name["vlm_two_servers"]["measured"]["sent_per_server"]
    assert sum(spread) == 32 and abs(spread[0] - spread[1]) <= 2  # the probe goes first, alone
    assert by_name["vlm_concurrency"]["figure"] > 2  # even a loaded 2-core machine overlaps 16 requests
    table = (tmp_path / "RESULTS.md").read_text()
    assert "| benchmark | figure | goal | met | measured |" in table
    assert table.count("\n| ") == 1 + len(by_name)  # header + one row each (the rule is "|---")


def test_only_rejects_an_unknown_benchmark(tmp_path, capsys):
    run = _module("run")
    with pytest.raises(SystemExit, match="^2$") as exc:
        run.main(["--only", "nope", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "unknown benchmark 'nope'" in capsys.readouterr().err


def test_record_goal_logic():
    run = _module("run")
    assert run.record("a", "t", 9.0, goal=">= 8", measured={})["met"] is True
    assert run.record("a", "t", 1.6, goal="<= 1.5", measured={})["met"] is False
    assert run.record("a", "t", 2.0, goal=None, measured={})["met"] is None


def test_gpu_config_is_the_published_one():
    gpu = _module("gpu_mllama")
    cfg = gpu.build_config(tiny=False)
    t, v = cfg.text_config, cfg.vision_config
    assert (t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.num_key_value_heads,
            t.intermediate_size, t.vocab_size) == (40, 4096, 32, 8, 14336, 128256)
    assert t.cross_attention_layers == [3, 8, 13, 18, 23, 28, 33, 38]
    assert (v.num_hidden_layers, v.num_global_layers, v.hidden_size, v.attention_heads, v.image_size,
            v.patch_size, v.max_num_tiles) == (32, 8, 1280, 16, 560, 14, 4)
    assert v.intermediate_layers_indices == [3, 7, 15, 23, 30]
    assert v.vision_output_dim == v.hidden_size * (len(v.intermediate_layers_indices) + 1) == 7680
    assert cfg.image_token_index == 128256


def test_gpu_script_code_path_on_cpu_tiny(tmp_path):
    gpu = _module("gpu_mllama")
    out = tmp_path / "tiny.json"
    code = gpu.main(["--tiny", "--out", str(out), "--batch-size", "2", "--prompt-tokens", "6",
                     "--score-batches", "1", "--generate-batches", "1", "--max-new-tokens", "3",
                     "--qlora-batch", "2"])
    assert code == 0
    res = json.loads(out.read_text())
    ph = res["phases"]
    assert ph["build"]["parameters"] > 100_000
    assert ph["logprobs"]["slices"] == 2 and ph["logprobs"]["slices_per_s"] > 0
    assert ph["generate"]["new_tokens_per_slice"] == 3
    q = ph["qlora_step"]
    assert q["linear_layers_nf4"] == 14 and q["trainable_params"] > 0 and q["step_s"] > 0
    assert res["logprobs_vs_generate"] > 0


def test_gpu_script_without_cuda_says_so(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    gpu = _module("gpu_mllama")
    assert gpu.main(["--out", str(tmp_path / "x.json")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_render_explains_missed_goals(tmp_path):
    run = _module("run")
    results = {"mode": "full", "date": "d", "total_s": 1.0, "errors": [],
               "machine": {"cpus": 2, "load_average_1min": 1.0, "python": "3", "torch": "2",
                           "torch_threads": 2, "cuda": False},
               "results": [run.record("prepare_vs_decode", "prepare vs decode", 2.0, goal="<= 1.5",
                                      measured={"patients": 6}),
                           run.record("vlm_concurrency", "c16 vs c1", 15.0, goal=">= 8", measured={})]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert run.main(["--render", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| prepare vs decode | 2.00x | <= 1.5 | **no** | patients 6; load None |" in text
    assert "## Why a goal is missed" in text and "process_patient" in text
    assert "vlm_concurrency`:" not in text.split("## Why")[1]


def test_ddp_step_in_one_process_keeps_the_helpers_in_agreement(tmp_path, monkeypatch):
    """benchmarks/gpu_ddp_step.py outside torchrun: a group of one (gloo on CPU), small3d trains, the
    all-reduce helper equals a plain all_reduce, and the JSON says what ran."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "")  # restored afterwards: the script sets them for its group of one
        monkeypatch.delenv(name)
    ddp = _module("gpu_ddp_step")
    out = tmp_path / "ddp.json"
    assert ddp.main(["--out", str(out), "--steps", "2", "--batch", "1"]) == 0
    result = json.loads(out.read_text())
    assert result["world_size"] == 1 and result["ddp"] == "Small3DCNN"
    assert result["backend"] == ("nccl" if result["device"] != "cpu" else "gloo")
    assert result["param_max_abs_diff_over_ranks"] == 0.0
    assert result["loss_sum_helper"] == pytest.approx(result["loss_sum_allreduce"])
    assert result["steps"] == 2 and result["input"] == [4, 48, 64, 64]
