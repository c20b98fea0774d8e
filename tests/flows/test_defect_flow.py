"""Tests of latticeflow/flows/defect_flow.py: the patch around the defect, patch-restricted
gauge-equivariant couplings (inverse, log-det against the autograd Jacobian, gauge
equivariance, nothing outside the patch moves, the cropped conditioner equals the whole
lattice's) and the cutting of a flow into the maps of a protocol.  Float64, fixed seeds,
random non-zero weights (a fresh conditioner is the identity and would pass trivially)."""

import itertools
import math

import pytest
import torch

from latticeflow.config import parse_config
from latticeflow.flows import build_flow
from latticeflow.flows.defect_flow import PatchCoupling, defect_maps, map_problem, patch_plaquettes
from latticeflow.theories.defect import defect_mask
from latticeflow.theories.u1 import gauge_transform

F64 = torch.float64


def random_flow(L, layers=8, seed=0):
    """A U(1) flow (plaquette + rectangle inputs, NCP) with random non-zero weights, float64."""
    cfg = parse_config(f'[theory]\nname = "u1"\nL = {L}\nbeta = 2.0\n[flow]\nlayers = {layers}\nhidden = [4]\n'
                       'bijection = "ncp"\ncomponents = 2\nloops = ["plaquette", "rectangle"]\n')
    torch.manual_seed(seed)
    flow = build_flow(cfg.theory, cfg.flow).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.4 * torch.randn_like(p))
    return flow


def links(batch, L, seed=1):
    return 2 * math.pi * torch.rand(batch, 2, L, L, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_the_patch_is_the_chebyshev_neighbourhood_of_the_defect():
    shape, length = (8, 12), 5
    defect = defect_mask(shape, length)
    for p in (0, 1, 2):
        want = torch.zeros(shape, dtype=torch.bool)
        for x0, x1 in itertools.product(range(8), range(12)):
            dist = min(max(min((x0 - a) % 8, (a - x0) % 8), min((x1 - b) % 12, (b - x1) % 12))
                       for a, b in torch.nonzero(defect).tolist())
            want[x0, x1] = dist <= p
        assert torch.equal(patch_plaquettes(defect, p), want), p
    assert int(patch_plaquettes(defect, 1).sum()) == 3 * (length + 2)


@pytest.mark.parametrize("patch", [0, 1])
def test_inverse_undoes_forward_and_nothing_outside_the_patch_moves(patch):
    L, flow = 8, random_flow(8)
    region = patch_plaquettes(defect_mask((L, L), 3), patch)
    x = links(3, L)
    moved_somewhere = False
    for layer in flow.layers:
        pc = PatchCoupling(layer, region)
        y, ld = pc.forward(x)
        back, ld_inv = pc.inverse(y)
        assert (torch.cos(back - x) - 1).abs().max() < 1e-10 and (ld + ld_inv).abs().max() < 1e-8
        allowed = torch.zeros(2, L, L, dtype=torch.bool)
        allowed[layer.mu] = pc.active
        changed = torch.cos(y - x) < 1 - 1e-12
        assert not changed[:, ~allowed].any()
        # an active link is one of a plaquette in the patch: the active or the passive one
        nu = 1 - layer.mu
        assert not (pc.active & ~(region | torch.roll(region, 1, nu))).any()
        moved_somewhere |= bool(changed.any())
    assert moved_somewhere


def test_the_log_det_is_that_of_the_autograd_jacobian():
    """The whole map (8 patch couplings, both directions, every offset) on a 4x4 lattice."""
    L, flow = 4, random_flow(4)
    (f,) = defect_maps(flow, defect_mask((L, L), 2), steps=1, maps=1, patch=0)
    x = links(1, L, seed=2)
    jac = torch.autograd.functional.jacobian(lambda v: f(v.view(1, 2, L, L))[0].view(-1), x.view(-1))
    sign, logabsdet = torch.linalg.slogdet(jac)
    with torch.no_grad():
        y, log_det = f(x)
    assert sign != 0 and not torch.allclose(y, x)
    assert abs(float(log_det[0]) - float(logabsdet)) < 1e-9, (float(log_det[0]), float(logabsdet))
    assert abs(float(log_det[0])) > 1e-3  # a map that changes volumes: the comparison means something


def test_maps_are_gauge_equivariant():
    L, flow = 8, random_flow(8)
    (f,) = defect_maps(flow, defect_mask((L, L), 4), steps=1, maps=1, patch=1)
    x = links(2, L, seed=3)
    alpha = 2 * math.pi * torch.rand(2, L, L, generator=torch.Generator().manual_seed(4), dtype=F64)
    y, log_det = f(x)
    gy, g_log_det = f(gauge_transform(x, alpha))
    assert (torch.cos(gy - gauge_transform(y, alpha)) - 1).abs().max() < 1e-10
    assert torch.allclose(log_det, g_log_det, atol=1e-10)
    plain, _ = f(x[:, :, :, torch.arange(L - 1, -1, -1)])  # not a symmetry: the test can fail
    assert not torch.allclose(torch.cos(plain), torch.cos(y[:, :, :, torch.arange(L - 1, -1, -1)]))


def test_a_cropped_conditioner_gives_the_whole_lattice_coupling_on_the_patch():
    """On L = 16 the conditioner runs on a window around the patch (also across the periodic
    boundary); on the patch's active links the layer moves them exactly as the whole layer."""
    L, flow = 16, random_flow(16)
    region = patch_plaquettes(defect_mask((L, L), 5), 1)
    x = links(2, L, seed=5)
    wrapped = 0
    for layer in flow.layers:
        pc = PatchCoupling(layer, region)
        assert pc.rows is not None and pc.cols is not None  # a window, not the whole lattice
        wrapped += {0, L - 1} <= set(pc.rows.tolist())
        y, _ = pc.forward(x)
        whole, _ = layer(x)
        mask = torch.zeros(2, L, L, dtype=torch.bool)
        mask[layer.mu] = pc.active
        assert (torch.cos(y - whole)[:, mask] - 1).abs().max() < 1e-12
    assert wrapped >= 4


def test_a_flow_is_cut_into_maps_for_the_protocol_steps():
    flow = random_flow(8, layers=8)
    maps = defect_maps(flow, defect_mask((8, 8), 2), steps=6, maps=2, patch=0)
    assert len(maps) == 6 and maps[0] is maps[2] and maps[3] is maps[5] and maps[2] is not maps[3]
    assert len(defect_maps(flow, defect_mask((8, 8), 2), steps=3, maps=1)) == 3
    assert "at most one map per step" in map_problem(flow, 4, 3)
    assert "do not split into 3 maps" in map_problem(flow, 3, 6)
    assert "U(1) gauge-equivariant couplings" in map_problem(torch.nn.Linear(2, 2), 1, 1)
    with pytest.raises(ValueError, match="do not split"):
        defect_maps(flow, defect_mask((8, 8), 2), steps=6, maps=3)
