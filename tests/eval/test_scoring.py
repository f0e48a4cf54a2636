"""Scoring functions on hand-computed cases."""

import pytest

from refine.eval.scoring import (
    best_over_references,
    char_accuracy,
    first_token_accuracy,
    qa_response,
    qa_substring_match,
    string_match_all,
    string_match_part,
)


def test_string_match_all_is_fraction_found_case_insensitive():
    assert string_match_all("The numbers are 123 and 456.", ["123", "456"]) == 1.0
    assert string_match_all("The numbers are 123 and 789.", ["123", "456", "789", "000"]) == 0.5
    assert string_match_all("ABC-def", ["abc-DEF"]) == 1.0
    assert string_match_all("nothing", ["1"]) == 0.0
    with pytest.raises(ValueError):
        string_match_all("x", [])


def test_string_match_part_is_any_found():
    assert string_match_part("Paris, France", ["london", "PARIS"]) == 1.0
    assert string_match_part("Paris, France", ["london", "berlin"]) == 0.0


def test_qa_response_cuts_the_raw_output_first_then_postprocesses():
    """ReFINE verl/verl/utils/reward_score/ruler.py: split("\\n")[0] of the raw output, then strip, control
    characters -> "\\n", strip (not cut again)."""
    assert qa_response("  \n Paris\nmore") == ""  # the raw first line is blank
    assert qa_response(" Paris \nmore") == "Paris"
    assert qa_response("Par\x01is") == "Par\nis"  # mapped after the cut: both parts stay
    assert qa_response("\tLondon\x00 x") == "London\n x"
    assert qa_response("a\r\nb") == "a"  # the cut at "\\n" comes first, then the "\\r" is stripped


@pytest.mark.parametrize(
    "pred,expected",
    [
        ("\nParis", 0.0),  # a leading newline: the authors' first line is empty
        ("\n\nParis is the answer", 0.0),
        ("The capital is\tParis", 1.0),  # a tab before the answer: still on the first line
        ("The capital is\rParis", 1.0),  # a carriage return: likewise
        ("\tParis", 1.0),
        ("\rParis\nLondon", 1.0),
        ("London\nParis", 0.0),
    ],
)
def test_qa_substring_match_in_the_authors_order(pred, expected):
    assert qa_substring_match(pred, ["paris"]) == expected


def test_qa_substring_match_uses_first_line_only():
    assert qa_substring_match(" The Normans\nIn 1066", ["normans"]) == 1.0
    assert qa_substring_match(" The Normans\nIn 1066", ["1066"]) == 0.0
    assert qa_substring_match("early 11th Century.", ["11th century", "x"]) == 1.0
    assert qa_substring_match("", ["a"]) == 0.0


def test_first_token_accuracy():
    assert first_token_accuracy([5, 9], [5, 1, 2]) == 1.0
    assert first_token_accuracy([4, 1, 2], [5, 1, 2]) == 0.0
    assert first_token_accuracy([], [5]) == 0.0
    with pytest.raises(ValueError):
        first_token_accuracy([1], [])


def test_char_accuracy_is_position_aligned():
    assert char_accuracy(" 1234567", "1234567") == 1.0
    assert char_accuracy("1234567 and more", "1234567") == 1.0
    assert char_accuracy("1204567", "1234567") == pytest.approx(6 / 7)
    assert char_accuracy("123", "1234567") == pytest.approx(3 / 7)
    assert char_accuracy("0123456", "1234567") == 0.0  # shifted by one: nothing aligns
    assert char_accuracy("abc", "ABC") == 0.0


def test_best_over_references():
    assert best_over_references(char_accuracy, "12345", ["99999", "12399"]) == pytest.approx(3 / 5)
    assert best_over_references(char_accuracy, "12345", ["12345", "1"]) == 1.0
