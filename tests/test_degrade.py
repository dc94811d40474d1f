"""Degradation: sizes, interpolations and libraries, and every VLR policy and its factory."""

from dataclasses import replace

import cv2
import numpy as np
import PIL
import pytest
from PIL import Image

from vlrface.degrade import (
    BINARYFACENET_SIZES,
    CrossResolutionPolicy,
    CurriculumPolicy,
    MassoliPolicy,
    VLRPolicy,
    curriculum_probability,
    degrade,
    library,
    policy_from_config,
)


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


# --- interpolations, libraries, Massoli, curriculum, cross-resolution batches, the factory ---

NAMES = ("area", "bicubic", "bilinear", "nearest", "bicubic_aa", "bilinear_aa")
NOISE = np.random.default_rng(7).integers(0, 256, (112, 112, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", NAMES)
def test_every_interpolation_round_trips_shapes(name):
    for img in (NOISE, NOISE[..., 0], NOISE[..., :1], np.dstack([NOISE, NOISE[..., :1]])):
        for r in BINARYFACENET_SIZES:
            out = degrade(img, r, name, name)
            assert out.shape == img.shape and out.dtype == np.uint8
            assert degrade(img, r, name, None).shape[:2] == (r, r)


def test_antialiased_variants_average_while_opencv_aliases():
    # 112 -> 7 px: an antialiased filter averages ~16x16 pixels of noise, cv2's bicubic and
    # bilinear only read a 4x4 / 2x2 neighbourhood, so their output keeps most of the variance
    stds = {n: degrade(NOISE, 7, n, None).astype(float).std() for n in NAMES}
    assert stds["bicubic"] > 3 * stds["bicubic_aa"] and stds["bilinear"] > 3 * stds["bilinear_aa"]
    assert stds["area"] < 15 and stds["bicubic_aa"] < 15


def test_pillow_variants_are_pillow_and_named_so():
    small = degrade(NOISE, 14, "bicubic_aa", None)
    ref = np.asarray(Image.fromarray(NOISE).resize((14, 14), Image.Resampling.BICUBIC))
    assert np.array_equal(small, ref)
    ref2 = np.asarray(Image.fromarray(NOISE).resize((14, 14), Image.Resampling.BILINEAR))
    assert np.array_equal(degrade(NOISE, 14, "bilinear_aa", None), ref2)
    assert np.array_equal(
        degrade(NOISE, 14, "bicubic", None),
        cv2.resize(NOISE, (14, 14), interpolation=cv2.INTER_CUBIC),
    )
    assert library("area") == f"opencv-{cv2.__version__}"
    assert library("bicubic_aa") == f"pillow-{PIL.__version__}"
    assert library("area", "bicubic_aa") == f"opencv-{cv2.__version__}+pillow-{PIL.__version__}"
    knoche = VLRPolicy(1.0, (14,), "bicubic_aa", "bicubic_aa")
    assert knoche.policy_dict()["library"] == f"pillow-{PIL.__version__}"
    with pytest.raises(ValueError, match="uint8"):
        degrade(NOISE.astype(np.float32), 14, "bicubic_aa")


def test_keep_aspect_sets_the_shortest_side():
    for shape, small in [((60, 120), (16, 32)), ((120, 60), (32, 16)), ((50, 75), (16, 24))]:
        img = np.zeros((*shape, 3), np.uint8)
        assert degrade(img, 16, "bilinear_aa", None, keep_aspect=True).shape == (*small, 3)
    img = np.zeros((50, 75, 3), np.uint8)
    assert degrade(img, 8, up=None, keep_aspect=True).shape == (8, 12, 3)  # int(8 * 1.5)


def test_massoli_range_variants_and_skip_rule():
    img = np.random.default_rng(2).integers(0, 256, (300, 260, 3), dtype=np.uint8)
    anchor, paper = MassoliPolicy(probability=1.0), MassoliPolicy(1.0, exponents=(3, 9))
    seen = {anchor.apply(img, np.random.default_rng(s))[1] for s in range(60)}
    assert seen == {8, 16, 32, 64, 128}
    assert {paper.apply(img, np.random.default_rng(s))[1] for s in range(60)} == {
        8, 16, 32, 64, 128, 256
    }  # fmt: skip
    out, r = MassoliPolicy(1.0, exponents=(5, 6)).apply(img, np.random.default_rng(0))
    small = degrade(img, 32, "bilinear_aa", None, keep_aspect=True)
    assert r == 32 and small.shape == (36, 32, 3)  # aspect kept: int(32 * 300 / 260)
    assert np.array_equal(out, degrade(img, 32, "bilinear_aa", "bilinear_aa", keep_aspect=True))
    # skipped where 2^k >= the shortest side: the image comes back untouched
    thin, rs = img[:, :20], set()
    for s in range(30):
        out, r = anchor.apply(thin, np.random.default_rng(s))
        assert r in (8, 16) or (r == 0 and np.array_equal(out, thin))
        rs.add(r)
    assert rs == {0, 8, 16}
    assert MassoliPolicy(0.0).apply(img, np.random.default_rng(0))[1] == 0
    with pytest.raises(ValueError, match="exponents"):
        MassoliPolicy(exponents=(5, 5))


def test_massoli_probability_is_the_first_draw_and_deterministic():
    img = NOISE
    half = MassoliPolicy(probability=0.5, exponents=(3, 6))
    draws = [half.apply(img, np.random.default_rng(s))[1] for s in range(200)]
    assert 60 < sum(d > 0 for d in draws) < 140
    assert draws == [half.apply(img, np.random.default_rng(s))[1] for s in range(200)]
    u = np.random.default_rng(11)
    first, second = u.uniform(), u.uniform()
    _, r = half.apply(img, np.random.default_rng(11))
    assert r == (2 ** int(3 + 3 * second) if first < 0.5 else 0)


def test_curriculum_probability_values():
    assert curriculum_probability(0, 1000) == 0.0
    assert curriculum_probability(500, 1000) == 0.5
    assert curriculum_probability(1000, 1000) == 1.0
    assert curriculum_probability(2000, 1000) == 1.0  # clamped past the end
    assert curriculum_probability(250, 1000, start=0.2, end=0.6) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="total_steps"):
        curriculum_probability(0, 0)


def test_curriculum_policy_is_pure_and_uses_the_base():
    base = MassoliPolicy(exponents=(3, 4))
    cur = CurriculumPolicy(total_steps=100, base=base)
    mid = cur.at(50)
    assert cur.step == 0 and mid.step == 50 and mid.probability == 0.5
    assert mid.current() == replace(base, probability=0.5)
    assert cur.apply(NOISE, np.random.default_rng(0))[1] == 0  # p = 0 at the start
    assert all(cur.at(100).apply(NOISE, np.random.default_rng(s))[1] == 8 for s in range(20))
    d = mid.policy_dict()
    assert d["kind"] == "curriculum" and d["probability"] == 0.5 and d["step"] == 50
    assert d["base"]["kind"] == "massoli" and "probability" not in d["base"]
    assert d["library"].startswith("pillow-")


@pytest.mark.parametrize("share", [0.0, 0.25, 0.3, 0.5, 1.0])
def test_crossres_exact_share_and_determinism(share):
    pol = CrossResolutionPolicy(share=share)
    for batch in range(1, 19):
        for step in range(3):
            mask = pol.lr_mask(batch, seed=5, epoch=1, step=step)
            assert mask.dtype == bool and mask.sum() == round(share * batch)
            assert np.array_equal(mask, pol.lr_mask(batch, seed=5, epoch=1, step=step))
    # the positions vary with each of seed, epoch and step
    n = 1 if share in (0.0, 1.0) else 5
    assert len({pol.lr_mask(16, 5, 1, s).tobytes() for s in range(6)}) >= n
    assert len({pol.lr_mask(16, 5, e, 0).tobytes() for e in range(6)}) >= n
    assert len({pol.lr_mask(16, s, 1, 0).tobytes() for s in range(6)}) >= n


def test_crossres_apply_batch_degrades_exactly_the_masked_samples():
    pol = CrossResolutionPolicy(share=0.5, base=VLRPolicy(1.0, (7, 14), "area", "area"))
    batch = np.random.default_rng(4).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    out, rs = pol.apply_batch(batch, seed=1, epoch=2, step=3)
    mask = pol.lr_mask(6, 1, 2, 3)
    assert out.shape == batch.shape and (rs > 0).tolist() == mask.tolist() and mask.sum() == 3
    assert all(np.array_equal(out[i], batch[i]) for i in np.flatnonzero(~mask))
    assert all(np.array_equal(out[i], degrade(batch[i], rs[i])) for i in np.flatnonzero(mask))
    again, rs2 = pol.apply_batch(list(batch), seed=1, epoch=2, step=3)
    assert isinstance(again, list) and np.array_equal(np.stack(again), out) and (rs2 == rs).all()
    d = CrossResolutionPolicy().policy_dict()
    assert d["kind"] == "crossres" and d["share"] == 0.5
    assert d["base"]["sizes"] == list(BINARYFACENET_SIZES) and d["base"]["down"] == "bicubic_aa"


def test_policy_dicts_round_trip_through_the_factory():
    policies = [
        VLRPolicy(0.3, (7, 21), "bicubic", "area"),
        MassoliPolicy(0.7, (3, 9)),
        CurriculumPolicy(total_steps=10, step=4, base=MassoliPolicy(exponents=(3, 6))),
        CrossResolutionPolicy(share=0.25, base=VLRPolicy(1.0, (14,), "bicubic_aa", "bicubic")),
    ]
    for pol in policies:
        d = pol.policy_dict()
        assert policy_from_config(d).policy_dict() == d
    assert VLRPolicy().policy_dict() == {
        "kind": "fixed", "probability": 0.5, "sizes": [7, 14, 28, 56], "down": "area",
        "up": "area", "library": f"opencv-{cv2.__version__}",
    }  # fmt: skip
    assert policy_from_config({"kind": "fixed"}) == VLRPolicy()
    assert policy_from_config({"kind": "massoli", "exponents": [3, 9]}) == MassoliPolicy(
        exponents=(3, 9)
    )
    cr = policy_from_config({"kind": "crossres", "base": {"kind": "massoli"}})
    assert cr.base == MassoliPolicy(probability=1.0)


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"kind": "fixed", "sise": [7]}, "'sise'"),
        ({"kind": "massoli", "sizes": [7]}, "'sizes'"),
        ({"kind": "crossres", "share": 0.5, "seed": 1}, "'seed'"),
        (
            {"kind": "curriculum", "total_steps": 9, "base": {"kind": "fixed", "probability": 1}},
            "'probability'",
        ),  # fmt: skip
        ({"kind": "crossres", "base": {"kind": "curriculum"}}, "kind must be one of"),
        ({"kind": "bicubic"}, "kind must be one of"),
        ({"sizes": [7]}, "kind must be one of"),
        ({"kind": "curriculum"}, "total_steps"),
        ({"kind": "curriculum", "total_steps": 10, "step": 5, "probability": 0.9}, "disagrees"),
        ({"kind": "fixed", "down": "lanczos"}, "interpolation 'lanczos'"),
        ({"kind": "crossres", "share": 1.5}, "probability"),
    ],
)
def test_factory_errors_name_the_problem(cfg, message):
    with pytest.raises(ValueError, match=message):
        policy_from_config(cfg)
