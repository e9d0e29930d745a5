"""The report's consistency parts (summary.json per_image), fine-tuned VLM labels and key comparisons."""

from __future__ import annotations

import json
import re
import shutil

from report_runs import SCRIPT, make_cnn_run, make_finetune_run, make_vlm_run

from medvlm.consistency.stats import summarize_answers, summarize_images
from medvlm.report.html import html_table, render_report
from medvlm.runinfo import write_run_info


def _cons_run(root, name, pid, label, choices, *, temps=None):
    run = root / name
    run.mkdir(parents=True)
    s = summarize_images([(choices, label)])
    s.update(repeats=len(choices), n_failed=0, tie_break="hgg", prompts=["seed"],
             sampling=[{"temperature": 0.6, "top_p": 0.9, "seed": 0, "source": "x"}])
    s["per_image"] = [{"patient_id": pid, "orientation": "axial", "slice_index": 60, "prompt": "seed",
                       "temperature": 0.6, **summarize_answers(choices, label=label)}]
    if temps:
        s["per_temperature"] = [{"temperature": t, "top_p": 0.9, **summarize_images([(choices, label)])}
                                for t in temps]
    (run / "summary.json").write_text(json.dumps(s))
    write_run_info(run, kind="consistency", config={"repeats": len(choices)})
    return run


def test_consistency_tables_overview_and_figures(tmp_path):
    hgg = _cons_run(tmp_path, "consistency-hgg", "BraTS20_Training_002", 1, [1] * 95)
    lgg = _cons_run(tmp_path, "consistency-lgg", SCRIPT, 0, [1] * 77 + [0] * 18, temps=[0.2, 1.0])
    html = render_report([hgg, lgg], n_boot=0)
    assert 'id="consistency"' in html and 'href="#consistency"' in html
    # one combined figure + one per run + the temperature sweep of the LGG run
    assert html.count('src="data:image/png;base64,') == 4
    # per-image rows: counts 18/77, majority HGG, agreement 0.811, entropy 0.700, flip rate 0.011, wrong
    assert re.search(r"<td>18</td>\s*<td>77</td>\s*<td>0</td>\s*<td>0</td>\s*<td class=\"l\">HGG</td>\s*"
                     r"<td>0.811</td>\s*<td>0.700</td>\s*<td>0.011</td>\s*<td class=\"bad\">no</td>", html)
    assert re.search(r"<td>1.000</td>\s*<td>0.000</td>\s*<td>0.000</td>\s*<td class=\"good\">yes</td>", html)
    for text in ("Consistency runs", "All images", "Per image", "Per temperature", "Fleiss&#39; kappa",
                 "consensus accuracy", "expected accuracy", "LGG (0)", "HGG (1)"):
        assert text in html, text
    assert "<script" not in html.lower() and "&lt;script&gt;" in html  # patient id escaped
    assert html.index('id="consistency"') < html.index('id="runs"')
    assert '<a href="#run-0-consistency-hgg">consistency-hgg</a>' in html


def test_fine_tuned_label_adapter_and_key_comparisons(tmp_path):
    cnn = make_cnn_run(tmp_path)
    general = make_vlm_run(tmp_path, "vlm-general")
    tuned = make_vlm_run(tmp_path, "vlm-tuned", seed=3)
    lora = make_finetune_run(tmp_path)
    (lora / "finetune_config.json").write_text(json.dumps(
        {"method": "lora", "steps": 40, "selected_epoch": 1, "select": "best", "select_metric": "val_p_true",
         "hyperparameters": {"rank": 8, "alpha": 16.0, "epochs": 2}}))
    info = json.loads((tuned / "run.json").read_text())
    write_run_info(tuned, kind="vlm", config={**info["config"], "adapter": str(lora)})
    html = render_report([general, cnn, tuned, lora], n_boot=0)
    assert '<span class="badge fine-tuned">fine-tuned</span>' in html
    assert '<span class="badge general">general</span>' in html
    assert f"<td>{lora}</td>" in html and "LoRA rank / alpha" in html and "8 / 16.0" in html
    assert "1 (best by val_p_true)" in html and "Validation per epoch" in html
    comps = re.findall(r'<tr class="key"><td class="l cmp">([^<]+)</td><td class="l">([^<]+)</td>'
                       r'<td class="l">([^<]+)</td>', html)
    assert comps == [("fine-tuned VLM vs general VLM", "vlm-tuned", "vlm-general"),
                     ("CNN vs general VLM", "cnn-small3d", "vlm-general"),
                     ("CNN vs fine-tuned VLM", "cnn-small3d", "vlm-tuned")]
    # loss curve with the selected epoch, learning curve, confusion matrices...: all data URIs
    assert not re.search(r'<img src="(?!data:image/png;base64,)', html)


def test_html_table_aligns_text_and_folds_json():
    cfg = json.dumps({"a": list(range(60)), "b": "<x>"})
    out = html_table([{"run": "r", "n": 3, "config": cfg}])
    assert '<td class="l">r</td><td>3</td>' in out
    assert "<details><summary>show" in out and "&lt;x&gt;" in out and "&#34;a&#34;: [" in out


def test_legacy_summary_without_per_image_still_renders(runs, tmp_path):
    run = tmp_path / "c"
    shutil.copytree(runs["consistency"], run)
    html = render_report([run], n_boot=0)
    assert 'id="consistency"' in html and "summary.json" in html
    assert html.count('src="data:image/png;base64,') == 1


def test_raw_answers_cannot_reorder_the_page():
    from medvlm.report.format import _printable

    assert _printable("a\u202eb\u200bc\x00d\ne") == "a\ufffdb\ufffdc\ufffdd\ne"
