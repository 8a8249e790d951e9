"""StopChecker: EOS, stop tokens, stop strings across tokens with hold-back, length, truncation."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_worker.sampling import FinishReason, SamplingParams, StopChecker

EOS = 1


def _checker(**kwargs: object) -> StopChecker:
    return StopChecker(SamplingParams(**kwargs), eos_token_ids=[EOS])  # type: ignore[arg-type]


def _feed(checker: StopChecker, pieces: list[str]) -> list[str]:
    """Feed one token per text piece (token ids 100+) and collect the released text per step."""
    released = []
    for i, piece in enumerate(pieces):
        result = checker.update([100 + i], [piece])
        released.append(result.text)
        if result.finished:
            break
    return released


def test_finish_reason_is_a_str_enum() -> None:
    assert [r.value for r in FinishReason] == ["stop", "length", "abort", "error"]
    assert FinishReason.STOP == "stop" and str(FinishReason.LENGTH) == "length"


def test_eos_stops_and_its_text_is_dropped() -> None:
    checker = _checker()
    assert checker.update([5], ["Hi"]).text == "Hi"
    result = checker.update([EOS], ["</s>"])
    assert (result.finish_reason, result.stop_reason, result.text) == (FinishReason.STOP, None, "")
    assert (result.num_tokens_to_truncate, result.num_chars_to_truncate) == (0, 4)
    assert checker.num_output_tokens == 2
    with pytest.raises(RuntimeError, match="after the request finished"):
        checker.update([5], ["x"])


def test_eos_text_kept_with_include_stop_str_and_ignored_with_ignore_eos() -> None:
    result = _checker(include_stop_str_in_output=True).update([EOS], ["</s>"])
    assert result.finished and result.text == "</s>" and result.num_chars_to_truncate == 0
    assert not _checker(ignore_eos=True, max_tokens=4).update([EOS], ["</s>"]).finished


def test_stop_token_id_reports_itself() -> None:
    result = _checker(stop_token_ids=(42,)).update([42], ["<|tool|>"])
    assert (result.finish_reason, result.stop_reason, result.text) == (FinishReason.STOP, 42, "")


def test_stop_string_split_across_tokens_is_held_back() -> None:
    checker = _checker(stop=("</tool>",))
    assert _feed(checker, ["Hello <", "/to", "ol> bye"]) == ["Hello ", "", ""]
    assert checker.finish_reason == FinishReason.STOP


def test_stop_string_truncation_counts() -> None:
    checker = _checker(stop=("</tool>",))
    checker.update([7], ["Hello <"])
    checker.update([8], ["/to"])
    result = checker.update([9], ["ol> bye"])
    assert (result.stop_reason, result.text) == ("</tool>", "")
    # All text passed in is "Hello </tool> bye"; the stop point is after "Hello ".
    assert (result.num_tokens_to_truncate, result.num_chars_to_truncate) == (0, len("</tool> bye"))


def test_include_stop_str_in_output() -> None:
    checker = _checker(stop=("</tool>",), include_stop_str_in_output=True)
    assert _feed(checker, ["Hello <", "/to", "ol> bye"]) == ["Hello ", "", "</tool>"]
    assert checker.finish_reason == FinishReason.STOP


def test_false_alarm_prefix_is_released() -> None:
    checker = _checker(stop=("</tool>",))
    assert _feed(checker, ["a <", "/t", "able>", " ok"]) == ["a ", "", "</table>", " ok"]
    assert checker.finish_reason is None


def test_hold_back_uses_longest_matching_suffix() -> None:
    checker = _checker(stop=("abc", "bd"))
    assert checker.update([5], ["xxab"]).text == "xx"
    assert checker.pending_text == "ab"
    assert checker.flush() == "ab" and checker.pending_text == ""


def test_earliest_stop_string_wins() -> None:
    result = _checker(stop=("world", "lo w")).update([5], ["hello world"])
    assert (result.stop_reason, result.text) == ("lo w", "hel")


def test_multi_token_update_truncates_tokens_after_stop_token() -> None:
    result = _checker(stop_token_ids=(42,)).update([5, 42, 6, 7], ["a", "<x>", "bb", "c"])
    assert (result.text, result.num_tokens_to_truncate, result.num_chars_to_truncate) == ("a", 2, 6)


def test_multi_token_update_truncates_after_stop_string() -> None:
    checker = _checker(stop=("STOP",))
    result = checker.update([5, 6, 7, 8], ["go S", "TOP!", "more", "x"])
    assert (result.text, result.stop_reason) == ("go ", "STOP")
    assert (result.num_tokens_to_truncate, result.num_chars_to_truncate) == (2, len("STOP!morex"))
    assert checker.num_output_tokens == 2


def test_length_finish_releases_held_text_and_truncates_extra_tokens() -> None:
    checker = _checker(max_tokens=3, stop=("abc",))
    assert checker.update([5], ["x"]).text == "x"
    result = checker.update([6, 7, 8], ["y", "ab", "zz"])
    assert (result.finish_reason, result.text) == (FinishReason.LENGTH, "yab")
    assert (result.num_tokens_to_truncate, result.num_chars_to_truncate) == (1, 2)


def test_stop_beats_length_on_the_same_token() -> None:
    result = _checker(max_tokens=1).update([EOS], [""])
    assert result.finish_reason == FinishReason.STOP
    result = _checker(max_tokens=1, stop=("x",)).update([5], ["x"])
    assert result.finish_reason == FinishReason.STOP


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="2 token ids but 1 texts"):
        _checker().update([5, 6], ["a"])


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="ab<>", max_size=30),
    stop=st.text(alphabet="ab<>", min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=30), max_size=8),
    include=st.booleans(),
)
def test_streamed_output_equals_reference(
    text: str, stop: str, cuts: list[int], include: bool
) -> None:
    bounds = sorted({0, len(text), *(min(c, len(text)) for c in cuts)})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)] or [""]
    checker = _checker(stop=(stop,), include_stop_str_in_output=include)
    released = "".join(_feed(checker, pieces))
    index = text.find(stop)
    if index == -1:
        assert checker.finish_reason is None and released + checker.flush() == text
        # Never hold back more than a stop-string prefix.
        assert len(text) - len(released) < len(stop)
    else:
        end = index + len(stop) if include else index
        assert checker.finish_reason == FinishReason.STOP and released == text[:end]
