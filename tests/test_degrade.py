"""Degradation: sizes, interpolation, the random VLR policy."""

import numpy as np
import pytest

from vlrface.degrade import VLRPolicy, degrade


def test_down_and_back_keeps_size_and_loses_detail():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    out = degrade(img, 7)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out.std() < img.std() / 3  # high frequencies are gone
    assert degrade(img, 7, up=None).shape == (7, 7, 3)


def test_area_downsampling_averages_blocks():
    img = np.zeros((112, 112), np.uint8)
    img[:, 56:] = 200
    small = degrade(img, 2, down="area", up=None)
    assert small.tolist() == [[0, 200], [0, 200]]


def test_full_resolution_is_a_copy():
    img = np.full((112, 112, 3), 9, np.uint8)
    out = degrade(img, 112)
    assert np.array_equal(out, img) and out is not img


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="interpolation 'lanczos'"):
        degrade(np.zeros((8, 8), np.uint8), 4, down="lanczos")
    with pytest.raises(ValueError, match="probability"):
        VLRPolicy(probability=1.5)


def test_policy_probability_and_determinism():
    img = np.random.default_rng(1).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    never, always = VLRPolicy(probability=0.0), VLRPolicy(probability=1.0, sizes=(14,))
    assert never.apply(img, np.random.default_rng(0))[1] == 0
    out, r = always.apply(img, np.random.default_rng(0))
    assert r == 14 and np.array_equal(out, degrade(img, 14))
    half = VLRPolicy(probability=0.5)
    draws = [half.apply(img, np.random.default_rng(s))[1] for s in range(200)]
    assert 60 < sum(d > 0 for d in draws) < 140
    assert draws == [half.apply(img, np.random.default_rng(s))[1] for s in range(200)]
    assert half.policy_dict()["library"].startswith("opencv-")
