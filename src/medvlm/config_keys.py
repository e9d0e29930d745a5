"""One vocabulary for the command line and EXPERIMENT.yaml.

A run section of EXPERIMENT.yaml takes the option names of the matching command (``base_url``,
``bootstrap``, ``timeout``, ``patient``, ``temperature``, ...; a dash may be written as ``-`` or ``_``).
The config classes' own field names (``base_urls``, ``n_boot``, ``timeout_s``, ...) stay accepted as
aliases. :func:`normalise_sections` maps a parsed YAML mapping onto the field names before validation;
:func:`dump_section` does the reverse for ``medvlm config dump RUN``: the YAML section that reproduces a
run from its ``run.json``.
"""

from __future__ import annotations

from typing import Any

from medvlm.errors import ConfigError

#: command option name (dashes as underscores) -> config field, per run section
OPTION_FIELDS: dict[str, dict[str, str]] = {
    "vlm": {"base_url": "base_urls", "bootstrap": "n_boot", "timeout": "timeout_s"},
    "consistency": {"base_url": "base_urls", "timeout": "timeout_s", "patient": "patients",
                    "slice": "slice_index", "prompt": "prompts", "temperature": "temperatures",
                    "orientations": "orientation"},
    "finetune": {},
    "cnn": {},
    "calibrate": {},
}
#: sections whose ``fold`` may be ``all`` (as the command's ``--fold all``; see :func:`_fold`)
FOLD_ALL_SECTIONS = ("vlm", "consistency")
#: fields that hold a list where the option may be given once (a single value becomes a list of one)
LIST_FIELDS = {"base_urls", "patients", "prompts", "temperatures"}
#: fields that hold one value where the option's name is plural (a list of one becomes that value)
SINGLE_FIELDS = {"orientation"}
#: run.json kind -> EXPERIMENT.yaml section
KIND_SECTIONS = {"cnn": "cnn", "vlm": "vlm", "consistency": "consistency", "finetune": "finetune",
                 "calibrated": "calibrate"}


def _normalise_run(section: str, run: Any, where: str) -> Any:
    if not isinstance(run, dict):
        return run
    aliases = OPTION_FIELDS.get(section, {})
    out: dict[str, Any] = {}
    for key, value in run.items():
        name = str(key).replace("-", "_")
        target = aliases.get(name, name)
        if target in out:
            raise ConfigError(f"{where}: {key!r} and another key both set {target!r}; give one")
        if target in LIST_FIELDS and target != name and not isinstance(value, list):
            value = [value]
        if target in SINGLE_FIELDS and target != name and isinstance(value, list) and len(value) == 1:
            value = value[0]
        out[target] = value
    if section in FOLD_ALL_SECTIONS and isinstance(out.get("fold"), str):
        out["fold"] = _fold(section, out, where)
    if section == "finetune" and isinstance(out.get("evaluate"), dict):
        out["evaluate"] = _normalise_run("vlm", out["evaluate"], f"{where}.evaluate")
    return out


def _fold(section: str, run: dict[str, Any], where: str) -> Any:
    """A vlm or consistency run's ``fold: all`` (or ``"2"``) under ``--fold``'s rules (:func:`parse_fold`):
    ``all`` means fold 0 where the cohort does not depend on the fold; otherwise one-line ConfigError."""
    from medvlm.cli._app import parse_fold

    cohort = run.get("cohort", "test")
    if section == "consistency" and run.get("patients"):
        cohort = "all"  # --patient: the fold does not choose the patients
    shots = run.get("shots", 0)
    if isinstance(shots, list):  # a sweep: refused for any K > 0, as each of its runs would be
        shots = max([k for k in shots if isinstance(k, int)] or [0])
    command = "eval-vlm" if section == "vlm" else section
    try:
        return parse_fold(run["fold"], cohort=str(cohort), command=command,
                          shots=shots if isinstance(shots, int) else 0)
    except ConfigError as exc:
        raise ConfigError(f"{where}.fold: {exc}") from exc


def normalise_sections(data: dict[str, Any], source: str = "experiment") -> dict[str, Any]:
    """``data`` with every run section's keys mapped to the config fields (see the module docstring).

    >>> normalise_sections({"vlm": [{"name": "v", "base-url": "http://h/v1", "bootstrap": 200}]})
    {'vlm': [{'name': 'v', 'base_urls': ['http://h/v1'], 'n_boot': 200}]}
    """
    out = dict(data)
    for section in OPTION_FIELDS:
        runs = out.get(section)
        if isinstance(runs, list):
            out[section] = [_normalise_run(section, r, f"{source}: {section}.{i}")
                            for i, r in enumerate(runs)]
    return out


def option_name(section: str, field: str) -> str:
    """The command's option name of a config field (the reverse of :data:`OPTION_FIELDS`).

    >>> option_name("vlm", "n_boot"), option_name("vlm", "model")
    ('bootstrap', 'model')
    """
    for option, target in OPTION_FIELDS.get(section, {}).items():
        if target == field:
            return option
    return field


def dump_section(info: dict[str, Any]) -> dict[str, Any]:
    """The EXPERIMENT.yaml section (``{section: [run]}``) that reproduces a run from its ``run.json``
    (``info``): the options that differ from the defaults, under the command's option names."""
    from medvlm.experiment import ExperimentConfig

    kind = info.get("kind")
    if kind not in KIND_SECTIONS:
        raise ConfigError(f"run.json kind {kind!r}: no EXPERIMENT.yaml section for it "
                          f"({', '.join(KIND_SECTIONS)})")
    section = KIND_SECTIONS[kind]
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    model = _run_model(ExperimentConfig, section)
    run: dict[str, Any] = {"name": str(info.get("name") or "run")}
    if section == "calibrate" and config.get("apply"):
        from pathlib import Path

        config = {**config, "run": Path(str(config["apply"])).parent.name}  # the calibrated run's folder
    for field, spec in model.model_fields.items():
        if field in ("name", "progress") or field not in config:
            continue
        value = config[field]
        if not spec.is_required() and value == _default(spec):
            continue
        run[option_name(section, field)] = list(value) if isinstance(value, tuple) else value
    return {section: [run]}


def _run_model(config_cls: Any, section: str) -> Any:
    import typing

    annotation = config_cls.model_fields[section].annotation
    return typing.get_args(annotation)[0]


def _default(spec: Any) -> Any:
    value = spec.get_default(call_default_factory=True)
    return list(value) if isinstance(value, tuple) else value
