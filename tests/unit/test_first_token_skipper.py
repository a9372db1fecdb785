from decode_service.stream import FirstTokenSkipper
from pdserve.v1 import handoff_pb2


def _skipper(first_id=7, first_text=" Hello"):
    request = handoff_pb2.DecodeRequest(first_token_id=first_id, first_token_text=first_text)
    return FirstTokenSkipper.for_request(request)


def test_first_delta_is_dropped():
    s = _skipper()
    assert s.feed([7], " Hello") == ([], "")
    assert s.feed([8], " world") == ([8], " world")
    assert not s.mismatched


def test_coalesced_first_delta_keeps_the_rest():
    s = _skipper()
    assert s.feed([7, 8, 9], " Hello world!") == ([8, 9], " world!")


def test_partial_character_held_back_by_both_engines():
    s = _skipper(first_id=200, first_text="")
    assert s.feed([200], "") == ([], "")
    assert s.feed([201], "é") == ([201], "é")


def test_mismatch_is_reported():
    s = _skipper()
    s.feed([9], " Bye")
    assert s.mismatched


def test_colocated_request_passes_everything_through():
    s = FirstTokenSkipper.for_request(handoff_pb2.DecodeRequest())
    assert s.feed([1, 2], "ab") == ([1, 2], "ab")
