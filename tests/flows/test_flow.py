"""Tests of latticeflow/flows/flow.py: the container keeps the kind of the fields."""

import math

import torch

from latticeflow.flows.flow import Flow


class ComplexPhasePrior:
    """A toy prior on complex fields: independent unit phases e^{iφ}, φ uniform."""

    is_complex = True

    def __init__(self, shape):
        self.shape = shape

    def sample(self, n, generator=None):
        phi = 2 * math.pi * torch.rand((n, *self.shape), dtype=torch.float64, generator=generator)
        return torch.polar(torch.ones_like(phi), phi)

    def log_prob(self, z):
        return torch.full(z.shape[:1], -math.prod(self.shape) * math.log(2 * math.pi),
                          dtype=z.real.dtype)


class PhaseRotation(torch.nn.Module):
    """x -> e^{ia} x with a learnable a: a bijection of complex fields with log-det 0."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.3))

    def forward(self, z):
        return z * torch.polar(torch.ones_like(self.a), self.a).to(z.dtype), torch.zeros(z.shape[0], dtype=z.real.dtype)

    def inverse(self, x):
        return x * torch.polar(torch.ones_like(self.a), -self.a).to(x.dtype), torch.zeros(x.shape[0], dtype=x.real.dtype)


def test_complex_fields_stay_complex_in_float32_and_float64():
    for flow, want in ((Flow(ComplexPhasePrior((3, 3)), [PhaseRotation()]), torch.complex64),
                       (Flow(ComplexPhasePrior((3, 3)), [PhaseRotation()]).double(), torch.complex128)):
        x, log_q = flow.sample(4, generator=torch.Generator().manual_seed(0))
        assert x.dtype == want and flow.field_dtype == want
        assert x.imag.abs().max() > 0.1  # the imaginary part survived
        assert torch.allclose(x.abs(), torch.ones_like(x.abs()), atol=1e-6)
        assert torch.allclose(flow.log_prob(x.to(torch.complex128)), log_q, atol=1e-6)


def test_real_priors_keep_the_parameter_dtype():
    from latticeflow.flows.priors import NormalPrior

    flow = Flow(NormalPrior((2, 2)), [])
    assert flow.field_dtype == flow.dtype == torch.get_default_dtype()
    assert flow.double().field_dtype == torch.float64
