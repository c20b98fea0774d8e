"""Periodic convolutions: translation equivariance, the d >= 4 path, the odd variant."""

import pytest
import torch

from latticeflow.flows.nets import ConvNet, PeriodicConv


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
def test_translation_equivariance(dim):
    torch.manual_seed(dim)
    net = ConvNet(dim, 1, 2, hidden=(3,), zero_init=False).double()
    x = torch.randn(2, 1, *([4] * dim), dtype=torch.float64)
    for axis in range(dim):
        shifted = torch.roll(x, 1, dims=2 + axis)
        assert torch.allclose(net(shifted), torch.roll(net(x), 1, dims=2 + axis), atol=1e-12)


def test_generic_path_matches_torch_conv():
    torch.manual_seed(0)
    ref = PeriodicConv(2, 2, 3, kernel_size=3).double()
    generic = PeriodicConv(2, 2, 3, kernel_size=3).double()
    generic.conv = None
    generic.weight, generic.bias = ref.weight, ref.bias
    x = torch.randn(4, 2, 6, 5, dtype=torch.float64)
    assert torch.allclose(generic(x), ref(x), atol=1e-12)


def test_odd_net_is_odd_and_lattice_size_independent():
    torch.manual_seed(1)
    net = ConvNet(2, 1, 2, hidden=(8, 8), odd=True, zero_init=False).double()
    for size in (4, 8, 12):
        x = torch.randn(3, 1, size, size, dtype=torch.float64)
        assert torch.allclose(net(-x), -net(x), atol=1e-14)


def test_zero_init_outputs_zero():
    net = ConvNet(2, 1, 2)
    assert torch.count_nonzero(net(torch.randn(2, 1, 4, 4))) == 0


def test_even_kernel_rejected():
    with pytest.raises(ValueError):
        PeriodicConv(2, 1, 1, kernel_size=2)
