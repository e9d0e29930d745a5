"""examples/hosted.yaml: GPT-4o and Claude through the litellm backend, zero-shot and 2-shot."""

from __future__ import annotations

from pathlib import Path

from medvlm.experiment import load_experiment

HOSTED = Path(__file__).resolve().parents[2] / "examples" / "hosted.yaml"


def test_hosted_example_validates():
    config, _ = load_experiment(HOSTED)
    runs = {run.name: run for run in config.vlm}
    assert [run.shots for run in runs.values()] == [0, 2, 0, 2]
    assert list(runs) == ["gpt-4o-zero-shot", "gpt-4o-2-shot", "claude-sonnet-zero-shot",
                          "claude-sonnet-2-shot"]
    assert {run.backend for run in runs.values()} == {"litellm"}
    assert {run.model for run in runs.values()} == {"openai/gpt-4o", "anthropic/claude-sonnet-4-5"}
    assert all(run.max_cost and run.max_cost > 0 for run in runs.values())
    # Anthropic gives no log-probs and takes no seed (docs/scaling.md's table)
    claude = [run for run in runs.values() if run.model.startswith("anthropic/")]
    assert all(run.scoring == "generate" and run.seed is None for run in claude)
    assert all(run.scoring == "logprobs" for run in runs.values() if run.model == "openai/gpt-4o")
