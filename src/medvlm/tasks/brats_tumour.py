"""``brats-tumour``: does this slice show tumour? (no tumour 0, tumour 1; one prediction per slice).

The control a reader wants before believing any grading result: a VLM that cannot tell tumour slices
from tumour-free slices of the same brains cannot grade them. Same BraTS data as ``brats-grading``,
prepared with the whole brain kept (:mod:`medvlm.data.brats_tumour`): tumour slices are labelled 1, a
seeded, equal number of tumour-free brain slices 0, slices with only a sliver of tumour left out.
Bootstrap CIs resample patients (all slices of a patient together); the CNN is a 2D network.
"""

from __future__ import annotations

from medvlm.tasks.base import AnswerCode, Task, choice_parser
from medvlm.tasks.brats_grading import MODALITIES, ORIENTATIONS

#: a negation anywhere in the answer's words ("no", "not", "without", "free", ...) makes it "no tumour"
_NEGATED = r"\b(?:no|not|none|without|absent|absence|negative|free|normal|healthy|unremarkable)\b"
ANSWER_WORDS = [
    (_NEGATED, 0),
    (rf"^(?!.*{_NEGATED}).*\b(?:tumou?rs?|lesions?|mass|glioma|neoplasm)\b", 1),
]

TASK = Task(
    name="brats-tumour",
    description="BraTS 2020: does this slice show tumour? One prediction per slice: no tumour (0), "
                "tumour (1)",
    classes=("no tumour", "tumour"),
    positive="tumour",
    answers=(AnswerCode("no tumour", "p_no_tumour", "n_no_tumour"),
             AnswerCode("tumour", "p_tumour", "n_tumour")),
    parser=choice_parser(2, ANSWER_WORDS),
    parser_version="1",
    unit="slice",
    share_column="tumour_share",
    share_label="tumour share",
    prompts=("tumour",),
    orientations=ORIENTATIONS,
    default_orientations=("axial",),
    modalities=MODALITIES,
    default_modalities=("flair",),
    cnn_model="densenet2d",
    cnn_spatial_dims=2,
    default_slices="all",
    source={"prepare": "medvlm.data.brats_tumour:prepare_tumour", "synth": "medvlm.data.synth:synth_cohort"},
    reference_standard="the tumour mask (seg > 0) of each slice: tumour slices 1, tumour-free brain slices 0",
    preprocessing="z-score inside the brain, crop to the whole brain, resize to {shape}; labelled slices in "
                  "units.csv",
    limitations=(
        "A control task on BraTS 2020: tumour slices against an equal, seeded number of tumour-free slices "
        "of the same brains; slices with only a sliver of tumour are left out, so the task is easier than "
        "finding small lesions.\n\n"
        "Slices of one patient are not independent: confidence intervals resample patients, not slices."),
)
