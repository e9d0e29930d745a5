"""The backend options shared by eval-vlm and consistency: one base, one builder, one set of CLI options."""

from __future__ import annotations

import pytest

from medvlm.consistency.config import ConsistencyConfig
from medvlm.vlm.backends import BackendConfig
from medvlm.vlm.evaluate import VLMEvalConfig
from medvlm.vlm.options import BackendOptions


def test_both_configs_share_the_backend_options_and_builder():
    assert issubclass(VLMEvalConfig, BackendOptions) and issubclass(ConsistencyConfig, BackendOptions)
    shared = dict(backend="openai", model="m", base_urls=["http://a/v1"], timeout_s=3.0, max_retries=1,
                  concurrency=2, batch_size=3, backoff_s=0.5, max_backoff_s=2.0, dtype="float32")
    a, b = VLMEvalConfig(**shared).backend_config(), ConsistencyConfig(**shared).backend_config()
    assert a == b == BackendConfig(**shared, adapter=None, device="auto")
    assert set(BackendConfig.model_fields) <= set(BackendOptions.model_fields)
    assert ConsistencyConfig(model="m", extra_body={"top_k": 5}).extra_body == {"top_k": 5}  # both commands
    with pytest.raises(ValueError, match="extra"):
        ConsistencyConfig(model="m", extra_bodyy={})  # unknown keys are refused


def test_cli_names_the_option_of_a_bad_shared_value(tmp_path, capsys):
    from medvlm.cli import main

    for cmd in ("eval-vlm", "consistency"):
        with pytest.raises(SystemExit, match="^2$") as exc:
            main([cmd, str(tmp_path), "--out", str(tmp_path / "o"), "--backend", "mock", "--model", "m",
                  "--timeout", "0"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "--timeout: Input should be greater than 0" in err and "\n" not in err.strip()
