"""The VLM run section's "What the model saw": thumbnails of --save-images next to parsed and raw answers."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

from medvlm.cli import invoke as _run
from medvlm.report.html import build_report
from medvlm.report.sections.vlm import SEEN_MAX, THUMB_PX
from medvlm.vlm.saved_images import IMAGES_DIR, INDEX_FILE, NO_IMAGE_NOTE

ANSWER = "<b>bold</b> & Choice: 0 Reasoning: rim"


def _eval(server, work: Path, out: Path, *extra: str) -> None:
    server.behave = lambda body, n: (200, server.completion(ANSWER), 0)
    assert _run(["eval-vlm", str(work), "--backend", "openai", "--model", "m", "--base-url", server.url,
                 "--bootstrap", "0", "--no-progress", "--out", str(out), *extra]) == 0


def _section(html: str) -> str:
    start = html.index("<h3>What the model saw</h3>")
    return html[start:html.index("<details>", start)]  # up to the run's configuration


def test_thumbnails_sit_next_to_their_escaped_raw_and_parsed_answers(tiny_work, tmp_path, fake_server):
    from PIL import Image

    run = tmp_path / "run"
    _eval(fake_server, tiny_work, run, "--save-images", "3", "--orientations", "axial,coronal")
    html = build_report([run], tmp_path / "r.html", n_boot=0).read_text()
    seen = _section(html)
    thumbs = re.findall(r'<img class="thumb" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', seen)
    assert len(thumbs) == 3
    for t in thumbs:
        with Image.open(io.BytesIO(base64.b64decode(t))) as im:
            assert max(im.size) <= THUMB_PX
    names = [f.name for f in sorted((run / IMAGES_DIR).glob("*.png"))]
    assert all(n in seen for n in names)  # each thumbnail names its file
    assert seen.count("LGG (0)") == 3  # the parsed answer of each image
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; Choice: 0" in seen and "<b>bold</b>" not in html  # escaped


def test_a_changed_image_is_a_problem_and_image_none_says_why(tiny_work, tmp_path, fake_server):
    run = tmp_path / "run"
    _eval(fake_server, tiny_work, run, "--save-images", "2", "--orientations", "axial")
    first = sorted((run / IMAGES_DIR).glob("*.png"))[0]
    first.write_bytes(first.read_bytes() + b"x")
    none = tmp_path / "none"
    _eval(fake_server, tiny_work, none, "--save-images", "2", "--orientations", "axial", "--image", "none")
    html = build_report([run, none], tmp_path / "r.html", n_boot=0).read_text()
    assert f"{IMAGES_DIR}/{first.name}: its bytes do not match the sha256 in {INDEX_FILE}" in html
    assert html.count('<img class="thumb"') == 1
    assert NO_IMAGE_NOTE in html and "(--save-images 2)" in html


def test_at_most_seen_max_thumbnails_and_none_without_images(tiny_work, tmp_path, fake_server):
    run = tmp_path / "run"
    _eval(fake_server, tiny_work, run, "--save-images", str(SEEN_MAX + 3))
    plain = tmp_path / "plain"
    _eval(fake_server, tiny_work, plain, "--orientations", "axial")
    html = build_report([run], tmp_path / "r.html", n_boot=0).read_text()
    assert html.count('<img class="thumb"') == SEEN_MAX
    assert f"({SEEN_MAX + 3} saved, the first {SEEN_MAX} shown)" in html
    html = build_report([plain], tmp_path / "p.html", n_boot=0).read_text()
    assert "What the model saw" not in html
