"""image-csv: a symbolic link may not lead an image path out of the CSV's folder (what is read, and
maybe sent to a hosted model, is the link's target). Links that stay inside, and a data folder reached
through a link, are fine."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from medvlm.cli import invoke

TASK = """name: pneu
classes: [normal, pneumonia]
positive: pneumonia
source: {kind: image-csv, csv: labels.csv}
prompt: "Normal (0) or pneumonia (1)? Reply 'Choice: <0 or 1>'."
"""


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10), dtype=np.uint8), mode="L").save(path)


@pytest.fixture()
def layout(tmp_path):
    """``data/`` (the task's DATA: task.yaml, img/a.png, img/b.png) and ``private/`` beside it."""
    data = tmp_path / "data"
    _png(data / "img" / "a.png")
    _png(data / "img" / "b.png")
    _png(tmp_path / "private" / "secret.png")
    (data / "task.yaml").write_text(TASK)
    return tmp_path


def _prepare(data, rows, out):
    (data / "labels.csv").write_text("path,label,patient_id\n" + "".join(f"{r}\n" for r in rows))
    return invoke(["prepare", str(data), "--out", str(out), "--task", str(data / "task.yaml")])


@pytest.mark.parametrize("link, target, rel", [
    ("img/c.png", "../../private/secret.png", "img/c.png"),       # a file link leading out
    ("linked", "../private", "linked/secret.png"),                # a folder link leading out
    ("img/abs.png", "{root}/private/secret.png", "img/abs.png"),  # an absolute link
])
def test_a_link_leading_out_of_the_folder_is_refused_naming_the_line(layout, capsys, link, target, rel):
    data = layout / "data"
    os.symlink(target.format(root=layout), data / link)
    code = _prepare(data, ["img/a.png,0,P1", f"{rel},1,P2"], layout / "w")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    real = os.path.realpath(layout / "private" / "secret.png")
    assert err[0] == (f"medvlm: error: {data / 'labels.csv'}: line 3: image path {rel} is a symbolic link "
                      f"(or lies in a linked folder) to {real}, outside the CSV's folder {data}; copy the "
                      "image in, or keep the CSV in the folder the link points to")
    assert not (layout / "w" / "manifest.csv").exists()


def test_links_inside_the_folder_and_a_linked_data_folder_are_fine(layout, capsys):
    data = layout / "data"
    os.symlink("b.png", data / "img" / "c.png")  # inside: fine
    os.symlink(data, layout / "data-link")        # DATA itself reached through a link: fine
    assert _prepare(layout / "data-link", ["img/a.png,0,P1", "img/c.png,1,P2"], layout / "w") == 0
    manifest = (layout / "w" / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 3 and all(",ok," in row for row in manifest[1:])
