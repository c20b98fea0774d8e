"""Conditioner networks: convolutional nets with circular padding, any lattice dimension.

A stack of periodic convolutions commutes with every lattice translation and has no
notion of the lattice size, so a conditioner trained at L = 8 runs unchanged at L = 12
(arXiv:1904.12072, 2101.08176).  Inputs are ``(batch, channels, *lattice)``.

- d ≤ 3 uses ``torch.nn.ConvNd`` with ``padding_mode="circular"``; d ≥ 4 uses a sum of
  rolled copies contracted with the kernel (same maths, no PyTorch ``Conv4d`` exists).
- ``odd=True`` drops every bias and uses an odd activation (tanh), so that
  ``net(−x) = −net(x)``: the building block of Z₂-equivariant couplings.
- The last layer starts at zero, so a fresh coupling layer is the identity map.

Speed (docs/performance.md): the periodic padding is one autograd node
(:class:`CircularPad`) whose backward folds the wrapped borders back in place, instead of
the chain of slices and concatenations autograd would record; 2D nets run channels-last,
which oneDNN's convolutions prefer and which leaves the output ``movedim(1, -1)``-contiguous
for the coupling layers.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["PeriodicConv", "ConvNet", "CircularPad", "circular_pad"]

_ACTIVATIONS = {
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


class CircularPad(torch.autograd.Function):
    """Periodic padding of the last ``ndim`` axes by ``half`` sites on each side.

    Forward: one copy of ``x`` into the padded tensor, then the wrapped borders copied
    from inside it, axis by axis (so the corners come out right).  Backward: the adjoint —
    the centre of the gradient copied once, and every border slab (folded along the later
    axes first) added onto the sites it copies.  Both keep channels-last layouts, and the
    backward is written with differentiable operations (double backward works too).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, half: int, ndim: int) -> torch.Tensor:
        ctx.half, ctx.ndim = half, ndim
        axes = range(x.dim() - ndim, x.dim())
        shape = [n + 2 * half if a in axes else n for a, n in enumerate(x.shape)]
        layout = (torch.channels_last if x.dim() == 4 and not x.is_contiguous()
                  and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
        out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout)
        _centre(out, axes, half).copy_(x)
        for i, a in enumerate(axes):  # full extent along the axes already padded
            slab = _centre(out, axes[i + 1:], half)
            n = x.shape[a]
            slab.narrow(a, 0, half).copy_(slab.narrow(a, n, half))
            slab.narrow(a, n + half, half).copy_(slab.narrow(a, half, half))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        axes = list(range(grad.dim() - ctx.ndim, grad.dim()))
        return _fold(grad, axes, ctx.half), None, None


def _centre(t: torch.Tensor, axes, half: int) -> torch.Tensor:
    for a in axes:
        t = t.narrow(a, half, t.shape[a] - 2 * half)
    return t


def _fold(grad: torch.Tensor, axes: list[int], half: int) -> torch.Tensor:
    """The gradient of the unpadded tensor from that of the padded one (see CircularPad)."""
    if not axes:
        return grad.clone()
    a, rest = axes[0], axes[1:]
    n = grad.shape[a] - 2 * half
    inner = _fold(grad.narrow(a, half, n), rest, half)
    inner.narrow(a, n - half, half).add_(_fold(grad.narrow(a, 0, half), rest, half))
    inner.narrow(a, 0, half).add_(_fold(grad.narrow(a, n + half, half), rest, half))
    return inner


def circular_pad(x: torch.Tensor, half: int, ndim: int) -> torch.Tensor:
    """``x`` padded periodically by ``half`` on each of its last ``ndim`` axes.

    Example:
        >>> circular_pad(torch.arange(4.0).view(1, 4), 1, 1)
        tensor([[3., 0., 1., 2., 3., 0.]])
    """
    if half == 0:
        return x
    if any(half > n for n in x.shape[x.dim() - ndim:]):
        raise ValueError(f"cannot pad {tuple(x.shape)} periodically by {half}: a lattice extent is smaller")
    return CircularPad.apply(x, half, ndim)


class PeriodicConv(nn.Module):
    """Convolution with periodic boundaries over ``dim`` lattice axes, stride 1, 'same' size.

    Arguments:
        dim: number of lattice axes d.
        in_channels, out_channels: channel counts.
        kernel_size: odd kernel extent (the same along every axis).
        bias: add a learnable bias per output channel.

    Example:
        >>> conv = PeriodicConv(2, 1, 4, kernel_size=3)
        >>> conv(torch.zeros(5, 1, 8, 8)).shape
        torch.Size([5, 4, 8, 8])
    """

    def __init__(self, dim: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 bias: bool = True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("kernel_size must be odd for a 'same' periodic convolution")
        self.dim, self.kernel_size = dim, kernel_size
        if dim <= 3:
            conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dim - 1]
            # periodic padding is done by hand (_pad): ~10x faster than padding_mode="circular"
            self.conv = conv(in_channels, out_channels, kernel_size, padding=0, bias=bias)
            self.weight, self.bias = self.conv.weight, self.conv.bias
        else:
            self.conv = None
            shape = (out_channels, in_channels) + (kernel_size,) * dim
            bound = 1 / math.sqrt(in_channels * kernel_size**dim)
            self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
            self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Periodic padding by kernel_size // 2 on every lattice axis (:class:`CircularPad`)."""
        return circular_pad(x, self.kernel_size // 2, self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            return self.conv(self._pad(x))
        half = self.kernel_size // 2
        axes = tuple(range(2, 2 + self.dim))
        out = 0
        for offset in itertools.product(range(self.kernel_size), repeat=self.dim):
            # cross-correlation like nn.Conv: out[x] += w[k] · in[x + k − half]
            rolled = torch.roll(x, shifts=tuple(half - k for k in offset), dims=axes)
            w = self.weight[(slice(None), slice(None)) + offset]
            out = out + torch.einsum("oi,bi...->bo...", w, rolled)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, *([1] * self.dim))
        return out


class ConvNet(nn.Module):
    """Periodic CNN: conv → activation → … → conv, ``(B, C_in, *L) → (B, C_out, *L)``.

    References:
        arXiv:1904.12072 (φ⁴ flows), arXiv:2101.08176 (tutorial architecture).

    Arguments:
        dim: lattice dimension d.
        in_channels, out_channels: channel counts.
        hidden: channels of the hidden layers, e.g. ``(8, 8)``.
        kernel_size: odd kernel extent.
        activation: ``"leaky_relu"``, ``"tanh"``, ``"gelu"`` or ``"silu"`` (ignored if odd).
        odd: no biases and tanh activations, so ``net(−x) = −net(x)``.
        zero_init: start the last layer at zero (the coupling starts as the identity).

    Example:
        >>> net = ConvNet(2, 1, 2, hidden=(8, 8))
        >>> net(torch.randn(3, 1, 6, 6)).shape
        torch.Size([3, 2, 6, 6])
    """

    def __init__(self, dim: int, in_channels: int, out_channels: int,
                 hidden: Sequence[int] = (8, 8), kernel_size: int = 3,
                 activation: str = "leaky_relu", odd: bool = False, zero_init: bool = True):
        super().__init__()
        self.odd = odd
        act = nn.Tanh if odd else _ACTIVATIONS[activation]
        channels = [in_channels, *hidden, out_channels]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            layers.append(PeriodicConv(dim, c_in, c_out, kernel_size, bias=not odd))
            if i < len(channels) - 2:
                layers.append(act())
        if zero_init:
            with torch.no_grad():
                layers[-1].weight.zero_()
                if layers[-1].bias is not None:
                    layers[-1].bias.zero_()
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # 2D lattices: channels-last (module docstring)
            x = x.contiguous(memory_format=torch.channels_last)
        return self.layers(x)
