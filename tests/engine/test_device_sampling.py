"""The device sampler: the right distribution, per-row knobs, and noise that depends only on (seed, step, token)."""

from __future__ import annotations

import math

import pytest
import torch

from phifleet.engine.device_sampling import RowParams, SamplingBatch, row_keys, sample, uniform_noise
from phifleet.engine.kv_pool import KVPool, KVShape, OutOfBlocks


def rows(n: int, **kw) -> list[RowParams]:
    base = dict(temperature=1.0, top_p=1.0, top_k=0, seed=7, step=0)
    base.update(kw)
    return [RowParams(**{**base, "step": i}) for i in range(n)]


def test_gumbel_max_draws_follow_the_softmax():
    """4,000 draws over 4 tokens land within 3 standard errors of softmax(logits / T)."""
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0])
    n = 4000
    batch = SamplingBatch(rows(n, temperature=0.8), torch.device("cpu"), 4)
    drawn = sample(logits.expand(n, 4), batch)
    freq = torch.bincount(drawn, minlength=4).float() / n
    want = torch.softmax(logits / 0.8, dim=0)
    for f, p in zip(freq.tolist(), want.tolist(), strict=True):
        assert abs(f - p) < 3 * math.sqrt(p * (1 - p) / n) + 1e-3


def test_top_k_and_top_p_hold_per_row():
    logits = torch.tensor([3.0, 2.9, 2.8, 0.0, -1.0, -2.0]).expand(600, 6)
    knobs = [RowParams(1.5, 1.0, 2, 1, i) for i in range(300)] + [RowParams(1.5, 0.5, 0, 1, i) for i in range(300)]
    out = sample(logits, SamplingBatch(knobs, torch.device("cpu"), 6))
    assert set(out[:300].tolist()) == {0, 1}  # top-k 2
    # top-p 0.5: token 0 holds ~36% of the mass at T=1.5, so tokens 0 and 1 are kept, never the third.
    assert set(out[300:].tolist()) == {0, 1}


def test_greedy_rows_ignore_the_noise_and_a_bad_bias_fails_its_row_alone():
    logits = torch.tensor([[0.0, 5.0, 1.0], [0.0, 5.0, 1.0], [4.0, 0.0, 0.0]])
    knobs = [
        RowParams(0.0, 1.0, 0, 1, 0),
        RowParams(0.0, 1.0, 0, 1, 0, logit_bias={2: 100.0}),
        RowParams(0.0, 1.0, 0, 1, 0, logit_bias={9: 1.0}),
    ]
    batch = SamplingBatch(knobs, torch.device("cpu"), 3)
    assert sample(logits, batch).tolist() == [1, 2, 0]
    assert list(batch.failures) == [2] and "outside the vocabulary" in str(batch.failures[2])


def test_noise_is_a_function_of_seed_step_and_token_only():
    keys = row_keys(torch.tensor([1, 1, 2, -5, 2**63 - 1]), torch.tensor([0, 1, 0, 0, 0]))
    assert len(set(keys.tolist())) == 5  # steps and seeds (negative and huge too) give different streams
    u = uniform_noise(keys, 1000)
    assert torch.equal(u, uniform_noise(keys, 1000)) and bool((u > 0).all() and (u < 1).all())
    assert torch.equal(uniform_noise(keys[2:3], 1000), u[2:3])  # a row's noise does not depend on its neighbours
    many = uniform_noise(row_keys(torch.arange(100), torch.zeros(100, dtype=torch.long)), 10_000)
    deciles = torch.histc(many, 10, 0, 1) / many.numel()
    assert float((deciles - 0.1).abs().max()) < 0.001  # 1M draws: each decile within ~3 standard errors


def test_pool_hands_out_each_block_once_and_takes_them_back():
    pool = KVPool(KVShape(1, 1, 2, 4, 5, torch.float32), torch.device("cpu"))
    assert pool.capacity == 4
    a = pool.allocate(3)
    assert KVPool.NULL_BLOCK not in a and len(set(a)) == 3
    with pytest.raises(OutOfBlocks):
        pool.allocate(2)
    pool.share(a[0])
    pool.release(a)
    assert pool.free_blocks == 3 and pool.refs(a[0]) == 1
    pool.release([a[0]])
    assert pool.used_blocks == 0
    with pytest.raises(ValueError, match="released more often"):
        pool.release([a[0]])
    assert pool.slots([3, 1], 2, 6) == [14, 15, 4, 5]
