"""Segmentation heads: the patch linear head's geometry, UPerNet shapes and gradients."""

from __future__ import annotations

import pytest
import torch

from terrafm.eval.segmentation import PatchLinearHead
from terrafm.eval.upernet import UPerNet


def test_patch_head_puts_each_token_in_its_own_block():
    head = PatchLinearHead(dim=4, num_classes=2, patch=2)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.zero_()
        head.proj.weight[:, 0] = 1.0  # every logit = token feature 0
    tokens = torch.zeros(1, 9, 4)
    tokens[0, 5, 0] = 7.0  # token (row 1, col 2) of a 3 x 3 grid
    out = head(tokens)
    assert out.shape == (1, 2, 6, 6)
    expect = torch.zeros(6, 6)
    expect[2:4, 4:6] = 7.0
    torch.testing.assert_close(out[0, 1], expect)


@pytest.mark.parametrize("grid", [2, 4])
def test_upernet_shapes_and_gradients(grid):
    torch.manual_seed(0)
    net = UPerNet(dim=16, num_classes=5, channels=8, aux_channels=8)
    feats = [torch.randn(2, 16, grid, grid, requires_grad=True) for _ in range(4)]
    pyramid = net.neck(feats)
    assert [tuple(p.shape[-2:]) for p in pyramid] == [
        (4 * grid,) * 2,
        (2 * grid,) * 2,
        (grid,) * 2,
        (grid // 2,) * 2,
    ]
    main, aux = net(feats, (16 * grid, 16 * grid))
    assert main.shape == aux.shape == (2, 5, 16 * grid, 16 * grid)
    target = torch.randint(0, 5, (2, 16 * grid, 16 * grid))
    target[0, :4] = 255
    loss = torch.nn.functional.cross_entropy(main, target, ignore_index=255)
    loss = loss + 0.4 * torch.nn.functional.cross_entropy(aux, target, ignore_index=255)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)


def test_upernet_needs_four_levels():
    with pytest.raises(ValueError, match="4 block outputs"):
        UPerNet(8, 2, 8)([torch.zeros(1, 8, 2, 2)] * 3, (32, 32))
