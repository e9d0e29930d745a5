"""Image controls (medvlm.data.controls through medvlm.data.slices): none, blank, noise, tumour-masked,
and TorchIO artifacts, each checked on the rendered PNG."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from medvlm.data import controls as C
from medvlm.data import slices as S
from medvlm.errors import ConfigError


def _patient(root, pid: str, shift: int) -> dict:
    """One patient in canonical RAS+ NIfTIs: a brain ellipsoid (zero outside), a bright tumour blob with
    seg labels 1/2/4, four modalities; the manifest row that points at them."""
    import nibabel as nib

    rng = np.random.default_rng(shift)
    x, y, z = np.mgrid[:16, :18, :10]
    brain = ((x - 8) / 7) ** 2 + ((y - 9) / 8) ** 2 + ((z - 5) / 4.5) ** 2 <= 1
    vol = np.where(brain, rng.uniform(20, 60, size=brain.shape), 0).astype(np.float32)
    seg = np.zeros(brain.shape, np.uint8)
    seg[5 + shift:9 + shift, 6:10, 3:7] = 2
    seg[6 + shift:8 + shift, 7:9, 4:6] = 4
    seg[6 + shift, 7, 4] = 1
    vol[seg > 0] += 90
    row = {"patient_id": pid}
    for m, scale in (("t1", 1.0), ("t1ce", 1.3), ("t2", 0.7), ("flair", 1.6), ("seg", None)):
        path = root / f"{pid}_{m}.nii.gz"
        nib.save(nib.Nifti1Image(seg if scale is None else vol * scale, np.eye(4)), str(path))
        row[m] = str(path)
    for axis, (lo, hi) in zip("xyz", ((5 + shift, 8 + shift), (6, 9), (3, 6)), strict=True):
        row[f"tumour_{axis}_min"], row[f"tumour_{axis}_max"] = lo, hi
    return row


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("controls")
    return [_patient(root, "P000", 0), _patient(root, "P001", 1)]


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_none_gives_no_image_but_the_same_slices(rows):
    real = S.patient_slices(rows[0], "axial")
    none = S.patient_slices(rows[0], "axial", image="none")
    assert [s.slice_index for s in none] == [s.slice_index for s in real]
    assert {s.png for s in none} == {b""}


@pytest.mark.parametrize("modalities", [("flair",), ("flair", "t1ce", "t2", "t1")])
def test_blank_is_one_value_at_the_slices_size(rows, modalities):
    for orientation in ("axial", "coronal", "sagittal"):
        real = S.patient_slices(rows[0], orientation, modalities=modalities)
        blank = S.patient_slices(rows[0], orientation, modalities=modalities, image="blank")
        for r, b in zip(real, blank, strict=True):
            pixels = _pixels(b.png)
            assert pixels.shape == _pixels(r.png).shape
            assert np.unique(pixels).tolist() == [0]


def test_noise_is_seeded_by_slice_and_seed(rows):
    a = S.patient_slices(rows[0], "axial", image="noise", seed=0)
    again = S.patient_slices(rows[0], "axial", image="noise", seed=0)
    other = S.patient_slices(rows[0], "axial", image="noise", seed=1)
    real = S.patient_slices(rows[0], "axial")
    assert [s.png for s in a] == [s.png for s in again]  # same seed: same bytes
    assert all(x.png != y.png for x, y in zip(a, other, strict=True))  # another seed: other bytes
    assert len({s.png for s in a}) == len(a)  # each slice its own noise
    assert [_pixels(s.png).shape for s in a] == [_pixels(s.png).shape for s in real]
    assert len(np.unique(_pixels(a[0].png))) > 50
    # another patient, same slice index: other noise
    b = S.patient_slices(rows[1], "axial", image="noise", seed=0, indices=[a[0].slice_index])
    assert b[0].png != a[0].png
    assert C.derived_seed("noise", "P000", "axial", 3, 0) != C.derived_seed("noise", "P000", "coronal", 3, 0)


def test_tumour_masked_fills_the_tumour_with_the_median_of_the_brain(rows):
    import nibabel as nib

    row = rows[0]
    seg = np.asarray(nib.as_closest_canonical(nib.load(row["seg"])).dataobj) > 0
    for orientation in ("axial", "coronal", "sagittal"):
        real = S.patient_slices(row, orientation)
        masked = S.patient_slices(row, orientation, image="tumour-masked")
        for r, m in zip(real, masked, strict=True):
            before, after = _pixels(r.png), _pixels(m.png)
            tumour = S.display_slice(seg, orientation, r.slice_index)
            assert tumour.any()  # tumour slices only (the default selection)
            brain = before[(before > 0) & ~tumour]
            median = int(np.floor(np.median(brain) + 0.5))
            assert (after[tumour] == median).all()
            assert (after[~tumour] == before[~tumour]).all() and (after[before == 0] == 0).all()
            assert (before[tumour] != median).any()  # the bright blob really changed


def test_fill_tumour_without_tumour_or_brain():
    pixels = np.array([[0, 5], [7, 9]], np.uint8)
    assert (C.fill_tumour(pixels, np.zeros((2, 2), bool)) == pixels).all()
    assert C.fill_tumour(np.zeros((2, 2), np.uint8), np.eye(2, dtype=bool)).tolist() == [[0, 0], [0, 0]]
    # an even number of brain pixels: the mean of the middle two, rounded half up
    assert C.fill_tumour(np.array([[1, 2], [255, 0]], np.uint8), np.array([[0, 0], [1, 0]], bool))[1, 0] == 2


@pytest.mark.parametrize("kind", list(C.ARTIFACTS))
def test_artifacts_are_deterministic_per_patient_and_seed(rows, kind):
    pytest.importorskip("torchio")
    spec = f"{kind}:0.6"
    real = [s.png for s in S.patient_slices(rows[0], "axial")]
    a = [s.png for s in S.patient_slices(rows[0], "axial", artifact=spec)]
    S._ARTIFACT_CACHE.clear()  # computed again, not served from memory
    again = [s.png for s in S.patient_slices(rows[0], "axial", artifact=spec)]
    other_seed = [s.png for s in S.patient_slices(rows[0], "axial", artifact=spec, seed=7)]
    assert a == again
    assert a != real
    assert a != other_seed
    # severity 0: exactly the real image
    assert [s.png for s in S.patient_slices(rows[0], "axial", artifact=f"{kind}:0")] == real
    # the draw depends on the patient: the same volume under another patient id is corrupted otherwise
    data, zooms, _ = S.load_canonical(rows[0]["flair"])
    art = C.parse_artifact(spec)
    one = C.apply_artifact(data, zooms, art, seed=C.derived_seed("artifact", kind, "P000", 0))
    two = C.apply_artifact(data, zooms, art, seed=C.derived_seed("artifact", kind, "P001", 0))
    assert one.shape == data.shape and one.dtype == np.float32
    assert not np.array_equal(one, two)


def test_artifact_and_image_options_are_checked():
    assert C.parse_artifact(None) is None and C.parse_artifact("") is None
    assert C.parse_artifact("Motion:1") == C.Artifact("motion", 1.0)
    assert C.parse_artifact("spike:0").spec == "spike:0"
    for bad, words in [("motion:2", "from 0 to 1"), ("motion:-0.1", "from 0 to 1"),
                       ("motion:x", "from 0 to 1"), ("motion", "KIND:SEVERITY"),
                       ("blur:0.5", "'motion'"), ("motion:nan", "from 0 to 1")]:
        with pytest.raises(ConfigError, match="--artifact") as info:
            C.parse_artifact(bad)
        assert words in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="Did you mean 'blank'"):
        C.check_image("blnak")
    with pytest.raises(ConfigError, match="no effect with --image noise"):
        C.check_controls("noise", "motion:0.5")
    assert C.check_controls("tumour-masked", "bias-field:0.3")[1] == C.Artifact("bias-field", 0.3)


# ------------------------------------------------------------------ exact behaviour (issue 20)
def test_option_messages_in_full():
    image_message = (r"^The '--image' parameter must be one of \['real', 'none', 'blank', 'noise', "
                     r"'tumour-masked'\]. Got 'blnak' instead. Did you mean 'blank'\?$")
    with pytest.raises(ConfigError, match=image_message):
        C.check_image("blnak")
    with pytest.raises(ConfigError, match=r"^--artifact motion: give KIND:SEVERITY, e.g. motion:0.5 \(kinds "
                                          r"\['motion', 'ghosting', 'spike', 'bias-field'\]\)$"):
        C.parse_artifact("motion")
    kind_message = (r"^The '--artifact' parameter must be one of \['motion', 'ghosting', 'spike', "
                    r"'bias-field'\]. Got 'blur' instead.$")
    with pytest.raises(ConfigError, match=kind_message):
        C.parse_artifact("blur:0.5")
    for bad in ("motion:2", "motion:-0.1", "motion:x", "motion:nan", "motion:"):
        message = rf"^--artifact {re.escape(bad)}: the severity must be a number from 0 to 1$"
        with pytest.raises(ConfigError, match=message):
            C.parse_artifact(bad)
    for image in ("none", "blank", "noise"):
        with pytest.raises(ConfigError, match=rf"^--artifact motion:0.5 has no effect with --image {image}; "
                                              r"use it with --image real or tumour-masked$"):
            C.check_controls(image, "motion:0.5")


def test_parse_artifact_takes_both_ends_and_ignores_case_and_spaces():
    assert C.parse_artifact(" Motion : 0.5 ") == C.Artifact("motion", 0.5)
    assert C.parse_artifact("GHOSTING:0") == C.Artifact("ghosting", 0.0)
    assert C.parse_artifact("spike:1") == C.Artifact("spike", 1.0)
    assert C.parse_artifact("bias-field:1.0").spec == "bias-field:1"
    assert C.parse_artifact("   ") is None


def test_check_controls_accepts_the_two_images_an_artifact_can_corrupt():
    assert C.check_controls("real", "motion:0.5") == ("real", C.Artifact("motion", 0.5))
    assert C.check_controls("tumour-masked", None) == ("tumour-masked", None)
    assert C.check_controls("blank", None) == ("blank", None)
    assert C.check_controls("noise", "") == ("noise", None)


def test_only_a_real_artifact_needs_torchio(monkeypatch):
    import sys

    from medvlm.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "torchio", None)  # as if TorchIO were not installed
    assert C.check_controls("real", "motion:0") == ("real", C.Artifact("motion", 0.0))
    volume = np.ones((2, 2, 2), np.float32)
    assert C.apply_artifact(volume, (1.0, 1.0, 1.0), C.Artifact("motion", 0.0), seed=0) is volume
    message = r"^this step needs the Python package 'torchio': pip install 'medvlm\[controls\]'$"
    with pytest.raises(MissingDependencyError, match=message):
        C.check_controls("real", "motion:0.1")
    with pytest.raises(MissingDependencyError, match=message):
        C.apply_artifact(volume, (1.0, 1.0, 1.0), C.Artifact("motion", 0.1), seed=0)


def test_derived_seed_is_pinned():
    # the seeds of every noise image and artifact draw: a change here changes the bytes of earlier runs
    assert C.derived_seed("noise", "P1", "axial", 3, 0) == 8778423632004631125
    assert C.derived_seed() == 2858069222894195974
    assert 0 <= C.derived_seed("x") < 2**63
    from pathlib import Path

    assert C.derived_seed(Path("a") / "b") == C.derived_seed("a/b")  # not JSON: written as str()


def test_blank_and_noise_pixels():
    blank = C.blank_pixels((2, 3))
    assert blank.dtype == np.uint8 and blank.shape == (2, 3) and not blank.any()
    noise = C.noise_pixels((64, 64), 0)
    assert noise.dtype == np.uint8 and noise.shape == (64, 64)
    assert noise.min() == 0 and noise.max() == 255  # every 8-bit value can be drawn
    assert np.array_equal(noise, C.noise_pixels((64, 64), 0))
    assert C.noise_pixels((2, 3), 0).tolist() == [[95, 130, 194], [217, 207, 235]]


def test_fill_tumour_counts_a_brain_pixel_of_one():
    pixels = np.array([[1, 1, 9], [200, 0, 0]], np.uint8)
    tumour = np.array([[0, 0, 0], [1, 0, 0]], bool)
    # brain: 1, 1, 9 (0 is background): median 1
    assert C.fill_tumour(pixels, tumour).tolist() == [[1, 1, 9], [1, 0, 0]]
    # the input is never changed in place
    assert pixels[1, 0] == 200


def test_each_artifact_is_the_documented_torchio_transform():
    pytest.importorskip("torchio")
    motion = C._transform(C.Artifact("motion", 0.5))
    assert type(motion).__name__ == "RandomMotion"
    assert motion.degrees_range == (-5.0, 5.0) and motion.translation_range == (-5.0, 5.0)
    assert motion.num_transforms == 2
    ghosting = C._transform(C.Artifact("ghosting", 0.5))
    assert type(ghosting).__name__ == "RandomGhosting"
    assert ghosting.num_ghosts_range == (4, 10) and ghosting.axes == (0, 1, 2)
    assert ghosting.intensity_range == (0.25, 0.5)
    spike = C._transform(C.Artifact("spike", 0.5))
    assert type(spike).__name__ == "RandomSpike"
    assert spike.intensity_range == (0.5, 1.5) and spike.num_spikes_range == (1, 1)
    bias = C._transform(C.Artifact("bias-field", 0.5))
    assert type(bias).__name__ == "RandomBiasField"
    assert bias.coefficients_range == (-0.25, 0.25) and bias.order == 3
    assert [name for name, _ in C.ARTIFACTS.values()] == ["RandomMotion", "RandomGhosting", "RandomSpike",
                                                          "RandomBiasField"]


def test_a_spike_artifact_always_has_its_spike():
    # num_spikes=1 in TorchIO means a number of spikes drawn from {0, 1}: 6 of these 10 seeds drew none and
    # returned the volume unchanged, so a "spike" control showed half the patients their real image
    pytest.importorskip("torchio")
    volume = np.random.default_rng(0).uniform(0, 100, (12, 12, 8)).astype(np.float32)
    for seed in range(10):
        out = C.apply_artifact(volume, (1.0, 1.0, 1.0), C.Artifact("spike", 1.0), seed=seed)
        assert np.abs(out - volume).max() > 10, seed


def test_apply_artifact_works_in_float32_and_leaves_torch_alone():
    pytest.importorskip("torchio")
    import torch

    volume = np.random.default_rng(0).uniform(0, 100, (12, 12, 8))
    motion = C.Artifact("motion", 0.7)
    out = C.apply_artifact(volume.astype(np.float32), (1.0, 1.0, 2.0), motion, seed=3)
    assert out.dtype == np.float32 and out.shape == volume.shape
    # a float64 volume is converted first: the same bytes as its float32 copy (computing in float64 is not)
    assert np.array_equal(C.apply_artifact(volume, (1.0, 1.0, 2.0), motion, seed=3), out)
    # the voxel sizes are the image's: a translation in mm moves another number of voxels
    assert not np.array_equal(C.apply_artifact(volume, (1.0, 1.0, 1.0), motion, seed=3), out)
    # torch's global generator is left as it was
    torch.manual_seed(11)
    C.apply_artifact(volume, (1.0, 1.0, 2.0), motion, seed=3)
    after = torch.rand(3)
    torch.manual_seed(11)
    assert torch.equal(after, torch.rand(3))


# ------------------------------------------------------------------ hand-written held-out bugs (issue 20)
def test_a_slices_artifact_draw_is_seeded_by_its_patient(rows):
    """load_view (what patient_slices renders) draws the artifact with the seed of the patient it is
    given and the run's seed: the same volume read as another patient is corrupted otherwise."""
    pytest.importorskip("torchio")
    art = C.parse_artifact("motion:0.6")
    data, zooms, _ = S.load_canonical(rows[0]["flair"])
    views = {}
    for pid in ("P000", "P001"):
        S._ARTIFACT_CACHE.clear()
        views[pid] = S.load_view(rows[0]["flair"], pid, artifact=art, seed=3)[0]
        want = C.apply_artifact(data, zooms, art, seed=C.derived_seed("artifact", "motion", pid, 3))
        assert np.array_equal(views[pid], want)
    assert not np.array_equal(views["P000"], views["P001"])
    S._ARTIFACT_CACHE.clear()


# ------------------------------------------------------------------ load_view and the controls' plumbing
def _fake_artifact(monkeypatch):
    """apply_artifact replaced by a cheap, exact stand-in: the volume plus its seed (a float)."""
    calls = []

    def fake(data, zooms, artifact, *, seed):
        calls.append(seed)
        return data + float(seed % 1000)

    monkeypatch.setattr(S, "apply_artifact", fake)
    S._ARTIFACT_CACHE.clear()
    return calls


def test_load_view_defaults_severity_zero_and_one_and_its_cache(rows, monkeypatch):
    calls = _fake_artifact(monkeypatch)
    spike, flair = C.parse_artifact("spike:1"), rows[0]["flair"]
    clean = S.load_canonical(flair, "P1")
    assert S.load_view(flair, "P1") is clean
    assert S.load_view(flair, "P1", artifact=C.parse_artifact("spike:0")) is clean
    one = S.load_view(flair, "P1", artifact=spike)
    assert calls == [C.derived_seed("artifact", "spike", "P1", 0)]  # the default seed is 0
    assert np.array_equal(one[0], clean[0] + float(calls[0] % 1000)) and not np.array_equal(one[0], clean[0])
    assert S.load_view(flair, "P1", artifact=spike, seed=0) is one and len(calls) == 1  # served from memory
    other = S.load_view(rows[1]["flair"], "P2", artifact=spike)  # another file: its own entry
    assert len(calls) == 2 and not np.array_equal(other[0], one[0][: other[0].shape[0]])
    with pytest.raises(S.DataError, match=r"^patient \?: cannot read "):
        S.load_view(str(rows[0]["flair"]) + ".missing", artifact=spike)


def test_the_artifact_cache_keeps_the_eight_most_recent(rows, monkeypatch):
    calls = _fake_artifact(monkeypatch)
    spike, flair = C.parse_artifact("spike:0.5"), rows[0]["flair"]
    for seed in range(9):
        S.load_view(flair, "P1", artifact=spike, seed=seed)
    assert len(S._ARTIFACT_CACHE) == 8 and [k[2] for k in S._ARTIFACT_CACHE] == list(range(1, 9))
    S.load_view(flair, "P1", artifact=spike, seed=8)  # the newest: from memory
    assert len(calls) == 9
    S.load_view(flair, "P1", artifact=spike, seed=0)  # the oldest was dropped: drawn again
    assert len(calls) == 10 and [k[2] for k in S._ARTIFACT_CACHE] == [2, 3, 4, 5, 6, 7, 8, 0]


def test_patient_slices_passes_the_controls_on(rows, monkeypatch):
    row = rows[0]
    none = S.patient_slices(row, "axial", image="none")
    real = S.patient_slices(row, "axial")
    assert [(s.patient_id, s.orientation, s.slice_index, s.png) for s in none] == [
        ("P000", "axial", s.slice_index, b"") for s in real]
    noise = S.patient_slices(row, "axial", image="noise")
    assert [s.png for s in noise] == [s.png for s in S.patient_slices(row, "axial", image="noise", seed=0)]
    for s in noise:
        pixels = np.array(Image.open(io.BytesIO(s.png)))
        want = C.noise_pixels(pixels.shape, C.derived_seed("noise", "P000", "axial", s.slice_index, 0))
        assert np.array_equal(pixels, want)
    calls = _fake_artifact(monkeypatch)
    as_text = [s.png for s in S.patient_slices(row, "axial", artifact="spike:0.5", seed=2)]
    S._ARTIFACT_CACHE.clear()
    spike = C.parse_artifact("spike:0.5")
    as_object = [s.png for s in S.patient_slices(row, "axial", artifact=spike, seed=2)]
    assert as_text == as_object and len(calls) == 2
    with pytest.raises(S.DataError, match=r"^patient P000: seg file "):
        S.patient_slices(dict(row, seg=""), "axial", image="tumour-masked")


def test_an_artifact_spec_splits_at_its_first_colon():
    with pytest.raises(ConfigError) as info:
        C.parse_artifact("motion:0.5:1")
    assert str(info.value) == "--artifact motion:0.5:1: the severity must be a number from 0 to 1"
