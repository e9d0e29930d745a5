"""``brats-grading``: the study. Is this glioma low grade (LGG, label 0) or high grade (HGG, label 1)?

One prediction per patient: every tumour slice of the FLAIR volume (axial, coronal, sagittal) is asked
"LGG (0), HGG (1) or no glioma (2)?"; the answers are voted per patient (the study's majority rule, or
the mean class probability under log-prob scoring). "No glioma" and unparsed answers do not vote.
Data: the BraTS 2020 training layout (:mod:`medvlm.data.brats`), prepared as a 4x95x128x128 crop around
the tumour (:mod:`medvlm.data.prepare`); the CNN is the study's 3D network ``small3d``.
"""

from __future__ import annotations

from medvlm.tasks.base import AnswerCode, Task, choice_parser

#: words that name an answer right after "Choice:" (e.g. "Choice: High Grade Glioma")
ANSWER_WORDS = [
    (r"no\s+glioma|no\s+tumou?r|healthy|normal", 2),
    (r"low[\s-]*grade(?:\s+glioma)?|\blgg\b", 0),
    (r"high[\s-]*grade(?:\s+glioma)?|\bhgg\b", 1),
]

#: the BraTS contrasts, in the channel order of a prepared volume
MODALITIES = ("t1", "t1ce", "t2", "flair")
ORIENTATIONS = ("axial", "coronal", "sagittal")

TASK = Task(
    name="brats-grading",
    description="BraTS 2020 glioma grading, one prediction per patient: LGG (0) or HGG (1)",
    classes=("LGG", "HGG"),
    positive="HGG",
    answers=(AnswerCode("LGG", "p_lgg", "n_lgg"), AnswerCode("HGG", "p_hgg", "n_hgg"),
             AnswerCode("no glioma", "p_ng", "n_ng")),
    parser=choice_parser(3, ANSWER_WORDS),
    parser_version="1",
    unit="patient",
    share_column="gldr",
    share_label="GLDR",
    prompts=("seed", "json", "montage", "seed-swapped", "seed-para1", "seed-para2", "seed-para3"),
    orientations=ORIENTATIONS,
    default_orientations=ORIENTATIONS,
    modalities=MODALITIES,
    default_modalities=("flair",),
    cnn_model="small3d",
    cnn_spatial_dims=3,
    default_slices="tumour",
    source={"prepare": "medvlm.data.prepare:prepare", "synth": "medvlm.data.synth:synth_cohort"},
    all_positive_note=" (the failure the original study reported for its zero-shot VLM)",
    reference_standard="tumour grade from name_mapping.csv (HGG = 1, LGG = 0)",
    preprocessing="z-score inside the brain, crop around the tumour (+{margin_mm:g} mm), resize to {shape}",
    limitations=(
        "Single task and data set: BraTS 2020 glioma grading (HGG vs LGG); the classes are imbalanced (about "
        "four HGG per LGG), so small test cohorts give wide confidence intervals.\n\n"
        "The VLM sees 2D slices rendered from the volumes (FLAIR by default, or a 2x2 montage of the four "
        "contrasts) and votes per patient; a 3D CNN sees the whole cropped volume. Slice selection uses the "
        "tumour mask, which a real screening setting would not have."),
)

#: the study's answer parser: "Choice: 1 ..." -> 1 (HGG); never guesses
parse_grade = TASK.parser
