"""eval-vlm --image / --artifact end to end: what is sent, cache keys per variant, reruns, run.json."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest

from medvlm.cli import invoke as _run
from medvlm.data.controls import IMAGE_VARIANTS
from medvlm.vlm.evaluate import VLMEvalConfig, evaluate_vlm


def _keys(db) -> set[str]:
    con = sqlite3.connect(db)
    try:
        return {k for (k,) in con.execute("SELECT key FROM answers")}
    finally:
        con.close()


def test_each_variant_has_its_own_cache_keys_and_a_rerun_sends_nothing(tiny_work, tmp_path):
    cache = tmp_path / "shared.sqlite"
    common = dict(backend="mock", model="hash", n_boot=0, progress=False, cache=str(cache))
    seen: set[str] = set()
    n_calls = None
    for variant in IMAGE_VARIANTS:
        out = tmp_path / variant
        res = evaluate_vlm(tiny_work, out, VLMEvalConfig(**common, image=variant))
        keys = _keys(cache) - seen
        assert res.n_sent > 0 and keys, variant
        assert not keys & seen  # no answer of another variant is reused
        seen |= keys
        assert n_calls in (None, res.n_calls)  # the same calls, only the image differs
        n_calls = res.n_calls
        info = json.loads((out / "run.json").read_text())
        assert info["config"]["image"] == variant and info["config"]["artifact"] is None
        assert len(pd.read_csv(out / "slices.csv")) == res.n_calls
    for variant in IMAGE_VARIANTS:  # rerun: every answer from the cache
        res = evaluate_vlm(tiny_work, tmp_path / variant, VLMEvalConfig(**common, image=variant))
        assert res.n_sent == 0 and res.n_cached == n_calls, variant
        assert json.loads((tmp_path / variant / "metrics.json").read_text())["n_sent"] == 0


def test_artifact_runs_are_recorded_cached_and_severity_0_is_the_real_image(tiny_work, tmp_path):
    pytest.importorskip("torchio")
    cache = tmp_path / "shared.sqlite"
    common = dict(backend="mock", model="hash", n_boot=0, progress=False, cache=str(cache),
                  orientations=["axial"])
    real = evaluate_vlm(tiny_work, tmp_path / "real", VLMEvalConfig(**common))
    zero = evaluate_vlm(tiny_work, tmp_path / "zero", VLMEvalConfig(**common, artifact="motion:0"))
    assert real.n_sent == real.n_calls and zero.n_sent == 0  # severity 0: the same bytes, the same keys
    ghost = evaluate_vlm(tiny_work, tmp_path / "ghost", VLMEvalConfig(**common, artifact="ghosting:0.8"))
    assert ghost.n_sent == ghost.n_calls
    info = json.loads((tmp_path / "ghost" / "run.json").read_text())
    assert info["config"]["artifact"] == "ghosting:0.8" and info["config"]["image"] == "real"
    again = evaluate_vlm(tiny_work, tmp_path / "ghost", VLMEvalConfig(**common, artifact="ghosting:0.8"))
    assert again.n_sent == 0
    other_seed = evaluate_vlm(tiny_work, tmp_path / "ghost-seed",
                              VLMEvalConfig(**common, artifact="ghosting:0.8", seed=3))
    assert other_seed.n_sent == other_seed.n_calls  # another draw (and another sampling seed)


def test_none_sends_a_text_only_message_over_the_wire(tiny_work, tmp_path, fake_server):
    args = ["eval-vlm", str(tiny_work), "--backend", "openai", "--model", "llama3.2-vision", "--base-url",
            fake_server.url, "--orientations", "axial", "--bootstrap", "0", "--no-progress"]
    assert _run([*args, "--out", str(tmp_path / "none"), "--image", "none"]) == 0
    bodies = list(fake_server.bodies)
    contents = [b["messages"][0]["content"] for b in bodies]
    assert contents and all(len(c) == 1 and c[0]["type"] == "text" for c in contents)
    assert all("image_url" not in json.dumps(b) for b in bodies)
    n_none = len(bodies)
    assert _run([*args, "--out", str(tmp_path / "real")]) == 0
    real = fake_server.bodies[n_none:]
    assert real and all(b["messages"][0]["content"][0]["type"] == "image_url" for b in real)
    assert _run([*args, "--out", str(tmp_path / "none"), "--image", "none"]) == 0
    assert len(fake_server.bodies) == n_none + len(real)  # rerun: nothing sent


@pytest.mark.slow
def test_none_on_the_transformers_backend_is_text_only(tiny_work, tiny_vlm, tmp_path):
    from medvlm.vlm.backends import BackendConfig
    from medvlm.vlm.hf import TransformersBackend, build_chat_text
    from medvlm.vlm.types import VLMRequest

    backend = TransformersBackend(BackendConfig(backend="transformers", model=str(tiny_vlm)))
    inputs = backend._inputs([VLMRequest(key="k", image=b"", prompt="Grade?", repeat=0, prefix="Choice:")])
    assert "pixel_values" not in inputs
    assert "<|image|>" not in build_chat_text(backend.processor, "Grade?", image=False)
    assert "<|image|>" in build_chat_text(backend.processor, "Grade?")
    common = dict(backend="transformers", model=str(tiny_vlm), n_boot=0, progress=False,
                  orientations=["axial"], scoring="logprobs", batch_size=4)
    res = evaluate_vlm(tiny_work, tmp_path / "none", VLMEvalConfig(**common, image="none"), backend=backend)
    slices = pd.read_csv(tmp_path / "none" / "slices.csv")
    assert res.n_sent + res.n_cached == len(slices) > 0 and slices["choice"].notna().all()
    # no image: every slice is the same request (answered once, then from the cache), the same answer
    assert res.n_cached > 0
    assert slices[["p_lgg", "p_hgg", "p_ng"]].round(6).drop_duplicates().shape[0] == 1
    real = evaluate_vlm(tiny_work, tmp_path / "real", VLMEvalConfig(**common), backend=backend)
    assert real.n_sent == len(slices)
    real_probs = pd.read_csv(tmp_path / "real" / "slices.csv")[["p_lgg", "p_hgg", "p_ng"]]
    assert real_probs.round(6).drop_duplicates().shape[0] > 1  # with the image, answers differ
    backend.close()


@pytest.mark.parametrize("option, value, words", [
    ("--image", "foo", "--image: it must be one of ['real', 'none', 'blank', 'noise', 'tumour-masked']"),
    ("--image", "blnak", "Did you mean 'blank'"),
    ("--artifact", "motion:2", "--artifact: the severity must be a number from 0 to 1; got 'motion:2'"),
    ("--artifact", "blur:0.5", "--artifact: the kind must be one of ['motion', 'ghosting', 'spike'"),
    ("--artifact", "motion", "KIND:SEVERITY"),
])
def test_bad_control_values_exit_2_with_one_line(tiny_work, tmp_path, capsys, option, value, words):
    code = _run(["eval-vlm", str(tiny_work), "--out", str(tmp_path / "x"), "--backend", "mock", "--model",
                 "hash", "--no-progress", option, value])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x" / "run.json").exists()


def test_the_config_checks_the_controls_too(tiny_work, tmp_path, capsys):
    """medvlm run EXPERIMENT.yaml builds the same config: bad values fail when the file is read."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="Did you mean 'tumour-masked'"):
        VLMEvalConfig(model="m", image="tumor-masked")
    with pytest.raises(ValidationError, match="from 0 to 1"):
        VLMEvalConfig(model="m", artifact="spike:4")
    assert VLMEvalConfig(model="m", artifact="Bias-Field:0.50").artifact == "bias-field:0.5"
    code = _run(["eval-vlm", str(tiny_work), "--out", str(tmp_path / "x"), "--backend", "mock", "--model",
                 "hash", "--image", "noise", "--artifact", "spike:0.5"])
    assert code == 2 and "has no effect with --image noise" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["no seg column value", "seg file gone"])
def test_tumour_masked_without_a_mask_exits_2_with_one_line(tiny_work, tmp_path, capsys, damage):
    import shutil

    work = tmp_path / "work"
    shutil.copytree(tiny_work, work)
    manifest = pd.read_csv(work / "manifest.csv", dtype=str, keep_default_na=False)
    if damage == "no seg column value":  # a task whose images come without a tumour mask
        manifest["seg"] = ""
    else:
        manifest["seg"] = str(tmp_path / "gone_seg.nii.gz")
    manifest.to_csv(work / "manifest.csv", index=False)
    code = _run(["eval-vlm", str(work), "--out", str(tmp_path / "x"), "--backend", "mock", "--model", "hash",
                 "--no-progress", "--image", "tumour-masked"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--image tumour-masked needs the tumour mask" in err
