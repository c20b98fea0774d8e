"""Conditioner networks: convolutional nets with circular padding, any lattice dimension.

A stack of periodic convolutions commutes with every lattice translation and has no
notion of the lattice size, so a conditioner trained at L = 8 runs unchanged at L = 12
(arXiv:1904.12072, 2101.08176).  Inputs are ``(batch, channels, *lattice)``.

- d ≤ 3 uses ``torch.nn.ConvNd`` with ``padding_mode="circular"``; d ≥ 4 uses a sum of
  rolled copies contracted with the kernel (same maths, no PyTorch ``Conv4d`` exists).
- ``odd=True`` drops every bias and uses an odd activation (:class:`OddTanh`), so that
  ``net(−x) = −net(x)`` bit for bit: the building block of Z₂-equivariant couplings.
- :class:`ParityConvNet` returns an odd and an even output from one pass of an odd trunk:
  the one-pass Z₂-equivariant conditioner (``z2_conditioner = "odd"``).
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

__all__ = ["PeriodicConv", "ConvNet", "ParityConvNet", "OddTanh", "CircularPad", "circular_pad"]

_ACTIVATIONS = {
    # in place: it always follows a convolution, whose backward does not need its output
    # (the U(1) training step −5 %, the same weights bit for bit; docs/performance.md)
    "leaky_relu": lambda: nn.LeakyReLU(inplace=True),
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


class _OddTanh(torch.autograd.Function):
    """tanh x = sign(x) (2 σ(2|x|) − 1), with the backward g (1 − y²)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.abs().mul_(2).sigmoid_().mul_(2).sub_(1).copysign_(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


class OddTanh(nn.Module):
    """tanh, odd bit for bit, through the logistic function: torch's CPU tanh takes 2.3 ms
    for 10⁶ floats here, forward and backward 17 ms, this 2.7 ms (docs/performance.md).
    Within 2e-7 of ``torch.tanh`` in float32 and 4e-16 in float64, absolutely: near 0 the
    subtraction cancels (float32 gives 0 for |x| < 3e-8), which an activation does not mind.

    Example:
        >>> x = torch.linspace(-3, 3, 7, dtype=torch.float64)
        >>> torch.allclose(OddTanh()(x), torch.tanh(x), atol=1e-15)
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _OddTanh.apply(x)


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

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` convolved; ``weight`` and ``bias`` replace the layer's own (e.g. masked) ones."""
        weight = self.weight if weight is None else weight
        bias = self.bias if bias is None else bias
        if self.conv is not None:
            return self.conv._conv_forward(self._pad(x), weight, bias)
        half = self.kernel_size // 2
        axes = tuple(range(2, 2 + self.dim))
        out = 0
        for offset in itertools.product(range(self.kernel_size), repeat=self.dim):
            # cross-correlation like nn.Conv: out[x] += w[k] · in[x + k − half]
            rolled = torch.roll(x, shifts=tuple(half - k for k in offset), dims=axes)
            w = weight[(slice(None), slice(None)) + offset]
            out = out + torch.einsum("oi,bi...->bo...", w, rolled)
        if bias is not None:
            out = out + bias.view(1, -1, *([1] * self.dim))
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
        odd: no biases and :class:`OddTanh` activations, so ``net(−x) = −net(x)``.
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
        act = OddTanh if odd else _ACTIVATIONS[activation]
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


class ParityConvNet(nn.Module):
    """An odd and an even output of one periodic CNN pass, ``x -> (odd(x), even(x))``.

    The trunk is an odd :class:`ConvNet` (no biases, :class:`OddTanh` after every layer), so
    its features h satisfy h(−x) = −h(x).  The first ⌊n/2⌋ of them are kept (odd), the others
    squared (even), and one convolution reads them with a block-masked kernel: the odd
    outputs see only the odd features and have no bias, the even outputs see only the squared
    ones.  A Z₂-equivariant coupling builds its parameters from the two outputs in one pass,
    where symmetrising a general network takes two (docs/performance.md).

    Arguments:
        dim, in_channels, kernel_size: as for :class:`ConvNet`.
        out_channels: channels of each of the two outputs.
        hidden: channels of the trunk's layers (at least one, the last at least 2: the features).
        zero_init: start the head at zero (the coupling starts as the identity).

    Example:
        >>> net = ParityConvNet(2, 1, 2, hidden=(8, 8), zero_init=False)
        >>> x = torch.randn(3, 1, 6, 6)
        >>> (odd, even), (odd_m, even_m) = net(x), net(-x)
        >>> torch.equal(odd_m, -odd), torch.equal(even_m, even)
        (True, True)
    """

    def __init__(self, dim: int, in_channels: int, out_channels: int,
                 hidden: Sequence[int] = (8, 8), kernel_size: int = 3, zero_init: bool = True):
        super().__init__()
        if not hidden or hidden[-1] < 2:
            raise ValueError("ParityConvNet needs a last hidden layer of at least 2 channels "
                             f"(its odd and its even features), got hidden={tuple(hidden)}")
        features = hidden[-1]
        self.n_odd, self.out_channels = features // 2, out_channels
        self.trunk = ConvNet(dim, in_channels, features, hidden=hidden[:-1],
                             kernel_size=kernel_size, odd=True, zero_init=False)
        self.head = PeriodicConv(dim, features, 2 * out_channels, kernel_size)
        odd_out = torch.arange(2 * out_channels) < out_channels
        odd_in = torch.arange(features) < self.n_odd
        mask = (odd_out[:, None] == odd_in[None, :]).to(self.head.weight.dtype)
        self.register_buffer("kernel_mask", mask.view(mask.shape + (1,) * dim), persistent=False)
        self.register_buffer("bias_mask", (~odd_out).to(mask.dtype), persistent=False)
        self.register_buffer("squared", ~odd_in.view(1, -1, *([1] * dim)), persistent=False)
        if zero_init:
            with torch.no_grad():
                self.head.weight.zero_()
                self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = _OddTanh.apply(self.trunk(x))
        features = h * torch.where(self.squared, h, 1.0)
        out = self.head(features, weight=self.head.weight * self.kernel_mask,
                        bias=self.head.bias * self.bias_mask)
        return out.split(self.out_channels, dim=1)
