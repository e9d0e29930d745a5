"""medvlm.vlm.parsing.NameParser: answers of multi-class tasks read by index or by class name, over answer
strings as models write them; the BraTS parsers stay ChoiceParsers with their behaviour unchanged."""

from __future__ import annotations

import pytest

from medvlm.vlm.parsing import ChoiceParser, NameParser, name_pattern

#: a chest task whose names contain each other ("effusion" in "pleural effusion"), and an abstaining answer
NAMES = ["no finding", "pneumonia", "effusion", "pleural effusion", "none of these"]
PARSE = NameParser(5, answer_names=NAMES)

CASES = [
    # indices, as the prompt asks
    ("Choice: 2", 2),
    ("Choice: 1 Reasoning: patchy consolidation in the right lower lobe.", 1),
    ("**Choice:** 3", 3),
    ('{"choice": 1, "reasoning": "consolidation"}', 1),
    ("The answer is 4.", 4),
    ("2", 2),
    ("Choice: 5", None),                                    # beyond the codes
    ("Choice: 1 or 2", None),                               # a hedge
    # names after the keyword, any case, any separator
    ("Choice: pneumonia", 1),
    ("Choice: Pneumonia.", 1),
    ("The answer is Pneumonia.", 1),
    ("The answer is: pneumonia, given the air bronchograms", 1),
    ("Final answer: PNEUMONIA", 1),
    ("Answer - no finding", 0),
    ("The final answer is No Finding.", 0),
    ("Classification = pleural_effusion", 3),
    ("**Answer:** Pleural-effusion", 3),
    ("Choice:\n\nEffusion", 2),
    ("## Answer\n\nPleural effusion\n\nReasoning: blunted costophrenic angle", 3),
    ('{"choice": "Pleural Effusion", "reasoning": "meniscus sign"}', 3),
    ('```json\n{"answer": "pneumonia"}\n```', 1),
    ("Choice: none of these", 4),
    # the longest name wins where names contain each other
    ("Choice: pleural effusion", 3),
    ("The answer is effusion", 2),
    ("Answer: 3 (pleural effusion)", 3),                    # digit and name agree
    ("Answer: 2. The answer is clearly effusion", 2),
    # a bare name, or a first line that is one
    ("Pneumonia", 1),
    ("pleural effusion.", 3),
    ("- Effusion.\nThe left costophrenic angle is blunted.", 2),
    # never a guess
    ("Choice: pneumonia or effusion", None),                # two classes named
    ("The answer is pneumonia and pleural effusion", None),
    ("The answer is not pneumonia.", None),                 # a negation
    ("Choice: no pneumonia", None),
    ("Choice: non-pneumonia", None),
    ("Choice: effusion (not pleural effusion)", None),
    ("Choice: 1 (effusion)", None),                         # digit and name disagree
    ("Answer: 3. The answer is clearly effusion", None),
    ('{"choice": "lung"}', None),                           # a word that names no answer
    ("I think it is pneumonia", None),                      # no keyword, not a bare name
    ("The image shows pneumonia.", None),
    ("Choice: abnormal", None),                             # whole words only
    ("Pneumonias", None),
    ("", None),
    (None, None),
    ("   \n", None),
    ("Answer", None),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_answers_read_by_index_or_name(text, expected):
    assert PARSE(text) == expected


def test_three_class_pneumonia_task_answers():
    parse = NameParser(3, answer_names=["normal", "pneumonia", "tuberculosis"])
    assert parse("Choice: 2") == 2
    assert parse("Choice: pneumonia") == 1
    assert parse("The answer is Pneumonia.") == 1
    assert parse("Choice: Normal") == 0
    assert parse("The answer is normal, not pneumonia") == 0  # the fragment ends at the comma
    assert parse("The answer is not normal but pneumonia") is None


def test_synonyms_and_swapped_codes():
    parse = NameParser(3, answer_names=["normal", "pneumonia", "effusion"], names=[(r"\bconsolidation\b", 1)])
    assert parse("Choice: consolidation") == 1
    assert parse("Choice: consolidation and effusion") is None
    swapped = parse.with_codes(("1", "0", "2"))
    assert isinstance(swapped, NameParser) and swapped.codes == ("1", "0", "2")
    assert (swapped("Choice: 0"), swapped("Choice: 1"), swapped("Choice: 2")) == (1, 0, 2)
    assert swapped("Choice: normal") == 0 and swapped("Choice: consolidation") == 1  # names keep their answer
    assert swapped("Choice: 0 (normal)") is None  # digit 0 means pneumonia here


def test_a_name_that_begins_another_and_json_after_other_braces():
    parse = NameParser(3, answer_names=["mass", "mass effect", "normal"])
    assert parse("Choice: mass effect") == 1 and parse("Choice: mass") == 0
    assert parse("Choice: Mass-effect, midline shift") == 1
    assert PARSE('Reasoning {not json}. {"choice": "pleural effusion"}') == 3
    assert PARSE('{"note": "no choice key"} {"choice": "pneumonia"}') == 1
    assert PARSE('{"choice": "lung"} {"choice": "pneumonia"}') is None  # the first choice decides
    assert PARSE('{"choice": 2} {"choice": "pneumonia"}') == 2


def test_names_are_checked():
    with pytest.raises(ValueError, match=r"^answer names must differ: \['Normal', 'normal'\]$"):
        NameParser(2, answer_names=["Normal", "normal"])
    with pytest.raises(ValueError, match=r"^3 answer names for 2 answer codes$"):
        NameParser(2, answer_names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"^an answer name needs at least one word$"):
        name_pattern(" - ")
    assert name_pattern("no finding").fullmatch("No-Finding")
    assert not name_pattern("mass").search("massive")


def test_the_brats_parsers_are_unchanged():
    from medvlm.tasks import get_task

    grading, tumour = get_task("brats-grading"), get_task("brats-tumour")
    assert type(grading.parser) is ChoiceParser and type(tumour.parser) is ChoiceParser
    assert (grading.parser_version, tumour.parser_version) == ("1", "1")
    # what NameParser reads and the study's parser does not: the study's reading stays as it was
    assert grading.parser("The answer is high grade glioma.") is None
    assert grading.parser("High grade glioma") is None
    assert grading.parser('{"choice": "HGG"}') is None
    assert grading.parser("Choice: high grade glioma") == 1
    assert grading.parser("Choice: 0 (high grade)") == 0
    assert tumour.parser("Choice: tumour") == 1 and tumour.parser("The answer is tumour") is None


@pytest.mark.parametrize(("names", "text", "want"), [
    (["pneumonia (viral)", "pneumonia"], "Choice: pneumonia (viral).", 0),  # the longer name listed first
    (["pneumonia", "pneumonia (viral)"], "Choice: pneumonia (viral).", 1),
    (["Xanthoma", "normal"], "Choice: Xanthoma", 0),                       # a name that starts with X
    (["mass", "normal"], "Choice: The mass.", 0),                           # an article, any case
    (["mass", "normal"], "Choice: A mass", 0),
])
def test_overlapping_names_articles_and_leading_letters(names, text, want):
    assert NameParser(len(names), answer_names=names)(text) == want


@pytest.mark.parametrize(("fragment", "want"), [
    ("no finding", 0),                       # the name's own negation is not one
    ("on this picture: no finding and no finding", 0),  # every occurrence blanked, wherever it starts
    ("not pneumonia", None),
    ("pneumonia, not effusion", None),       # two names: none
    ("pneumonia, not likely", None),
    ("pneumonia", 1),
])
def test_name_choice_blanks_the_names_before_looking_for_a_negation(fragment, want):
    assert PARSE._name_choice(fragment) == want


@pytest.mark.parametrize(("names", "fragment"), [
    (["ground glass", "glass opacity"], "ground glass opacity"),           # overlapping, neither inside
    (["large ground glass", "glass opacity"], "large ground glass opacity"),
])
def test_overlapping_names_that_do_not_contain_each_other_name_two_answers(names, fragment):
    parse = NameParser(len(names), answer_names=names)
    assert parse._name_choice(fragment) is None
    assert parse._name_choice(names[0]) == 0 and parse._name_choice(names[1]) == 1


@pytest.mark.parametrize(("text", "want"), [
    ("Choice: pneumonia\nAnswer: effusion", None),   # two keyword phrases naming two answers
    ("Choice: pneumonia\nAnswer: pneumonia.", 1),    # the same answer twice
    ("**", None), ("```", None), ("* *", None),      # markdown only: nothing left to read
])
def test_keyword_phrases_must_agree_and_markdown_alone_is_no_answer(text, want):
    assert PARSE(text) == want


@pytest.mark.parametrize("names", [["no finding", "No_Finding"], ["ground-glass", "Ground  Glass "]])
def test_names_that_differ_only_by_case_or_separators_are_refused(names):
    with pytest.raises(ValueError, match=r"^answer names must differ: "):
        NameParser(2, answer_names=names)


def test_synonyms_are_read_whatever_their_case():
    parse = NameParser(2, answer_names=["normal", "pneumonia"], names=[("consolidation", 1)])
    assert parse("Choice: Consolidation") == 1 and parse("Choice: CONSOLIDATION.") == 1


# ------------------------------------------------------------------ hand-written held-out bugs (issue 20)
PNEUMONIA = ["normal", "pneumonia", "none of these"]


def test_a_name_inside_a_longer_word_is_no_name():
    """'abnormal' does not name 'normal': the word must stand alone on both sides."""
    assert name_pattern("normal").search("abnormal") is None
    assert name_pattern("normal").search("normality") is None
    parse = NameParser(3, answer_names=PNEUMONIA)
    assert parse("Choice: 1 (abnormal)") == 1  # no second answer named next to the code


@pytest.mark.parametrize("text", ["Choice: 0 (rules out pneumonia)", "Choice: 0 (pneumonia ruled out)",
                                  "Choice: 0 (pneumonia excluded)", "Choice: 0 (not pneumonia)"])
def test_a_negated_name_next_to_a_code_does_not_contradict_it(text):
    assert NameParser(3, answer_names=PNEUMONIA)(text) == 0


def test_an_article_before_a_name_is_dropped():
    parse = NameParser(3, answer_names=PNEUMONIA)
    assert parse("The answer is the pneumonia.") == 1
    assert parse("Choice: The Pneumonia") == 1
    assert parse("Choice: an normal.") == 0


def test_a_heading_with_a_colon_then_a_listed_name():
    """``## Answer:`` on its own line, the answer as a list item below it."""
    parse = NameParser(3, answer_names=PNEUMONIA)
    assert parse("## Answer:\n\n- Pneumonia") == 1
    assert parse("Answer:\n- Normal") == 0


def test_a_name_ends_at_a_full_stop_or_a_dash():
    """The answer phrase is the name up to the sentence's end or a dash; words after it (another class
    named in the reasoning) do not make it ambiguous."""
    parse = NameParser(3, answer_names=PNEUMONIA)
    assert parse("Choice: pneumonia. The lungs are otherwise normal.") == 1
    assert parse("Choice: pneumonia - consolidation in the right lower lobe") == 1
    assert parse("Answer: Pneumonia \u2013 right lower lobe") == 1


def test_a_code_on_the_first_line_must_agree_with_the_name_after_it():
    parse = NameParser(3, answer_names=PNEUMONIA)
    assert parse("1 - pneumonia") == 1
    assert parse("0 - pneumonia") is None
    assert parse("0. pneumonia") is None


def test_names_equal_only_when_upper_cased_are_two_answers():
    parse = NameParser(2, answer_names=["Straße", "Strasse"])  # "ß".upper() is "SS"; lower case differs
    assert parse("Choice: Straße") == 0 and parse("Choice: strasse") == 1
