import pytest

from pdserve.client import make_request
from pdserve.v1 import inference_pb2
from router.errors import InvalidRequest
from router.validation import check_prompt_length, check_request, request_id_for, sampling_spec
from tests.unit.factories import make_limits


@pytest.mark.parametrize(
    "request_, fragment",
    [
        (inference_pb2.GenerateRequest(max_tokens=4), "one of 'prompt' or 'chat'"),
        (make_request("", max_tokens=4), "'prompt' is empty"),
        (make_request(chat=[], max_tokens=4), "'chat.messages' is empty"),
        (make_request(chat=[("robot", "x")], max_tokens=4), "role 'robot'"),
        (make_request("x", max_tokens=0), "'max_tokens' is required"),
        (make_request("x", max_tokens=51), "exceeds the limit of 50"),
        (make_request("x", max_tokens=4, temperature=-0.1), "temperature"),
        (make_request("x", max_tokens=4, temperature=2.5), "temperature"),
        (make_request("x", max_tokens=4, top_p=0.0), "top_p"),
        (make_request("x", max_tokens=4, top_p=1.5), "top_p"),
        (make_request("x", max_tokens=4, stop=["a"] * 9), "at most 8 stop strings"),
        (make_request("x", max_tokens=4, stop=[""]), "stop strings must be"),
        (make_request("x", max_tokens=4, request_id="a\nb"), "request_id"),
        (make_request("x", max_tokens=4, tenant="t" * 200), "tenant"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(request_, fragment):
    with pytest.raises(InvalidRequest, match=fragment.replace("(", r"\(").replace("'", "'")):
        check_request(request_, make_limits())


def test_good_request_passes():
    check_request(make_request("hello", max_tokens=50, temperature=0.7, top_p=0.9, stop=["\n"]), make_limits())


@pytest.mark.parametrize(
    "prompt_tokens, max_tokens, fragment",
    [(0, 4, "no tokens"), (101, 4, "limit is 100"), (100, 29, "context of 128")],
)
def test_prompt_length_limits(prompt_tokens, max_tokens, fragment):
    with pytest.raises(InvalidRequest, match=fragment):
        check_prompt_length(prompt_tokens, max_tokens, make_limits())


def test_sampled_requests_always_carry_a_seed_so_both_engines_agree():
    spec = sampling_spec(make_request("x", max_tokens=4, temperature=0.8))
    assert spec.HasField("seed")
    assert not sampling_spec(make_request("x", max_tokens=4, temperature=0.0)).HasField("seed")
    assert sampling_spec(make_request("x", max_tokens=4, temperature=0.8, seed=7)).seed == 7


def test_defaults_follow_the_openai_convention():
    request = inference_pb2.GenerateRequest(prompt="x", max_tokens=3)
    spec = sampling_spec(request)
    assert (spec.temperature, spec.top_p, spec.max_tokens) == (1.0, 1.0, 3)


def test_request_id_is_kept_or_assigned():
    assert request_id_for(make_request("x", request_id="abc")) == "abc"
    assert request_id_for(make_request("x")).startswith("req-")
