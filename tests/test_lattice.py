"""Lattice geometry: shifts, checkerboards and the gauge-layer masks."""

import pytest
import torch

from latticeflow.errors import LatticeflowError
from latticeflow.lattice import (Lattice, checkerboard, gauge_mask_schedule, link_stripes_2d,
                                 plaquette_masks_2d, shift)


def test_shift_is_forward_neighbour():
    x = torch.arange(12.0).reshape(1, 3, 4)
    assert shift(x, 0)[0, 0, 1] == x[0, 1, 1]
    assert shift(x, 1)[0, 2, 3] == x[0, 2, 0]  # periodic wrap
    assert shift(x, 1, -1)[0, 0, 0] == x[0, 0, 3]


def test_lattice_volume_and_validation():
    assert Lattice((4, 6)).volume == 24
    with pytest.raises(LatticeflowError):
        Lattice((1, 4))


def test_checkerboard_partitions_and_alternates():
    even, odd = checkerboard((4, 6), 0), checkerboard((4, 6), 1)
    assert torch.all(even ^ odd)
    assert even.sum() == 12
    assert torch.all(torch.roll(even, 1, 0) == odd)
    with pytest.raises(LatticeflowError):
        checkerboard((3, 4))


@pytest.mark.parametrize("mu", [0, 1])
@pytest.mark.parametrize("offset", range(4))
def test_plaquette_masks_partition(mu, offset):
    m = plaquette_masks_2d((8, 8), mu, offset)
    total = m["active"].int() + m["passive"].int() + m["frozen"].int()
    assert torch.all(total == 1)
    assert m["active"].sum() == 16 and m["frozen"].sum() == 32


def test_link_schedule_covers_every_link_once_per_8_layers():
    count = torch.zeros(2, 8, 8, dtype=torch.int64)
    for mu, offset in gauge_mask_schedule(8):
        count += link_stripes_2d((8, 8), mu, offset).long()
    assert torch.all(count == 1)


def test_gauge_masks_need_L_divisible_by_4():
    with pytest.raises(LatticeflowError, match="divisible by 4"):
        link_stripes_2d((6, 6), 0, 0)
