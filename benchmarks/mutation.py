"""Mutation testing of the modules whose bugs change numbers (``make mutation``; benchmarks/MUTATION.md).

mutmut (configured in pyproject.toml, ``[tool.mutmut]``) copies ``src/`` to ``mutants/``, makes every
one-line mutant of the listed modules, runs the selected tests once to record which tests call which
function, then runs each mutant against only the tests that call its function (``-m "not slow"``,
``-x``). This script runs it and reports the score per module::

    python benchmarks/mutation.py run [--max-children N] [MUTANT_GLOB ...]   # then the report
    python benchmarks/mutation.py run --retest      # only mutants not killed yet (after new tests)
    python benchmarks/mutation.py report [--survivors] [--stubs] [--json PATH]
    python benchmarks/mutation.py hand              # the hand-written mutants below must all be killed
    python benchmarks/mutation.py rekey [--prune]   # follow moved code in the equivalents file

Score = killed / (mutants - equivalent - unobservable). A timeout counts as killed (the mutant changed
behaviour: it hangs), "no tests" as survived (no test calls the function). The mutants excluded from the
score are listed in ``benchmarks/mutation_equivalent.toml`` with their mutated line and the reason:
``equivalent`` (no input can tell them from the original) or ``unobservable`` (a warning's stacklevel:
mutmut's trampoline adds stack frames, so only a test outside mutmut can see it; each such test has a
hand mutant below). An entry whose mutant changed (the line differs) or was killed is reported as stale,
so the list cannot drift from the code unnoticed.

``mutants/`` keeps the results: a second ``run`` retests only mutants of functions that changed (mutmut
hashes each function), and a change to pyproject.toml (the test selection) resets them; delete
``mutants/`` for a run from scratch.

mutmut mutates function bodies only: module constants (a task's classes and answer words, the parser's
keyword), ``@property`` methods and code run at import (the tasks' parsers are built then) are out of its
reach, and it changes the text of a string only by case or by wrapping it in "XX" (a SQL guard dropped, a
regex alternative removed are not among its mutants). :data:`HAND_MUTANTS` are one-line bugs of exactly
those kinds, and the four survivors that started this (issue 20); ``hand`` applies each to a copy of
``src/`` and runs the named tests, which must fail. A hand mutant whose line is no longer in the file is
reported as stale.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = ROOT / "benchmarks" / "mutation_equivalent.toml"
#: mutmut's exit codes -> the report's columns (mutmut.stats.status_by_exit_code)
KILLED = {1, 3, 24, -24, 152, 255, 36}  # test failure, pytest internal error, timeouts
SURVIVED = {0}
NO_TESTS = {5, 33}
KEYS = ("mutants", "killed", "survived", "no tests", "equivalent", "unobservable", "not checked")


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _modules() -> list[str]:
    """The mutated source files, from ``[tool.mutmut] only_mutate`` (globs expanded)."""
    cfg = _load_toml(ROOT / "pyproject.toml")["tool"]["mutmut"]
    files: list[str] = []
    for pattern in cfg["only_mutate"]:
        for path in sorted(ROOT.glob(pattern)):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in files:
                files.append(rel)
    return files


def _results(path: str) -> dict[str, int | None] | None:
    """mutmut's exit code per mutant of ``path`` (None: not generated yet; {}: a file without functions)."""
    meta = ROOT / "mutants" / f"{path}.meta"
    if not meta.is_file():
        return None
    return json.loads(meta.read_text())["exit_code_by_key"]


def _mutated_line(name: str, path: str) -> str:
    """The first added line of a mutant's diff, stripped (how the equivalents file names a mutant)."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant

        diff = get_diff_for_mutant(name, path=path)
    finally:
        os.chdir(cwd)
    added = [line[1:].strip() for line in diff.splitlines()
             if line.startswith("+") and not line.startswith("+++")]
    return added[0] if added else ""


def _status(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    return "not checked" if code is None else f"other ({code})"


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def report(*, survivors: bool = False, json_path: str | None = None, stubs: bool = False) -> int:
    """Print the score per module (and the surviving mutants); 1 when a module has no results yet."""
    equivalent = _load_toml(EQUIVALENT) if EQUIVALENT.is_file() else {}
    rows, missing, stale, open_survivors = [], [], [], []
    totals: Counter = Counter()
    for path in _modules():
        results = _results(path)
        if results is None:
            missing.append(path)
            continue
        counts: Counter = Counter()
        for name, code in results.items():
            status = _status(code)
            entry = equivalent.get(name)
            if entry is not None:
                line = _mutated_line(name, path)
                if status == "killed" or line != entry["line"]:
                    stale.append((name, entry["line"], line, status))
                else:
                    counts[entry.get("kind", "equivalent")] += 1
                    continue
            counts[status] += 1
            if status in ("survived", "no tests"):
                open_survivors.append((name, path, status))
        counts["mutants"] = len(results)
        tested = counts["mutants"] - counts["equivalent"] - counts["unobservable"]
        score = counts["killed"] / tested if tested else None
        rows.append({"module": path, **{k: counts[k] for k in KEYS}, "score": score})
        totals.update(counts)
    tested = totals["mutants"] - totals["equivalent"] - totals["unobservable"]
    total = {"module": "all", **{k: totals[k] for k in KEYS},
             "score": totals["killed"] / tested if tested else None}
    head = ["module", "mutants", "killed", "survived", "no tests", "equivalent", "unobservable", "score"]
    if totals["not checked"]:
        head.insert(-1, "not checked")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for row in [*rows, total]:
        cells = [f"`{row['module']}`" if row["module"] != "all" else "**all**",
                 *[str(row[k]) for k in head[1:-1]],
                 "n/a" if row["score"] is None else f"{100 * row['score']:.1f}%"]
        print("| " + " | ".join(cells) + " |")
    for path in missing:
        print(f"no results for {path}: run `python benchmarks/mutation.py run` first", file=sys.stderr)
    for name, want, got, status in stale:
        print(f"stale equivalent entry {name} ({status}): listed line {want!r}, mutant now {got!r}",
              file=sys.stderr)
    if survivors and open_survivors:
        print(f"\n{len(open_survivors)} surviving mutant(s) not listed as equivalent:")
        for name, path, status in open_survivors:
            print(f"{name} [{status}]: {_mutated_line(name, path)}")
    if stubs:  # entries to paste into mutation_equivalent.toml once each is shown to be equivalent
        for name, path, _ in open_survivors:
            print(f'\n[{_toml_string(name)}]\nline = {_toml_string(_mutated_line(name, path))}\nwhy = "TODO"')
    if json_path:
        Path(json_path).write_text(json.dumps({"modules": rows, "all": total,
                                               "survivors": [n for n, _, _ in open_survivors]}, indent=1))
    return 1 if missing else 0


YAML_TASK, YAML_TESTS = "src/medvlm/tasks/yaml_task.py", ["tests/tasks/test_yaml_task_spec.py"]
#: (what the bug is, file, the line's text, the bug's text, tests that must fail)
HAND_MUTANTS = [
    ("percentile interval at [alpha, 1 - alpha]: a '95%' CI is a 90% one (issue 20)",
     "src/medvlm/intervals.py", "np.quantile(ok, [alpha / 2, 1 - alpha / 2])",
     "np.quantile(ok, [alpha, 1 - alpha])", ["tests/test_metrics.py"]),
    ("patient_rows drops tie_break: --tie-break lgg ignored (issue 20)", "src/medvlm/aggregate.py",
     "**_unit_row(frame, task, fn, tie_break)}", "**_unit_row(frame, task, fn, 1)}",
     ["tests/test_aggregate.py"]),
    ("the failure upsert loses its guard: a failure overwrites a cached answer (issue 20)",
     "src/medvlm/vlm/cache.py", """updated=excluded.updated WHERE status='failed'",""",
     """updated=excluded.updated",""", ["tests/vlm/test_vlm_cache_rows.py"]),
    ("check_split stops checking val against test (issue 20)", "src/medvlm/data/split.py",
     " | (set(val) & set(test))", "", ["tests/data/test_split.py"]),
    ("the positive class is the other one (property)", "src/medvlm/tasks/base.py",
     "return self.classes.index(self.positive) if", "return 1 - self.classes.index(self.positive) if",
     ["tests/tasks/test_tasks.py"]),
    ("a task without a named positive class takes the first (property)", "src/medvlm/tasks/base.py",
     "if self.positive is not None else self.n_classes - 1", "if self.positive is not None else 0",
     ["tests/tasks/test_tasks.py"]),
    ("answer codes shifted by one (property)", "src/medvlm/tasks/base.py",
     "return self.answer_digits or tuple(str(i) for i in range(len(self.answers)))",
     "return self.answer_digits or tuple(str(i + 1) for i in range(len(self.answers)))",
     ["tests/tasks/test_tasks.py"]),
    ("answer names from the wrong field (property)", "src/medvlm/tasks/base.py",
     "return {str(i): a.name for i, a in enumerate(self.answers)}",
     "return {str(i): a.count_column for i, a in enumerate(self.answers)}", ["tests/tasks/test_tasks.py"]),
    ("slice units keyed without their orientation (constant)", "src/medvlm/tasks/base.py",
     '"slice": ["orientation", "slice_index"]', '"slice": ["slice_index"]', ["tests/tasks/test_tasks.py"]),
    ("brats-grading: 'low grade' read as HGG (constant)", "src/medvlm/tasks/brats_grading.py",
     r'(r"low[\s-]*grade(?:\s+glioma)?|\blgg\b", 0)', r'(r"low[\s-]*grade(?:\s+glioma)?|\blgg\b", 1)',
     ["tests/tasks/test_brats_grading_parser.py"]),
    ("brats-grading: LGG is the positive class (constant)", "src/medvlm/tasks/brats_grading.py",
     'positive="HGG"', 'positive="LGG"', ["tests/tasks/test_tasks.py", "tests/test_aggregate.py"]),
    ("brats-tumour: a negated answer reads as tumour (constant)", "src/medvlm/tasks/brats_tumour.py",
     "(_NEGATED, 0),", "(_NEGATED, 1),", ["tests/tasks/test_tasks.py"]),
    ("parser: 'answer' is no longer a keyword (constant)", "src/medvlm/vlm/parsing.py",
     r'_KEYWORD = r"(?:choice|answer|classification|final\s+answer)"',
     r'_KEYWORD = r"(?:choice|classification|final\s+answer)"', ["tests/tasks/test_brats_grading_parser.py"]),
    ("parser: a hedge '1 or 2' reads as 1 (f-string regex)", "src/medvlm/vlm/parsing.py",
     r'r"(?!\s*[,/]\s*\d)(?!\s*(?:or|and)\s+\d)",', r'r"(?!\s*[,/]\s*\d)",',
     ["tests/tasks/test_brats_grading_parser.py"]),
    ("parser: 'Choice: 1.5' reads as 1 (f-string regex)", "src/medvlm/vlm/parsing.py",
     r"({d})(?!\d|\.\d)", r"({d})(?!\d)", ["tests/tasks/test_brats_grading_parser.py"]),
    ("parser: a digit followed by prose reads as a bare answer (f-string regex)", "src/medvlm/vlm/parsing.py",
     r'self._bare = re.compile(rf"^\s*[\(\[]?({d})[\)\]]?\s*[.:]?\s*$")',
     r'self._bare = re.compile(rf"^\s*[\(\[]?({d})[\)\]]?\s*[.:]?")',
     ["tests/tasks/test_brats_grading_parser.py"]),
    ("slices: axial and coronal swapped (constant)", "src/medvlm/data/slices.py",
     'AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}', 'AXIS = {"sagittal": 0, "coronal": 2, "axial": 1}',
     ["tests/data/test_slices.py"]),
    ("stacklevel: the bootstrap warning names metrics.py, not the caller (unobservable under mutmut)",
     "src/medvlm/metrics.py", 'f" of {int(n_boot)})", MetricWarning, stacklevel=2)',
     'f" of {int(n_boot)})", MetricWarning, stacklevel=1)', ["tests/test_metrics.py"]),
    ("stacklevel: a DeLong warning names stats.py, not the caller (unobservable under mutmut)",
     "src/medvlm/stats.py", 'the test cohort has one class only", StatsWarning, stacklevel=2)',
     'the test cohort has one class only", StatsWarning, stacklevel=1)', ["tests/test_stats.py"]),
    ("stacklevel: the no-LGG warning names split.py, not the caller (unobservable under mutmut)",
     "src/medvlm/data/split.py", "warnings.warn(note, UserWarning, stacklevel=2)",
     "warnings.warn(note, UserWarning, stacklevel=1)", ["tests/data/test_split.py"]),
    ("metrics: precision and recall swapped in CI_METRICS (constant)", "src/medvlm/metrics.py",
     'CI_METRICS = ("accuracy", "precision", "recall",', 'CI_METRICS = ("accuracy", "recall", "precision",',
     ["tests/test_metrics.py"]),
    ("calibration: EPS 1e-12 -> 1e-6, a confident wrong score costs 13.8, not 27.6 (constant)",
     "src/medvlm/calibration.py", "EPS = 1e-12", "EPS = 1e-6", ["tests/test_calibration.py"]),
    ("calibration: 15 reliability bins, not 10 (constant)", "src/medvlm/calibration.py", "N_BINS = 10",
     "N_BINS = 15", ["tests/test_calibration.py"]),
    ("controls: the spike artifact back to num_spikes=1, no spike in half the draws (a tuple mutmut keeps)",
     "src/medvlm/data/controls.py", "tio.RandomSpike(num_spikes=(1, 1),", "tio.RandomSpike(num_spikes=1,",
     ["tests/data/test_controls.py"]),
    ("controls: Artifact.spec loses its :g, run.json says spike:0.0 (property)",
     "src/medvlm/data/controls.py",
     'return f"{self.kind}:{self.severity:g}"', 'return f"{self.kind}:{self.severity}"',
     ["tests/data/test_controls.py"]),
    ("controls: noise is no longer an image variant (constant)", "src/medvlm/data/controls.py",
     'IMAGE_VARIANTS = ("real", "none", "blank", "noise", "tumour-masked")',
     'IMAGE_VARIANTS = ("real", "none", "blank", "tumour-masked")', ["tests/data/test_controls.py"]),
    # yaml_task.py's validators are decorated (@field_validator/@model_validator), which mutmut skips
    ("yaml task: class names no longer stripped (validator)", YAML_TASK,
     "value = [str(c).strip() for c in value]", "value = [str(c) for c in value]", YAML_TESTS),
    ("yaml task: an empty class name only refused when all are (validator)", YAML_TASK,
     "if any(not c for c in value):", "if all(not c for c in value):", YAML_TESTS),
    ("yaml task: 'normal' and 'Normal' both accepted (validator)", YAML_TASK,
     "lower = [c.lower() for c in value]", "lower = list(value)", YAML_TESTS),
    ("yaml task: 'no lesion' and 'no-lesion' both accepted (validator)", YAML_TASK,
     "if len({slug(c) for c in value}) != len(value):", "if len(set(value)) != len(value):", YAML_TESTS),
    ("yaml task: an upper-case variant name accepted (validator)", YAML_TASK,
     'if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", str(name)):',
     'if not re.fullmatch(r"[A-Za-z0-9][a-z0-9_-]{0,31}", str(name)):', YAML_TESTS),
    ("yaml task: a blank variant accepted (validator)", YAML_TASK,
     "if not str(text).strip():", "if not str(text):", YAML_TESTS),
    ("yaml task: a binary task without positive accepted (validator)", YAML_TASK,
     "if len(self.classes) == 2:", "if len(self.classes) == 3:", YAML_TESTS),
    ("yaml task: the positive class no longer has a did-you-mean (validator)", YAML_TASK,
     "+ did_you_mean(self.positive, self.classes))", ")", YAML_TESTS),
    ("yaml task: a positive class listed first accepted, labels flipped (validator)", YAML_TASK,
     "if len(self.classes) == 2 and self.classes.index(self.positive) != 1:",
     "if len(self.classes) == 2 and self.classes.index(self.positive) != 0:", YAML_TESTS),
    ("yaml task: a positive class named for three classes accepted (validator)", YAML_TASK,
     "if len(self.classes) > 2:", "if len(self.classes) > 3:", YAML_TESTS),
    ("yaml task: eleven classes accepted, codes beyond one digit (constant)", YAML_TASK,
     "MAX_CLASSES = 10", "MAX_CLASSES = 11", YAML_TESTS),
    ("yaml task: a 65-character name accepted (constant)", YAML_TASK,
     '_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"', '_NAME = r"^[a-z0-9][a-z0-9._-]{0,64}$"', YAML_TESTS),
    ("yaml task: variant prompts named without the task name (f-string, no mutmut mutants)", YAML_TASK,
     'return [spec.name, *(f"{spec.name}-{v}" for v in spec.variants)]',
     'return [spec.name, *(f"{v}" for v in spec.variants)]', YAML_TESTS),
    ("medmnist: the file's splits read in another order (constant)", "src/medvlm/data/medmnist.py",
     'SPLITS = ("train", "val", "test")', 'SPLITS = ("train", "test", "val")',
     ["tests/data/test_medmnist_npz.py"]),
    # held-out hand mutants (issue 20, "fresh held-out mutations"): bugs a reviewer writes and mutmut cannot
    # (swapped arguments, off-by-one slices, dropped guards or regex alternatives, SQL conditions, axes,
    # seeds, with/without replacement); their tests: "hand-written held-out bugs (issue 20)" in each test file
    ("held-out: auc's one-class check on every label, not the rows with a score (an error, not None)",
     "src/medvlm/metrics.py", "elif len(set(ys.tolist())) < 2:", "elif len(set(y.tolist())) < 2:",
     ["tests/test_metrics.py"]),
    ("held-out: a score above 1 taken as a probability (brier, ece, ...)", "src/medvlm/metrics.py",
     "if not s.size or s.min() < 0 or s.max() > 1:", "if not s.size or s.min() < 0:",
     ["tests/test_metrics.py"]),
    ("held-out: padded patient ids in a predictions file not stripped", "src/medvlm/metrics.py",
     'df["patient_id"] = df["patient_id"].str.strip()', 'df["patient_id"] = df["patient_id"]',
     ["tests/test_metrics.py"]),
    ("held-out: read_predictions names the last bad row, not the first", "src/medvlm/metrics.py",
     "row = int(np.flatnonzero(bad.to_numpy())[0])\n            raw = df[col].iloc[row]",
     "row = int(np.flatnonzero(bad.to_numpy())[-1])\n            raw = df[col].iloc[row]",
     ["tests/test_metrics.py"]),
    ("held-out: the bootstrap draws patients without replacement (a permutation)", "src/medvlm/metrics.py",
     "pick = rng.integers(0, k, size=k)", "pick = rng.permutation(k)", ["tests/test_metrics.py"]),
    ("held-out: the bootstrap seed not passed on", "src/medvlm/metrics.py",
     "rng = np.random.default_rng(seed)\n    groups", "rng = np.random.default_rng()\n    groups",
     ["tests/test_metrics.py"]),
    ("held-out: McNemar without its continuity correction", "src/medvlm/stats.py",
     "statistic = (abs(b - c) - 1) ** 2 / (b + c)", "statistic = (b - c) ** 2 / (b + c)",
     ["tests/test_stats.py"]),
    ("held-out: the DeLong p-value halved (one-sided)", "src/medvlm/stats.py",
     "p = float(2 * norm.sf(abs(z)))", "p = float(norm.sf(abs(z)))", ["tests/test_stats.py"]),
    ("held-out: the exact McNemar test one-sided", "src/medvlm/stats.py",
     "p = float(binomtest(b, b + c, 0.5).pvalue)",
     'p = float(binomtest(b, b + c, 0.5, alternative="greater").pvalue)',
     ["tests/test_stats.py"]),
    ("held-out: the second file's rows not aligned to the first's", "src/medvlm/stats.py",
     "sb = sb.loc[sa.index]", "sb = sb", ["tests/test_stats.py"]),
    ("held-out: the positive share computed of the negatives (arguments swapped)", "src/medvlm/aggregate.py",
     "share = vote_share(sum(votes) - votes[positive], votes[positive])",
     "share = vote_share(votes[positive], sum(votes) - votes[positive])", ["tests/test_aggregate.py"]),
    ("held-out: mean_prob reads the probabilities when only some columns exist", "src/medvlm/aggregate.py",
     "has_probs = all(c in frame.columns for c in prob_cols)",
     "has_probs = any(c in frame.columns for c in prob_cols)", ["tests/test_aggregate.py"]),
    ("held-out: a K-class tie goes to the last class, not the first", "src/medvlm/tasks/base.py",
     "return self.positive_label if self.positive is not None or self.n_classes == 2 else 0",
     "return self.positive_label if self.positive is not None or self.n_classes == 2 else self.n_classes - 1",
     ["tests/test_aggregate_multiclass.py"]),
    ("held-out parser: a blank first line read as the answer line", "src/medvlm/vlm/parsing.py",
     'first = next((line for line in clean.splitlines() if line.strip()), "")\n        match',
     'first = (clean.splitlines() or [""])[0]\n        match', ["tests/vlm/test_vlm_parsing.py"]),
    ("held-out parser: swapped codes mapped by the inverse permutation", "src/medvlm/vlm/parsing.py",
     "self._answer = {int(c): i for i, c in enumerate(codes)}",
     "self._answer = {i: int(c) for i, c in enumerate(codes)}", ["tests/vlm/test_vlm_parsing.py"]),
    ("held-out parser: 'rules out' no longer a negation (regex alternative)", "src/medvlm/vlm/parsing.py",
     r"isn'?t|unlikely|rule[sd]?\s+out|excluded?)", r"isn'?t|unlikely|excluded?)",
     ["tests/vlm/test_vlm_name_parser.py"]),
    ("held-out parser: 'normal' found inside 'abnormal' (lookbehind removed)", "src/medvlm/vlm/parsing.py",
     r'return re.compile(r"(?<![^\W_])" + r"[\s_\-]*".join(words)',
     r'return re.compile(r"" + r"[\s_\-]*".join(words)',
     ["tests/vlm/test_vlm_name_parser.py"]),
    ("held-out parser: the article 'the' before a name not dropped (regex alternative)",
     "src/medvlm/vlm/parsing.py",
     r're.sub(r"^(?:a|an|the)\s+", "", phrase, flags=re.IGNORECASE)',
     r're.sub(r"^(?:a|an)\s+", "", phrase, flags=re.IGNORECASE)', ["tests/vlm/test_vlm_name_parser.py"]),
    ("held-out parser: a heading 'Answer:' with its colon is no heading", "src/medvlm/vlm/parsing.py",
     r'_HEADING = re.compile(rf"^\s*(?:the\s+|my\s+)?{_KEYWORD}\s*:?\s*$", re.IGNORECASE)',
     r'_HEADING = re.compile(rf"^\s*(?:the\s+|my\s+)?{_KEYWORD}\s*$", re.IGNORECASE)',
     ["tests/vlm/test_vlm_name_parser.py"]),
    ("held-out parser: a full stop no longer ends the name's fragment", "src/medvlm/vlm/parsing.py",
     r'_FRAGMENT_END = re.compile(r"[,;\n]|\.(?:\s|$)|$")', r'_FRAGMENT_END = re.compile(r"[,;\n]|$")',
     ["tests/vlm/test_vlm_name_parser.py"]),
    ("held-out parser: a dash after a name no longer ends its phrase", "src/medvlm/vlm/parsing.py",
     r"""(?:$|[.,;:!?)\]\"'(]|[-\u2013\u2014]\s)")""", r"""(?:$|[.,;:!?)\]\"'(])")""",
     ["tests/vlm/test_vlm_name_parser.py"]),
    ("held-out parser: a first-line code's words not checked against it", "src/medvlm/vlm/parsing.py",
     "if not self._plain._digit.search(clean):", "if False:", ["tests/vlm/test_vlm_name_parser.py"]),
    ("held-out cache: get() reads failed rows too (WHERE status dropped)", "src/medvlm/vlm/cache.py",
     "\"WHERE key=? AND status='ok'\"", '"WHERE key=?"', ["tests/vlm/test_vlm_cache_rows.py"]),
    ("held-out cache: failure() reads answered rows too (WHERE status dropped)", "src/medvlm/vlm/cache.py",
     "\"SELECT error FROM answers WHERE key=? AND status='failed'\"",
     '"SELECT error FROM answers WHERE key=?"',
     ["tests/vlm/test_vlm_cache_rows.py"]),
    ("held-out cache: an answer keeps the error of an earlier failure", "src/medvlm/vlm/cache.py",
     "finish_reason=excluded.finish_reason, error=NULL, extra=excluded.extra",
     "finish_reason=excluded.finish_reason, extra=excluded.extra", ["tests/vlm/test_vlm_cache_rows.py"]),
    ("held-out cache: the v1 migration swaps codes 0 and 1", "src/medvlm/vlm/cache.py",
     "dict(zip(codes, (p0, p1, p2), strict=True))", "dict(zip(codes, (p1, p0, p2), strict=True))",
     ["tests/vlm/test_vlm_cache_rows.py"]),
    ("held-out cache: a damaged file's -wal stays behind", "src/medvlm/vlm/cache.py",
     'for suffix in ("-wal", "-shm", "-journal"):', 'for suffix in ("-shm", "-journal"):',
     ["tests/vlm/test_vlm_cache_rows.py"]),
    ("held-out split: the test set not stratified", "src/medvlm/data/split.py",
     "test_size=test_fraction, stratify=ys,", "test_size=test_fraction,", ["tests/data/test_split.py"]),
    ("held-out split: a half-filled split column taken as the source's split", "src/medvlm/data/split.py",
     'if len(own) and (own != "").all():', 'if len(own) and (own != "").any():',
     ["tests/data/test_image_split.py"]),
    ("held-out split: images of a patient in val and test accepted", "src/medvlm/data/split.py",
     "both = (train & val) | (train & test) | (val & test)", "both = (train & val) | (train & test)",
     ["tests/data/test_image_split.py"]),
    ("held-out split: an empty source cohort also warned as a fold without classes",
     "src/medvlm/data/split.py",
     "if fold[name] and missing:", "if missing:", ["tests/data/test_image_split.py"]),
    ("held-out split: the image-share note only from 20 points off", "src/medvlm/data/split.py",
     "IMAGE_SHARE_GAP = 0.1", "IMAGE_SHARE_GAP = 0.2", ["tests/data/test_split_image_share.py"]),
    ("held-out slices: the tumour range loses its last slice", "src/medvlm/data/slices.py",
     "indices = list(range(lo, hi + 1))", "indices = list(range(lo, hi))", ["tests/data/test_slices.py"]),
    ("held-out slices: 'central:3x' accepted (fullmatch -> match)", "src/medvlm/data/slices.py",
     r'match = re.fullmatch(r"central:(\d+)", selection)', r'match = re.match(r"central:(\d+)", selection)',
     ["tests/data/test_slices.py"]),
    ("held-out slices: the artifact draw not seeded by the patient", "src/medvlm/data/slices.py",
     'seed=derived_seed("artifact", artifact.kind, patient_id, int(seed)))',
     'seed=derived_seed("artifact", artifact.kind, int(seed)))', ["tests/data/test_controls.py"]),
    ("held-out calibration: isotonic free to decrease (increasing='auto')", "src/medvlm/calibration.py",
     'increasing=True, out_of_bounds="clip"', 'increasing="auto", out_of_bounds="clip"',
     ["tests/test_calibration.py"]),
    ("held-out calibration: risk-coverage keeps the least confident first", "src/medvlm/calibration.py",
     'order = np.argsort(-conf, kind="stable")', 'order = np.argsort(conf, kind="stable")',
     ["tests/test_calibration.py"]),
    ("held-out calibration: multi-class temperature softmax over the wrong axis", "src/medvlm/calibration.py",
     "log_softmax(z / math.exp(log_t), axis=1)", "log_softmax(z / math.exp(log_t), axis=0)",
     ["tests/test_calibration.py"]),
    ("held-out multiclass: support summed over the wrong axis", "src/medvlm/metrics_multiclass.py",
     "support = cm.sum(axis=1).astype(np.float64)", "support = cm.sum(axis=0).astype(np.float64)",
     ["tests/test_metrics_multiclass.py"]),
    ("held-out multiclass: an all-LGG file inferred as one class", "src/medvlm/metrics_multiclass.py",
     "k = max(2, int(labels.max()) + 1) if labels.size else 2",
     "k = int(labels.max()) + 1 if labels.size else 2",
     ["tests/test_metrics_multiclass.py"]),
    ("held-out predictions: a fold's abstention spreads to the ensemble (nanmean -> mean)",
     "src/medvlm/predictions.py", "probs[answered] = np.nanmean(values[:, answered], axis=0)",
     "probs[answered] = np.mean(values[:, answered], axis=0)", ["tests/test_predictions.py"]),
    ("held-out predictions: the ensemble scored only when every fold has scores", "src/medvlm/predictions.py",
     'scored = "score" in df.columns and any(p["score"].notna().any() for p in aligned)',
     'scored = "score" in df.columns and all(p["score"].notna().any() for p in aligned)',
     ["tests/test_predictions.py"]),
    ("held-out predictions: abstain_below edits its input (.copy() dropped)", "src/medvlm/predictions.py",
     "    out = df.copy()\n    answered", "    out = df\n    answered", ["tests/test_predictions.py"]),
    ("held-out few-shot: examples drawn with replacement", "src/medvlm/vlm/fewshot.py",
     "rng.choice(len(candidates), size=n, replace=False)",
     "rng.choice(len(candidates), size=n, replace=True)",
     ["tests/vlm/test_vlm_fewshot.py"]),
    ("held-out medmnist: the label column ignored (the first taken)", "src/medvlm/data/medmnist.py",
     "labels = labels[:, label_column]", "labels = labels[:, 0]", ["tests/data/test_medmnist_npz.py"]),
    ("held-out few-shot: orig_shape read backwards (z taken for x)", "src/medvlm/vlm/fewshot.py",
     'return int(str(row["orig_shape"]).split("x")[axis])',
     'return int(str(row["orig_shape"]).split("x")[::-1][axis])', ["tests/vlm/test_vlm_fewshot.py"]),
    ("held-out parser: the named answer runs past a bracket or punctuation", "src/medvlm/vlm/parsing.py",
     r'self._name_after_keyword = re.compile(rf"\b{_KEYWORD}\b[^\S\n]*[:=\-]\s*([^\n.,;(]*)", re.IGNORECASE)',
     r'self._name_after_keyword = re.compile(rf"\b{_KEYWORD}\b[^\S\n]*[:=\-]\s*([^\n]*)", re.IGNORECASE)',
     ["tests/vlm/test_vlm_parsing.py"]),
    ("held-out split: a test patient outside the cohort accepted", "src/medvlm/data/split.py",
     "if set(train) | set(val) | set(test) != set(labels):",
     "if set(train) | set(val) != set(labels) - set(test):",
     ["tests/data/test_split.py"]),
    # a warning's stacklevel (unobservable under mutmut: its trampoline adds frames): 1 points at medvlm
    ("split_images' source-split note points at split.py, not the caller", "src/medvlm/data/split.py",
     'do not apply", UserWarning, stacklevel=2)', 'do not apply", UserWarning)',
     ["tests/data/test_image_split.py"]),
    ("split_images' empty source cohort note points at split.py", "src/medvlm/data/split.py",
     'no usable image: {name} 0", UserWarning,\n                              stacklevel=2)',
     'no usable image: {name} 0", UserWarning)', ["tests/data/test_image_split.py"]),
    ("split_images' image-share note points at split.py", "src/medvlm/data/split.py",
     '"different numbers of images", UserWarning, stacklevel=2)',
     '"different numbers of images", UserWarning)',
     ["tests/data/test_image_split.py"]),
    ("split_images' class-missing note points at split.py", "src/medvlm/data/split.py",
     '", ".join(names[c] for c in missing), UserWarning, stacklevel=2)',
     '", ".join(names[c] for c in missing), UserWarning)', ["tests/data/test_image_split.py"]),
    ("compare's K-class note points at stats.py", "src/medvlm/stats.py",
     '"(McNemar compares which predicted classes are right)", StatsWarning, stacklevel=2)',
     '"(McNemar compares which predicted classes are right)", StatsWarning)', ["tests/test_stats.py"]),
    ("prepare_medmnist's notes point at medmnist.py", "src/medvlm/data/medmnist.py",
     "warnings.warn(note, UserWarning, stacklevel=2)", "warnings.warn(note, UserWarning)",
     ["tests/data/test_medmnist_layout.py"]),
]


def hand(only: list[str] | None = None) -> int:
    """Apply each hand mutant to a copy of ``src/`` and run its tests; 1 when one survives or is stale."""
    import shutil
    import tempfile

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    bad = 0
    print("| hand mutant | file | result |\n|---|---|---|")
    for what, path, old, new, tests in HAND_MUTANTS:
        if only and not any(o in what for o in only):
            continue
        text = (ROOT / path).read_text(encoding="utf-8")
        if text.count(old) != 1:
            state = "gone" if not text.count(old) else "ambiguous"
            print(f"| {what} | `{path}` | STALE: the line is {state}, update HAND_MUTANTS |")
            bad += 1
            continue
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(ROOT / "src", Path(tmp) / "src", ignore=shutil.ignore_patterns("__pycache__"))
            (Path(tmp) / path).write_text(text.replace(old, new), encoding="utf-8")
            cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                   *tests]
            code = subprocess.call(cmd, cwd=ROOT, env={**env, "PYTHONPATH": f"{tmp}/src"},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = "killed" if code == 1 else "SURVIVED" if code == 0 else f"error (pytest exit {code})"
        bad += result != "killed"
        print(f"| {what} | `{path}` | {result} |")
    return 1 if bad else 0


def open_mutants(patterns: list[str]) -> list[str]:
    """Mutants not killed yet (survived, no tests, not checked) and not listed as equivalent, optionally
    only those matching ``patterns`` (globs): what ``run --retest`` runs after new tests."""
    import fnmatch

    equivalent = _load_toml(EQUIVALENT) if EQUIVALENT.is_file() else {}
    names = []
    for path in _modules():
        for name, code in (_results(path) or {}).items():
            if _status(code) != "killed" and name not in equivalent and (
                    not patterns or any(fnmatch.fnmatch(name, p) for p in patterns)):
                names.append(name)
    return names


def rekey(*, prune: bool = False) -> int:
    """Follow moved code: re-key each stale entry of the equivalents file to the mutant of the same function
    whose mutated line is the one listed (an edit elsewhere in a function renumbers its mutants).

    An entry is kept as it is when its mutant still has the listed line, re-keyed when exactly one mutant of
    its function has it, and reported otherwise (the line is gone: the code changed, so the entry needs a
    person). With ``prune``, entries whose mutant the tests now kill, and entries whose line is gone, are
    removed. Only modules with results are touched. 1 when an entry is left for a person to decide.
    """
    import re

    equivalent = _load_toml(EQUIVALENT) if EQUIVALENT.is_file() else {}
    results: dict[str, tuple[str, int | None]] = {}
    for path in _modules():
        for name, code in (_results(path) or {}).items():
            results[name] = (path, code)
    lines: dict[str, str] = {}

    def line_of(name: str) -> str:
        if name not in lines:
            lines[name] = _mutated_line(name, results[name][0])
        return lines[name]

    moves: dict[str, str] = {}
    drop: list[str] = []
    left = 0
    claimed = {n for n, e in equivalent.items() if n in results and line_of(n) == e["line"]}
    for name, entry in equivalent.items():
        prefix = name.rsplit("__mutmut_", 1)[0]
        if name in claimed or not any(n.startswith(prefix + "__mutmut_") for n in results):
            continue  # up to date, or its module has no results (not run here)
        found = [n for n in results if n.startswith(prefix + "__mutmut_") and n not in claimed
                 and line_of(n) == entry["line"]]
        if len(found) == 1:
            moves[name] = found[0]
            claimed.add(found[0])
            print(f"re-keyed {name} -> {found[0]}")
        else:
            why = "the line is gone" if not found else f"{len(found)} mutants have the line"
            print(f"{'removed' if prune and not found else 'left'} {name}: {why}: {entry['line']!r}")
            if prune and not found:
                drop.append(name)
            else:
                left += 1
    for name in set(moves.values()) & set(equivalent):
        if name not in moves and name not in drop:  # a stale entry whose key another entry now needs
            print(f"removed {name}: its line is gone and another entry's mutant is now {name}")
            drop.append(name)  # else the file would name one mutant twice
            left -= 1
    for old, new in moves.items():
        if _status(results[new][1]) == "killed":
            print(f"{'removed' if prune else 'killed now'} {new} (was {old}): the tests kill it")
            if prune:
                drop.append(old)
            else:
                left += 1
    for name in equivalent:
        if name in claimed and name not in moves.values() and _status(results[name][1]) == "killed":
            print(f"{'removed' if prune else 'killed now'} {name}: the tests kill it")
            if prune:
                drop.append(name)
            else:
                left += 1
    text = EQUIVALENT.read_text(encoding="utf-8")
    blocks = re.split(r'(?m)^(?=\["|# )', text)  # an entry (or a comment) starts each block
    out = []
    for block in blocks:
        head = re.match(r'\["([^"]+)"\]', block)
        key = head.group(1) if head else None
        if key in drop:
            continue
        if key in moves:
            block = block.replace(f'["{key}"]', f'["{moves[key]}"]', 1)
        out.append(block)
    EQUIVALENT.write_text("".join(out), encoding="utf-8")
    return 1 if left else 0


def run(max_children: int, names: list[str]) -> int:
    """``mutmut run`` from the repository root (the mutants, not an installed medvlm, are imported)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    # mutmut forks each mutant from a process that has run tests: a torch (OpenMP) thread pool started
    # before the fork can hang the child (a TorchIO artifact test then waits for mutmut's timeout)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    mutmut = Path(sys.executable).with_name("mutmut")
    cmd = [str(mutmut) if mutmut.exists() else "mutmut", "run", "--max-children", str(max_children), *names]
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    if code != 0:
        print(f"mutmut run exited with {code}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run mutmut, then print the report")
    p_run.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    p_run.add_argument("names", nargs="*", help="only these mutants (globs, e.g. 'medvlm.metrics.*')")
    p_run.add_argument("--retest", action="store_true",
                       help="only the mutants not killed yet and not known equivalent (of NAMES, if given)")
    p_rep = sub.add_parser("report", help="the score per module from the last run")
    p_hand = sub.add_parser("hand", help="the hand-written mutants mutmut cannot make")
    p_hand.add_argument("only", nargs="*", help="only mutants whose description contains one of these")
    p_rekey = sub.add_parser("rekey", help="follow moved code: re-key stale entries of the equivalents file")
    p_rekey.add_argument("--prune", action="store_true",
                         help="also remove entries whose mutant is now killed or whose line is gone")
    for p in (p_run, p_rep):
        p.add_argument("--survivors", action="store_true", help="list surviving mutants not known equivalent")
        p.add_argument("--json", dest="json_path", help="also write the figures to this JSON file")
        p.add_argument("--stubs", action="store_true",
                       help="print the survivors as mutation_equivalent.toml entries (why = TODO)")
    args = parser.parse_args(argv)
    if args.command == "hand":
        return hand(args.only)
    if args.command == "rekey":
        return rekey(prune=args.prune)
    if args.command == "run":
        names = open_mutants(args.names) if args.retest else args.names
        if args.retest and not names:
            print("nothing to retest")
        else:
            run(args.max_children, names)
    return report(survivors=args.survivors, json_path=args.json_path, stubs=args.stubs)


if __name__ == "__main__":
    sys.exit(main())
