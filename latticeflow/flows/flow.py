"""The flow container: a prior followed by a stack of bijective layers.

A layer is any ``nn.Module`` with

    forward(x) -> (y, logdet)     # logdet = log|det ∂y/∂x|, shape (batch,)
    inverse(y) -> (x, logdet)     # logdet = log|det ∂x/∂y|, shape (batch,)

The model density of ``x = f(z)``, ``z ~ r``, is ``log q(x) = log r(z) − Σ_layers logdet``.
The flow runs in the dtype of its parameters (train in float32; call ``.double()`` to
sample with weights computed in float64).  Fields keep their kind: a prior on complex
fields (``prior.is_complex``, e.g. SU(N) links) gives fields in the complex counterpart of
the parameter dtype (complex64 for float32), never a real cast that drops the imaginary part.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

__all__ = ["Flow"]


class Flow(nn.Module):
    """Prior + layers, with exact sampling density and density evaluation.

    References:
        arXiv:1904.12072 (flow-based MCMC), arXiv:2101.08176 (tutorial).

    Arguments:
        prior: an object with ``sample(n, generator)`` and ``log_prob(z) -> (n,)``.
        layers: bijective layers applied in order to prior samples.

    Example:
        >>> from latticeflow.flows import NormalPrior
        >>> flow = Flow(NormalPrior((4, 4)), [])
        >>> x, log_q = flow.sample(8)
        >>> torch.allclose(flow.log_prob(x), log_q)
        True
    """

    def __init__(self, prior, layers: Iterable[nn.Module]):
        super().__init__()
        self.prior = prior
        self.layers = nn.ModuleList(layers)
        # follows .double()/.float()/.to(): tells which dtype the flow currently runs in
        self.register_buffer("_probe", torch.zeros((), dtype=torch.get_default_dtype()))

    @property
    def dtype(self) -> torch.dtype:
        return self._probe.dtype

    @property
    def field_dtype(self) -> torch.dtype:
        """dtype of the fields: the parameter dtype, or its complex counterpart for a prior
        on complex fields."""
        if getattr(self.prior, "is_complex", False):
            return torch.complex128 if self.dtype == torch.float64 else torch.complex64
        return self.dtype

    @property
    def device(self) -> torch.device:
        return self._probe.device

    def forward(self, z: torch.Tensor):
        """Push prior samples through all layers: ``(x, Σ logdet)``."""
        logdet = torch.zeros(z.shape[0], dtype=self.dtype, device=z.device)
        for layer in self.layers:
            z, ld = layer(z)
            logdet = logdet + ld
        return z, logdet

    def inverse(self, x: torch.Tensor):
        """Pull fields back to the prior: ``(z, Σ log|det ∂z/∂x|)``."""
        logdet = torch.zeros(x.shape[0], dtype=self.dtype, device=x.device)
        for layer in reversed(self.layers):
            x, ld = layer.inverse(x)
            logdet = logdet + ld
        return x, logdet

    def sample(self, n: int, generator: torch.Generator | None = None):
        """``n`` fields and their exact log-density: ``(x, log_q)`` with shapes ``(n, *field), (n,)``."""
        # drawn on the CPU from a CPU generator, then moved: the same draws on every device
        z = self.prior.sample(n, generator=generator).to(self.device, self.field_dtype)
        log_r = self.prior.log_prob(z)
        x, logdet = self(z)
        return x, log_r - logdet

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log q(x) through the inverse, ``(n,)``."""
        z, logdet = self.inverse(x.to(self.field_dtype))
        return self.prior.log_prob(z) + logdet
