import pytest

from router.block_hashing import BlockHasher


def test_chain_equals_vllms_own_block_hashes():
    from vllm.utils.hashing import sha256
    from vllm.v1.core import kv_cache_utils as kcu

    kcu.init_none_hash(sha256)
    tokens = list(range(1000, 1000 + 300))
    expected, parent = [], None
    for start in range(0, 256, 128):
        parent = kcu.hash_block_tokens(sha256, parent, tokens[start : start + 128])
        expected.append(kcu.maybe_convert_block_hash(parent))
    assert BlockHasher(128).chain(tokens) == expected


def test_only_full_blocks_are_hashed():
    hasher = BlockHasher(4)
    assert len(hasher.chain(list(range(11)))) == 2
    assert hasher.chain([1, 2, 3]) == []


def test_chain_is_a_prefix_chain():
    hasher = BlockHasher(4)
    a = hasher.chain([1, 2, 3, 4, 5, 6, 7, 8])
    b = hasher.chain([1, 2, 3, 4, 9, 9, 9, 9])
    c = hasher.chain([0, 2, 3, 4, 5, 6, 7, 8])
    assert a[0] == b[0] and a[1] != b[1]
    assert a[1] != c[1]  # same block contents, different parent


def test_seed_changes_every_hash():
    assert BlockHasher(4, seed="x").chain([1, 2, 3, 4]) != BlockHasher(4).chain([1, 2, 3, 4])


def test_bad_block_size():
    with pytest.raises(ValueError):
        BlockHasher(0)
