"""The PyTorch track's models: parameter counts vs the papers, shapes, registry, preprocessing.

Counting convention (``vlrface.models.torch.count_params``): learnable weights and biases, BN
running statistics excluded; for SqueezeFacePoseNet also the training head (BN + FC, whose size
depends on the number of classes), as the SqueezeFacePoseNet paper's Table 1 counts.
"""

import zlib

import numpy as np
import pytest
import torch

from vlrface.embedders import TorchEmbedder, embed_images
from vlrface.errors import ConfigError
from vlrface.models import zoo
from vlrface.models.torch import (
    PAPER_TABLE1,
    TORCH_ZOO,
    build_torch,
    count_params,
    float32_size_mb,
    preprocessing_of,
)
from vlrface.models.torch.squeezefaceposenet import feature_side

SQUEEZE = [n for n in PAPER_TABLE1 if n.startswith("squeezefaceposenet")]
# Exact counts of this implementation (the arithmetic is in the models' docstrings).
EXACT = {
    "squeezefaceposenet": 1_235_496,
    "squeezefaceposenet_gdc": 1_404_496,
    "squeezefaceposenet_dwc": 694_056,
    "squeezefaceposenet_dwc_gdc": 863_056,
}


@pytest.mark.parametrize("name", SQUEEZE)
def test_squeezefaceposenet_params_match_table1(name):
    model = build_torch(name, num_classes=8631)
    params = count_params(model)
    assert params == EXACT[name]
    # Table 1 prints millions to 2 decimals (1.4 M for +GDC is 1.40 M).
    assert round(params / 1e6, 2) == PAPER_TABLE1[name][0]
    # The head is left out of the table's count: it grows with the classes, the table does not.
    assert count_params(model, include_head=True) == params + 2 * 1000 + 1000 * 8631 + 8631


@pytest.mark.parametrize("name", SQUEEZE)
def test_squeezefaceposenet_sizes_match_table1(name):
    """Table 1's MB are not float32 ``params * 4`` (1.24 M -> 4.71 MiB / 4.94 MB, printed 4.41):
    they are proportional to the parameters at one rate, 4.41 MB per 1,235,496 parameters
    (3.57 bytes per parameter), which reproduces every row at the printed precision."""
    base = EXACT["squeezefaceposenet"]
    printed = PAPER_TABLE1[name][1]
    decimals = len(str(printed).split(".")[1])
    assert round(4.41 * EXACT[name] / base, decimals) == printed
    assert float32_size_mb(EXACT["squeezefaceposenet"]) == pytest.approx(4.713, abs=1e-3)


@pytest.mark.parametrize("name", SQUEEZE)
def test_table1_sizes_are_close_to_compressed_float32(name):
    """Consistency, not proof: 3.57 bytes/parameter is what zlib makes of float32 weights (the
    paper trained in MATLAB, whose v7 .mat files are zlib-compressed): within 5 % in MiB."""
    torch.manual_seed(0)
    model = build_torch(name)
    raw = b"".join(p.detach().numpy().astype(np.float32).tobytes() for p in model.parameters())
    mib = len(zlib.compress(raw, 6)) / 2**20
    assert mib == pytest.approx(PAPER_TABLE1[name][1], rel=0.05)


def test_se_resnet50_params_are_the_standard_count():
    """28,088,024 with a 1000-class head: torchvision's ResNet-50 (25,557,032) plus the SE gates
    (2 C^2/16 + C/16 + C per block: 2,530,992); Hu et al. Table 2 / SENet50ft in Table 1: 28.1 M."""
    model = build_torch("se_resnet50", num_classes=1000)
    assert count_params(model, include_head=True) == 28_088_024
    assert count_params(model) == 28_088_024 - (2048 * 1000 + 1000)
    assert round(count_params(model, include_head=True) / 1e6, 1) == PAPER_TABLE1["se_resnet50"][0]


def test_se_resnet50_shapes():
    model = build_torch("se_resnet50", num_classes=10).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert model(x).shape == (2, 2048)
        assert model.logits(x).shape == (2, 10)
    small = build_torch("se_resnet50", embedding=256).eval()
    with torch.no_grad():
        assert small(x[:1]).shape == (1, 256)
    with pytest.raises(ValueError, match="head"):
        small.logits(x[:1])


@pytest.mark.parametrize("name", TORCH_ZOO[1:])
def test_squeezefaceposenet_shapes(name):
    model = build_torch(name, num_classes=7).eval()
    x = torch.randn(2, 3, 113, 113)
    with torch.no_grad():
        assert model(x).shape == (2, 1000)  # the paper: the GAP descriptor has 1000 elements
        assert model.logits(x).shape == (2, 7)
        assert model.features(x).shape == (2, 1000, 13, 13)  # Table 2: conv10 13^2 x 1000
    assert feature_side(113) == 13
    with torch.no_grad():
        assert build_torch(name, embedding=128).eval()(x).shape == (2, 128)


def test_table2_feature_map_sizes():
    """Table 2: 113^2x64 -> pool 56^2 -> fire2-4 -> pool 27^2 -> fire5-8 -> pool 13^2 x 512."""
    model = build_torch("squeezefaceposenet").eval()
    shapes = []
    x = torch.zeros(1, 3, 113, 113)
    with torch.no_grad():
        for layer in model.features:
            x = layer(x)
            if isinstance(layer, torch.nn.MaxPool2d) or type(layer).__name__ == "Fire":
                shapes.append(tuple(x.shape[1:]))
    assert shapes == [
        (64, 56, 56),
        (128, 56, 56),
        (128, 56, 56),
        (256, 56, 56),
        (256, 27, 27),
        (256, 27, 27),
        (384, 27, 27),
        (384, 27, 27),
        (512, 27, 27),
        (512, 13, 13),
        (512, 13, 13),
    ]


def test_registry_and_preprocessing():
    with pytest.raises(ConfigError, match="unknown model 'resnet18'; known: se_resnet50"):
        build_torch("resnet18")
    for name in TORCH_ZOO:  # the zoo's input side is the preprocessing's
        assert zoo.entry(name).input_size == preprocessing_of(name).input_size
    se = preprocessing_of("se_resnet50")
    assert (se.input_size, se.channel_order, se.resize_shorter, se.center_crop) == (
        224,
        "BGR",
        256,
        224,
    )
    assert se.mean[::-1] == (91.4953, 103.8827, 131.0912)  # the BGR mean (docs/datasets.md)
    sq = preprocessing_of("squeezefaceposenet_dwc")
    assert (sq.input_size, sq.channel_order) == (113, "RGB")
    faces = np.full((2, 112, 112, 3), 200, np.uint8)
    assert sq.geometry(faces).shape == (2, 113, 113, 3)
    assert se.geometry(faces).shape == (2, 224, 224, 3)
    x = se.normalize(se.geometry(faces))
    assert x.dtype == np.float32 and np.allclose(x[0, 0, 0], 200 - np.array(se.mean))
    assert type(se).from_dict(se.to_dict()) == se


def test_torch_embedder_feeds_bgr_models_bgr():
    torch.manual_seed(0)
    model = build_torch("se_resnet50", num_classes=3)
    model.train()
    x = np.random.default_rng(0).normal(0, 50, (1, 224, 224, 3)).astype(np.float32)
    got = TorchEmbedder(model)(x)
    assert model.training  # the embedder restores the mode it found
    model.eval()
    with torch.no_grad():
        want = model(torch.from_numpy(np.ascontiguousarray(x[..., ::-1].transpose(0, 3, 1, 2))))
    assert got.shape == (1, 2048)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    e = embed_images(TorchEmbedder(model), x)
    assert e.shape == (1, 2048) and np.allclose(np.linalg.norm(e, axis=1), 1.0)
