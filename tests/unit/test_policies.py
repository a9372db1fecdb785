import pytest

from router.policies import Random, RoundRobin, make_policy

IDS = ["a", "b", "c"]


def test_round_robin_rotates_the_first_choice_and_keeps_the_rest_as_fallback():
    policy = RoundRobin()
    rankings = [policy.rank(IDS) for _ in range(4)]
    assert rankings == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]


@pytest.mark.parametrize("policy", [RoundRobin(), Random(seed=1)])
def test_rankings_are_permutations(policy):
    for _ in range(10):
        assert sorted(policy.rank(IDS)) == [0, 1, 2]
    assert policy.rank([]) == []


def test_random_spreads_first_choices():
    policy = Random(seed=3)
    firsts = {policy.rank(IDS)[0] for _ in range(50)}
    assert firsts == {0, 1, 2}


def test_unknown_policy_names_the_known_ones():
    with pytest.raises(ValueError, match="round_robin"):
        make_policy("fastest")
