"""The training loop's own kernels: the fused cross-entropy, the CPU dropout, the written-out layers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from migrec.models.training import fused_cross_entropy
from migrec.models.transformer import CausalTransformer, dropout


@pytest.mark.parametrize("masked", [False, True])
def test_fused_cross_entropy_matches_autograd_in_blocks(masked):
    torch.manual_seed(0)
    q = torch.randn(1000, 16, requires_grad=True)
    w = torch.randn(300, 16, requires_grad=True)
    labels = torch.randint(0, 290, (1000,))
    bias = None
    if masked:                       # softmax_over="seen": -inf on items outside the softmax
        bias = torch.zeros(300)
        bias[290:] = -torch.inf
    ref = F.cross_entropy(q @ w.T + (0 if bias is None else bias), labels, reduction="sum")
    ref_q, ref_w = torch.autograd.grad(ref * 0.7, (q, w))
    # blocks of 100 rows: ten blocks and the gradient of w summed across them
    got = fused_cross_entropy(q, w, labels, bias, block_bytes=4 * 300 * 100)
    got_q, got_w = torch.autograd.grad(got * 0.7, (q, w))
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    torch.testing.assert_close(got_q, ref_q, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_w, ref_w, atol=1e-4, rtol=1e-4)
    if masked:
        assert float(got_w[290:].abs().max()) == 0.0      # excluded items get no gradient


def test_fused_cross_entropy_trains_like_the_plain_loss():
    """A few AdamW steps with either loss land on the same weights."""
    torch.manual_seed(1)
    start_q, start_w = torch.randn(200, 8), torch.randn(50, 8)
    labels = torch.randint(0, 50, (200,))
    ends = []
    for fused in (False, True):
        q, w = start_q.clone().requires_grad_(True), start_w.clone().requires_grad_(True)
        opt = torch.optim.AdamW([q, w], lr=0.05)
        for _ in range(5):
            loss = fused_cross_entropy(q, w, labels, block_bytes=4 * 50 * 64) if fused else \
                F.cross_entropy(q @ w.T, labels, reduction="sum")
            opt.zero_grad()
            loss.backward()
            opt.step()
        ends.append((q.detach(), w.detach(), float(loss.detach())))
    torch.testing.assert_close(ends[0][0], ends[1][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ends[0][1], ends[1][1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_cpu_dropout_rate_scale_and_gradient(p):
    torch.manual_seed(0)
    x = torch.full((400, 500), 3.0, requires_grad=True)
    y = dropout(x, p, True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.005                                   # 200k draws: sd about 0.001
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 3.0 / (1 - p)))
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() / (1 - p))   # the same mask, same scale
    assert dropout(x, p, False) is x and dropout(x, 0.0, True) is x
    # two calls draw different masks; a seeded generator repeats them
    torch.manual_seed(5)
    a = dropout(torch.ones(1000), p, True)
    b = dropout(torch.ones(1000), p, True)
    torch.manual_seed(5)
    assert not torch.equal(a, b) and torch.equal(dropout(torch.ones(1000), p, True), a)


@pytest.mark.parametrize("recency", [False, True])
def test_written_out_layers_equal_torch_encoder(recency):
    """Eval output = nn.TransformerEncoder's own forward over the same weights; training with a
    drop rate that rounds to zero runs the written-out attention path and gives the same output."""
    torch.manual_seed(0)
    net = CausalTransformer(32, 2, 2, 1e-9, 50, recency=recency)
    x = torch.randn(3, 17, 32)
    length = x.shape[1]
    causal = torch.triu(torch.ones(length, length, dtype=torch.bool), 1)
    with torch.no_grad():
        h = net.input_norm(x + net.position.weight[:length][None])
        if recency:
            pos = torch.arange(length)
            distance = (pos[:, None] - pos[None, :]).clamp(min=0).float()
            mask = (-F.softplus(net.slope)[:, None, None] * distance).masked_fill(causal, -torch.inf).repeat(3, 1, 1)
            ref = net.norm(net.blocks(h, mask=mask))
        else:
            ref = net.norm(net.blocks.eval()(h, mask=causal, is_causal=True))
        torch.testing.assert_close(net.eval()(x), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(net.train()(x), ref, atol=1e-5, rtol=1e-5)
    # a saved state_dict keeps torch's names: it loads into a fresh network unchanged
    fresh = CausalTransformer(32, 2, 2, 0.3, 50, recency=recency)
    fresh.load_state_dict(net.state_dict())
    np.testing.assert_allclose(fresh.eval()(x).detach().numpy(), ref.numpy(), atol=1e-5)


def test_fused_cross_entropy_with_several_queries_scores_each_item_by_its_best():
    """q [n, K, H]: logits max_k q_k @ w.T, the gradient of each item to the query that scored it."""
    torch.manual_seed(2)
    q = torch.randn(300, 4, 8, requires_grad=True)
    w = torch.randn(120, 8, requires_grad=True)
    labels = torch.randint(0, 120, (300,))
    ref = F.cross_entropy((q @ w.T).amax(1), labels, reduction="sum")
    ref_q, ref_w = torch.autograd.grad(ref, (q, w))
    got = fused_cross_entropy(q, w, labels, block_bytes=4 * 120 * 4 * 50)     # blocks of 50 rows
    got_q, got_w = torch.autograd.grad(got, (q, w))
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    torch.testing.assert_close(got_q, ref_q, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_w, ref_w, atol=1e-4, rtol=1e-4)
