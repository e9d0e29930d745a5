"""``medvlm run EXPERIMENT.yaml --check``: everything that can be checked before a study starts.

:func:`check_experiment` goes beyond the schema (:func:`medvlm.experiment.load_experiment`):

- paths: the data folder (a BraTS layout), prompt files, adapters, and each transformers model that is
  not the ``tiny`` stand-in (a local folder, or a Hub id the cache or the Hub knows:
  :func:`medvlm.hub.check_model_source`, seconds at most);
- servers: each ``base_url`` of an ``openai`` run answers (``GET /models``) and serves the run's model.
  A model the server lists is served; otherwise one request of one token without an image decides, as
  the runs' own probe does (a 404, or a 4xx naming the model: not served; :mod:`medvlm.vlm._server_errors`);
- options: what eval-vlm / consistency refuse before any work (``validate_config``, a litellm model's
  provider and environment keys, few-shot with ``cohort: train/all``; with a prepared work folder also the
  few-shot pool), each line under the option's YAML key (``vlm.0.shots: --shots 2 ...``);
- classes: run sections the task's number of classes rules out (``calibrate:`` is binary only, so a task
  with K > 2 classes cannot have one: :func:`check_classes`);
- the plan: the resolved output folder and each model-calling run's planned calls (units x orientations
  x slices x repeats, prompts and temperatures for consistency), counted from the prepared work folder
  when it exists, else ``None`` (unknown until ``prepare``). Devices are not checked (the file may be
  meant for another machine).

Each problem is one line naming the run's key; none is raised, so all are reported at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvlm.errors import MedVLMError
from medvlm.experiment import TINY_MODEL, ExperimentConfig

#: seconds a server may take to answer one check
SERVER_TIMEOUT_S = 5.0


@dataclass
class CheckResult:
    """What ``run --check`` found: ``out`` (resolved output folder), ``stages`` (names, in order),
    ``calls`` (run name -> planned model calls, None when unknown until prepare), ``problems``."""

    out: Path
    stages: list[str] = field(default_factory=list)
    calls: dict[str, int | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    work_ready: bool = False


def _model_runs(config: ExperimentConfig) -> list[tuple[str, str, Any]]:
    """(YAML key, run name, VLMEvalConfig-like fields) of every run that asks a VLM: vlm, the fine-tuned
    models' evaluations, consistency."""
    from medvlm.study import _finetune_eval_fields

    runs: list[tuple[str, str, Any]] = [(f"vlm.{i}", r.name, r) for i, r in enumerate(config.vlm)]
    runs += [(f"consistency.{i}", r.name, r) for i, r in enumerate(config.consistency)]
    runs += [(f"finetune.{i}.evaluate", f"{r.name}-eval", _finetune_eval_fields(r))
             for i, r in enumerate(config.finetune) if r.evaluate is not None]
    return runs


# ------------------------------------------------------------------------------------------- paths
def _check_paths(config: ExperimentConfig, paths: Any, task: Any = None) -> list[str]:
    from medvlm.experiment_task import check_task_source, is_task_file
    from medvlm.hub import check_model_source

    problems = []
    if config.data.path is not None and is_task_file(config.task):  # its source file, not a BraTS layout
        try:
            if task:  # else the task file is unreadable: said once
                check_task_source(task, paths.data)
        except (MedVLMError, OSError) as exc:
            problems.append(f"data.path: {exc}")
    elif config.data.path is not None:
        try:
            from medvlm.data.brats import discover

            discover(paths.data)
        except (MedVLMError, OSError) as exc:
            problems.append(f"data.path: {exc}")
    for where, _name, run in _model_runs(config):
        if where.endswith(".evaluate"):  # a fine-tuned model's evaluation: checked with its run below
            continue
        fields = run.model_dump()
        prompts = fields.get("prompts") or ([fields["prompt"]] if fields.get("prompt") else [])
        for prompt in prompts:
            resolved = paths.prompt(prompt)
            if resolved != prompt and not Path(resolved).is_file():
                problems.append(f"{where}.prompt: {resolved}: no such prompt file")
        if fields.get("adapter") and not paths.resolve(fields["adapter"]).is_dir():
            problems.append(f"{where}.adapter: {paths.resolve(fields['adapter'])}: no such folder")
        if fields.get("backend") == "transformers" and fields["model"] != TINY_MODEL:
            try:
                check_model_source(paths.model(fields["model"]), option=f"{where}.model")
            except MedVLMError as exc:
                problems.append(str(exc))
    for i, run in enumerate(config.finetune):
        if run.base_model != TINY_MODEL:
            try:
                check_model_source(paths.model(run.base_model), option=f"finetune.{i}.base_model")
            except MedVLMError as exc:
                problems.append(str(exc))
        prompts = {f"finetune.{i}.prompt": run.prompt,
                   f"finetune.{i}.evaluate.prompt": (run.evaluate or {}).get("prompt")}
        for where, prompt in prompts.items():
            resolved = paths.prompt(prompt) if prompt else None
            if resolved and resolved != prompt and not Path(resolved).is_file():
                problems.append(f"{where}: {resolved}: no such prompt file")
    return problems


# ------------------------------------------------------------------------------------------ servers
def check_server(url: str, model: str, *, client: Any = None) -> str | None:
    """None when ``url`` answers and serves ``model``; else one line saying what is wrong (credentials
    in the URL masked; the API key comes from ``OPENAI_API_KEY`` and is never shown)."""
    import httpx

    from medvlm.vlm._secrets import redact_url
    from medvlm.vlm._server_errors import explain_refusal, served_models
    from medvlm.vlm.backends import api_key

    url = url.rstrip("/")
    shown = redact_url(url)
    own = client is None
    if own:
        key = api_key()
        client = httpx.Client(headers={"Authorization": f"Bearer {key}"} if key else {},
                              timeout=httpx.Timeout(SERVER_TIMEOUT_S))
    try:
        try:
            client.get(f"{url}/models", timeout=SERVER_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return (f"{shown}: cannot reach the server ({type(exc).__name__}); check base_url and that the "
                    "server is running")
        served = served_models(client, url)
        if served is not None and model in served:
            return None
        body = {"model": model, "messages": [{"role": "user", "content": "Reply with 0."}], "max_tokens": 1}
        try:
            resp = client.post(f"{url}/chat/completions", json=body, timeout=SERVER_TIMEOUT_S * 2)
        except httpx.HTTPError as exc:
            return f"{shown}: no answer to a one-token request for model {model!r} ({type(exc).__name__})"
        if resp.status_code == 200:
            return None
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            return (f"{shown}: HTTP {resp.status_code} to a one-token request for model {model!r}; try again "
                    "later")
        return explain_refusal(shown, resp.status_code, resp.text[:2000], model=model, served=served)
    finally:
        if own:
            client.close()


def _check_servers(config: ExperimentConfig) -> list[str]:
    """One line per (server, model) of the openai runs that is unreachable or does not serve the model."""
    from medvlm.vlm._secrets import Redactor, url_secrets
    from medvlm.vlm.backends import api_key
    from medvlm.vlm.openai_compat import DEFAULT_BASE_URL

    problems, seen = [], set()
    for where, name, run in _model_runs(config):
        fields = run if isinstance(run, dict) else run.model_dump()
        if fields.get("backend") != "openai":
            continue
        for url in fields.get("base_urls") or [DEFAULT_BASE_URL]:
            if (url, fields["model"]) in seen:
                continue
            seen.add((url, fields["model"]))
            try:
                problem = check_server(url, fields["model"])
            except MedVLMError as exc:  # OPENAI_API_KEY unusable as a header
                problem = str(exc)
            if problem:
                redact = Redactor([api_key() or "", *url_secrets(url)])
                problems.append(f"{where} ({name}): {redact(problem)}")
    return problems


# ------------------------------------------------------------------------------------------ options
def keyed(where: str, name: str, message: str) -> str:
    """``vlm.0.shots: --shots 2 with ...``: a command's one-line error under the run's YAML key (the key
    of the option it starts with, else the run's own key and name)."""
    import re

    found = re.match(r"--([a-z][a-z-]*)", message)
    if found:
        return f"{where}.{found.group(1).replace('-', '_')}: {message}"
    return f"{where} ({name}): {message}"


def _check_litellm(fields: dict[str, Any]) -> None:
    """eval-vlm's own litellm checks (a provider LiteLLM knows, its keys set), without any request."""
    from medvlm.vlm.litellm_backend import check_environment, load_litellm, provider_of

    litellm = load_litellm()
    provider, _ = provider_of(litellm, fields["model"])
    urls = fields.get("base_urls") or []
    check_environment(litellm, fields["model"], provider, urls[0] if urls else None)


def _check_run_options(config: ExperimentConfig, paths: Any, where: str, run: Any, ready: bool,
                       task: Any = None) -> None:
    """The checks eval-vlm / consistency make before any work: options (validate_config), litellm,
    few-shot refusals; with a prepared work folder also the data-dependent few-shot ones."""
    from medvlm.study import _fields, _vlm_config
    from medvlm.vlm.evaluate import validate_config
    from medvlm.vlm.fewshot import check_cohort

    fields = dict(run) if isinstance(run, dict) else _fields(run)
    if fields.get("backend") == "litellm":
        _check_litellm(fields)
    consistency = where.startswith("consistency")
    checked = None
    if not consistency:
        checked = validate_config(_vlm_config(paths, fields, False), task or config.task)[0]
    shots = int(fields.get("shots") or 0)
    if not shots:
        return
    picked = consistency and (fields.get("patients") or fields.get("pick"))
    cohort = "--patient" if picked else fields["cohort"]
    check_cohort(shots, cohort=cohort, fold=fields["fold"], evaluated=[], training=[], work=paths.work)
    if ready and checked is not None:
        _check_shots_on_data(paths, checked)


def _check_shots_on_data(paths: Any, run: Any) -> None:
    """make_sampler's checks on the prepared work folder (the evaluated patients and the training pool)."""
    from medvlm.data.cohorts import load_cohort
    from medvlm.data.slices import parse_modalities
    from medvlm.tasks import work_task
    from medvlm.vlm.fewshot import make_sampler
    from medvlm.vlm.options import first_patients

    task = work_task(paths.work)
    run = run.for_task(task)
    cohort = load_cohort(paths.work, run.cohort, fold=run.fold)
    make_sampler(paths.work, run.shots, task=task, cohort=run.cohort, fold=run.fold,
                 evaluated=first_patients(cohort.patient_ids, run.limit),
                 orientations=list(run.orientations or []), selection=run.slices or "",
                 modalities=parse_modalities(run.modalities) if task.modalities else ())


def check_options(config: ExperimentConfig, paths: Any, ready: bool, task: Any = None) -> list[str]:
    """One line per model-calling run whose options its command would refuse before any work (``task``:
    the config's task YAML, loaded; None: ``config.task`` is a registered name)."""
    problems = []
    for where, name, run in _model_runs(config):
        try:
            _check_run_options(config, paths, where, run, ready, task)
        except MedVLMError as exc:
            problems.append(keyed(where, name, str(exc)))
    return problems


# --------------------------------------------------------------------------------------------- plan
def _vlm_calls(work: Path, fields: dict[str, Any], paths: Any) -> int | None:
    """Model calls of one eval-vlm run on ``work``: every image of every unit, times repeats."""
    from medvlm.data.cohorts import cohort_units, load_cohort, read_manifest
    from medvlm.data.slices import parse_modalities, unit_images
    from medvlm.study import _vlm_config
    from medvlm.tasks import work_task
    from medvlm.vlm.evaluate import validate_config
    from medvlm.vlm.options import first_patients

    task = work_task(work)
    config, *_ = validate_config(_vlm_config(paths, fields, False), task)
    cohort = load_cohort(work, config.cohort, fold=config.fold)
    keep = first_patients(cohort.patient_ids, config.limit)
    cohort = type(cohort)(cohort.name, keep, cohort.labels[:len(keep)])
    orientations = list(config.orientations or [])
    units = cohort_units(work, cohort, unit=task.unit, orientations=orientations)
    manifest = read_manifest(work, ok_only=True).set_index("patient_id", drop=False)
    total, _images = unit_images(manifest, units, orientations=orientations, selection=config.slices or "",
                                 modalities=parse_modalities(config.modalities), unit=task.unit)
    return None if total is None else total * config.repeats


def _consistency_calls(work: Path, run: Any) -> int | None:
    """Model calls of one consistency run: images x prompts x temperatures x repeats (one image per
    patient; per class with labelled slices for a slice-level task without ``slice``)."""
    from medvlm.data.cohorts import Cohort, cohort_units, load_cohort
    from medvlm.tasks import work_task
    from medvlm.vlm.options import first_patients

    task = work_task(work)
    if run.pick:
        ids = ["picked"]
    elif run.patients:
        ids = list(dict.fromkeys(run.patients))
    else:
        ids = load_cohort(work, run.cohort, fold=run.fold).patient_ids
    ids = first_patients(ids, run.limit)
    n_images = len(ids)
    if task.unit == "slice" and run.slice_index is None and not run.pick:
        orientation = run.orientation or task.default_orientations[0]
        units = cohort_units(work, Cohort("selected", ids, [0] * len(ids)), unit=task.unit,
                             orientations=[orientation])
        n_images = int(units.groupby("patient_id")["label"].nunique().sum())
    return n_images * max(1, len(run.prompts)) * max(1, len(run.temperatures)) * run.repeats


def plan_calls(config: ExperimentConfig, paths: Any) -> tuple[dict[str, int | None], list[str]]:
    """Planned model calls per run (None: unknown until prepare), and problems found while counting."""
    from medvlm.study import _calibrate_stages, _fields

    ready = (paths.work / "manifest.csv").is_file() and (paths.work / "splits.json").is_file()
    calls: dict[str, int | None] = {}
    problems: list[str] = []
    vlm_fields = {r.name: _fields(r) for r in config.vlm}
    vlm_fields.update({f"{r.name}-eval": _finetune_eval_fields_of(r, paths) for r in config.finetune
                       if r.evaluate is not None})
    for stage, _shown in _calibrate_stages(config, paths, {n: ("", f) for n, f in vlm_fields.items()}, False):
        if stage.name not in {r.name for r in config.calibrate}:  # the validation evaluation it needs
            run_name = stage.name.rsplit("-val", 1)[0]
            fold = int(stage.name.rsplit("-val", 1)[1])
            vlm_fields[stage.name] = {**vlm_fields[run_name], "cohort": "val", "fold": fold}
    for name, fields in vlm_fields.items():
        calls[name] = None
        if ready:
            try:
                calls[name] = _vlm_calls(paths.work, fields, paths)
            except MedVLMError as exc:
                problems.append(f"{name}: {exc}")
    for run in config.consistency:
        calls[run.name] = None
        if ready:
            try:
                calls[run.name] = _consistency_calls(paths.work, run)
            except MedVLMError as exc:
                problems.append(f"{run.name}: {exc}")
    return calls, problems


def check_classes(config: ExperimentConfig, paths: Any) -> list[str]:
    """One line per ``calibrate:`` run when the task has more than two classes (``medvlm calibrate``
    refuses them: it fits a binary threshold); none for a binary task or a task file that cannot be read
    (the other checks say why)."""
    from medvlm.tasks import get_task

    if not config.calibrate:
        return []
    try:
        task = get_task(paths.task())
    except (MedVLMError, OSError):
        return []
    if task.n_classes <= 2:
        return []
    return [f"calibrate.{i} ({run.name}): task {task.name} has {task.n_classes} classes "
            f"({', '.join(task.classes)}); calibrate fits a threshold on the positive-class score of a "
            "binary task and takes two-class tasks only" for i, run in enumerate(config.calibrate)]


def _finetune_eval_fields_of(run: Any, paths: Any) -> dict[str, Any]:
    from medvlm.study import _finetune_eval_fields

    return {**_finetune_eval_fields(run), "adapter": None}


def check_experiment(config: ExperimentConfig, *, out: Path | None, base_dir: Path,
                     servers: bool = True) -> CheckResult:
    """Check ``config`` as ``run --check`` does (see the module docstring); ``out``: ``--out`` (absolute)
    or None for the file's own ``out`` (relative to ``base_dir``)."""
    from contextlib import nullcontext

    from medvlm.experiment_task import check_task, with_prompt_files
    from medvlm.study import _Paths, plan_stages

    target = out or Path(config.out)
    target = (target if target.is_absolute() else base_dir / target).resolve()
    paths = _Paths(config, target, base_dir)
    result = CheckResult(out=target, stages=[s.name for s in plan_stages(config, paths, progress=False)])
    result.work_ready = (paths.work / "manifest.csv").is_file() and (paths.work / "splits.json").is_file()
    try:  # a task YAML: read and checked as load_experiment does (the runs' options are checked against it)
        task = check_task(config, base_dir)
    except MedVLMError as exc:
        result.problems.append(str(exc))
        task = False
    result.problems += _check_paths(config, paths, task)
    if servers:
        result.problems += _check_servers(config)
    said = {p.split(": ", 1)[0] for p in result.problems}  # a key already named (a missing prompt file)
    refused = []  # an unreadable task file (task False): said once above
    if task is not False:
        with (with_prompt_files(task) if task is not None else nullcontext()) as prompted:
            refused = [p for p in check_options(config, paths, result.work_ready, prompted)
                       if p.split(": ", 1)[0] not in said]
    result.problems += refused
    result.calls, problems = plan_calls(config, paths)
    if refused:  # a run whose options are refused fails counting the same way: said once above
        problems = [p for p in problems if not any(p.endswith(r.split(": ", 1)[1]) for r in refused)]
    result.problems += problems
    result.problems += check_classes(config, paths)
    return result
