"""The flow architecture of 2D SU(N) gauge theory, N = 2, 3 (arXiv:2008.05456).

Haar prior (:class:`~latticeflow.flows.priors.HaarPrior`) + ``layers`` gauge-equivariant
couplings (:class:`~latticeflow.flows.gauge_coupling.GaugeEquivariantCoupling`, the U(1)
masks and schedule) with :class:`SUNLoops`: each layer maps the active untraced plaquettes
by a conjugation-equivariant spectral spline (:class:`~latticeflow.flows.spectral.SpectralSpline`)
conditioned on ``(1/N) Re tr`` and ``(1/N) Im tr`` of the frozen plaquettes (and, with
``loops = ["plaquette", "rectangle"]``, of the 2x1 loops that contain no active link, among
them the loop around each active and passive pair), and moves every active link through
the loop it closes:

    μ = 0:  P = U_0(x) S,        U_0(x) ← R U_0(x),  R = h(P) P†    (new plaquette h(P));
    μ = 1:  P† = U_1(x) S',      U_1(x) ← R U_1(x),  R = h(P†) P    (new plaquette h(P†)†).

``R = V diag(e^{i(θ'−θ)}) V⁻¹`` comes from the spectral map directly
(:meth:`~latticeflow.flows.spectral.SpectralSpline.rotation`), so rounding errors of the
links' unitarity add up over the layers instead of compounding.

Under a gauge transformation ``P → g(x) P g(x)†`` and ``h(gPg†) = g h(P) g†`` (the features
are invariant), so ``U_μ(x) → g(x) U_μ(x) g(x+μ)†`` is carried through exactly: the layer
is gauge-equivariant and log q gauge-invariant.  Left multiplication by the fixed ``S†`` is
Haar-measure preserving, so the layer's log-det is that of h on the active plaquettes, and
the coupling is block-triangular exactly as for U(1) (``gauge_coupling`` module docstring).

The eigenbasis features (``loops`` containing ``"eigenbasis"``).  A spectral map only
sees class functions of the frozen loops, but the passive plaquette ``P_p = P(x − ν̂)``
that each update also changes depends on how the active loop's eigenvectors sit relative
to its neighbours.  Let ``W_x`` be the 2x1 loop around the passive and the active plaquette,
transported to x (:meth:`SUNLoops.pair_loop`; it contains no active link, so the layer does
not change it), and ``P = V diag(e^{iθ}) V⁻¹`` the oriented active loop.  Then
``f_k = (V⁻¹ W_x V)_kk`` is gauge-invariant, independent of the phases of the eigenvectors,
and unchanged by the layer (which keeps V), and

    tr P_p = Σ_k e^{∓iθ_k} f_k      (− for μ = 0, + for μ = 1),

so after the layer ``tr P_p' = Σ_k e^{∓iθ'_k} f_k``: with Re f_k, Im f_k as ``2N`` extra
channels at the active sites the conditioner can place the new spectrum θ' well for both
plaquettes.  The parameters of the map of P then depend on the active loops only through their
eigenvectors, which the maps do not change: in the coordinates (θ, V) the Jacobian is still triangular and the log-det
is that of the spectral map alone (tested against autograd).

Links stay complex (complex64 in float32 training, complex128 in float64 sampling); the
spectral step itself always runs in complex128.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..groups import dagger
from ..lattice import gauge_mask_schedule, rectangular_loop, shift
from ..schema import between, key
from ..theories.sun import plaquettes
from .flow import Flow
from .gauge_coupling import GaugeEquivariantCoupling, LoopGroup, loop_channels, loops_check, masks_fit
from .nets import ConvNet
from .priors import HaarPrior
from .registry import FlowArchitecture, FlowConfig, register_architecture
from .spectral import SpectralSpline, alcove_phases

__all__ = ["SUNLoops", "build_sun_flow", "SUNOptions", "SpectralSplineKernel"]


class SUNLoops(LoopGroup):
    """SU(N): loops are matrices ``(batch, L_0, L_1, N, N)``; see the module docstring.

    With ``eigenbasis``, :meth:`active_context` adds the ``2N`` channels of the
    passive-pair loop read in the eigenbasis of each active loop (module docstring).
    """

    channels_per_loop = 2

    def __init__(self, N: int, eigenbasis: bool = False):
        self.N, self.eigenbasis = int(N), bool(eigenbasis)
        self.context_channels = 2 * self.N if self.eigenbasis else 0

    def plaquettes(self, links):
        if links.dim() != 6 or links.shape[1] != 2 or links.shape[-2:] != (self.N, self.N):
            raise ValueError(f"expected SU({self.N}) links (batch, 2, L_0, L_1, {self.N}, {self.N}), "
                             f"got {tuple(links.shape)}")
        return plaquettes(links)[:, 0]

    def rectangle(self, plaq, a, links):
        """The 2x1 loop based at x with its long side along axis ``a``, from the links (a
        path that does not traverse the middle rung, so the layer leaves it unchanged
        exactly, also when the rung is an active link)."""
        extent = (2, 1) if a == 0 else (1, 2)
        return rectangular_loop(links[:, 0], links[:, 1], *extent, 0, 1, torch.matmul, dagger)

    def features(self, loop, mask):
        tr = torch.diagonal(loop, dim1=-2, dim2=-1).sum(-1) / self.N
        m = mask.to(tr.real.dtype)
        return [tr.real * m, tr.imag * m]

    def orient(self, loops, sign):
        return loops if sign > 0 else dagger(loops)

    def pair_loop(self, links, mu):
        """``W_x``: the 2x1 loop around the passive and the active plaquette of the
        ``mu``-link at x (long side across the active links, based at x − ν̂), transported
        to x along ``U_ν(x − ν̂)``; ``(batch, L_0, L_1, N, N)``, gauge-covariant at x."""
        nu = 1 - mu
        w = shift(self.rectangle(None, nu, links), nu, -1)
        t = shift(links[:, nu], nu, -1)
        return dagger(t) @ w @ t

    def active_context(self, links, active_loops, active, mu):
        decomposition = alcove_phases(active_loops.to(torch.complex128))
        if not self.eigenbasis:
            return None, decomposition
        _, v, v_inv = decomposition
        w = self.pair_loop(links, mu)[:, active].to(torch.complex128)
        f = torch.diagonal(v_inv @ w @ v, dim1=-2, dim2=-1)  # (B, n_active, N)
        chans = torch.zeros((links.shape[0], 2 * self.N, *active.shape), dtype=torch.float64,
                            device=links.device)
        chans[:, :, active] = torch.cat([f.real, f.imag], -1).transpose(1, 2)
        return chans, decomposition

    def transform(self, bijection, loops, params, inverse, context=None):
        """``(R, logdet)``: the left factor ``R = h(P) P†`` of each active loop."""
        return bijection.rotation(loops, params, inverse, context)

    def update_links(self, links_mu, active, old_active, rotation, sign):
        moved = links_mu.clone()
        moved[:, active] = rotation @ links_mu[:, active]
        return moved


@dataclass(frozen=True)
class SUNOptions:
    loops: tuple[str, ...] = key(("plaquette",), "loops fed to the conditioner: the traces of "
                                 'the frozen `"plaquette"`s, and of the `"rectangle"`s (the 2x1 loops '
                                 'without active links); `"eigenbasis"`: the loop around each active '
                                 "and passive plaquette pair read in the eigenbasis of the active one",
                                 loops_check("eigenbasis"))


@dataclass(frozen=True)
class SpectralSplineKernel:
    """``spectral``: rational-quadratic splines on the Weyl alcove of the eigen-phases."""

    bins: int = key(8, "spline bins per cell coordinate", between(2, 256))

    def make(self, N: int) -> SpectralSpline:
        return SpectralSpline(N, bins=self.bins)


def build_sun_flow(theory, spec) -> Flow:
    """The gauge-equivariant SU(N) flow on ``theory.shape`` (a theory or a ``TheoryConfig``
    with coupling ``N``) with the architecture ``spec``.

    Example:
        >>> from latticeflow.config import parse_config
        >>> cfg = parse_config('[theory]\\nname="sun"\\nN=2\\nL=4\\nbeta=2.0\\n[flow]\\nlayers=2\\n')
        >>> flow = build_sun_flow(cfg.theory, cfg.flow)
        >>> x, log_q = flow.sample(3)
        >>> x.shape, x.dtype, log_q.dtype
        (torch.Size([3, 2, 4, 4, 2, 2]), torch.complex64, torch.float32)
    """
    shape, n = tuple(theory.shape), int(theory.N)
    if isinstance(spec, FlowConfig):
        spec = SUN_ARCHITECTURE.resolve(spec, shape)
    group = SUNLoops(n, eigenbasis="eigenbasis" in spec.loops)
    traced = tuple(loop for loop in spec.loops if loop != "eigenbasis")
    channels = loop_channels(traced, group.channels_per_loop) + group.context_channels
    layers = []
    for mu, offset in gauge_mask_schedule(spec.layers):
        bijection = spec.kernel.make(n)
        net = ConvNet(2, channels, bijection.n_params, hidden=spec.hidden,
                      kernel_size=spec.kernel_size, activation=spec.activation)
        layers.append(GaugeEquivariantCoupling(bijection, net, mu, offset, traced, group))
    return Flow(HaarPrior((2, *shape, n, n)), layers)


SUN_ARCHITECTURE = register_architecture(FlowArchitecture(
    theory="sun", build=build_sun_flow, options=SUNOptions,
    bijections={"spectral": SpectralSplineKernel},
    check_lattice=lambda shape: masks_fit(shape, "SU(N)"), bijection_kind="spectral maps of the eigen-phases",
    doc="gauge-equivariant SU(N) couplings with spectral splines (`flows/sun_flow.py`, `flows/spectral.py`)"))
