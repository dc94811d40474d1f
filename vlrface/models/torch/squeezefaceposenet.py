"""SqueezeFacePoseNet (Alonso-Fernandez et al.; docs/papers.md) and its variants.

SqueezeNet [Iandola et al.] adapted to 113x113 faces (§3, Table 2): a 3x3/64 stride-1 ``conv1``,
eight fire modules with max-pools (3x3, stride 2, floor) after ``conv1``, ``fire4`` and
``fire8``, 50 % dropout, a 1x1/1000 ``conv10``, ReLU after every convolution, then global average
pooling. The 1000-d GAP output is the face descriptor (§4: "features are extracted from the GAP
layer, having dimensionality 1000"). The training head of §3 follows: batch normalisation, 50 %
dropout and a fully connected layer with one output per training class.

Variants (§3, "To achieve an even smaller model ..."; Table 1):

* ``dwc``: every fire module's 3x3 expand convolution becomes a depth-wise 3x3 convolution on
  the squeeze output (``groups = squeeze channels``, channel multiplier ``expand / squeeze``,
  bias kept). The squeeze 1x1 in front of it is the point-wise half of the separable pair. This
  reading gives 0.694 M parameters, Table 1's 0.69 M; a depth-wise + extra point-wise pair would
  give 0.747 M. ``conv1`` (3 input channels, 64 filters) stays a standard convolution.
* ``gdc``: GAP is replaced by a global depth-wise convolution (MobileFaceNets' GDC [4]): one
  13x13 filter per ``conv10`` channel, linear, no bias. 1.404 M parameters (Table 1: 1.4 M).

Parameter counts (``vlrface.models.torch.count_params``) cover the descriptor network only,
``conv1`` to GAP/GDC, weights and biases; the head (BN + FC, whose size depends on the number of
training classes) is excluded, as Table 1 does: it lists 1.24 M whatever the training set.
Table 1's MB column is not ``params * 4`` bytes; it is proportional to these counts (4.41 MB
per 1,235,496 parameters reproduces all four rows; see ``PAPER_TABLE1``). Initialisation is
SqueezeNet's (He-uniform, zero biases); the paper starts from ImageNet weights instead (§4).
"""

from __future__ import annotations

import torch
from torch import nn

# (squeeze, expand 1x1, expand 3x3) of fire2..fire9 (Table 2) and where the max-pools sit.
FIRES = (
    (16, 64, 64),
    (16, 64, 64),
    (32, 128, 128),
    (32, 128, 128),
    (48, 192, 192),
    (48, 192, 192),
    (64, 256, 256),
    (64, 256, 256),
)
POOL_AFTER = ("conv1", "fire4", "fire8")
INPUT_SIZE = 113
DESCRIPTOR = 1000


class Fire(nn.Module):
    """A fire module (§3, Fig. 1): 1x1 squeeze, then 1x1 and 3x3 expands, concatenated."""

    def __init__(self, cin: int, squeeze: int, e1: int, e3: int, depthwise: bool = False):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        groups = squeeze if depthwise else 1
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1, groups=groups)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.relu(self.squeeze(x))
        return torch.cat([self.relu(self.expand1x1(s)), self.relu(self.expand3x3(s))], 1)


class SqueezeFacePoseNet(nn.Module):
    """``forward`` gives the ``(N, embedding)`` descriptor; ``logits`` the training head's output.

    ``embedding`` is the width of ``conv10`` (the paper's 1000); ``num_classes`` adds the §3
    head (BN, dropout 0.5, FC). ``dwc``/``gdc`` select the Table 1 variants (module docstring).
    """

    def __init__(
        self,
        dwc: bool = False,
        gdc: bool = False,
        embedding: int = DESCRIPTOR,
        num_classes: int | None = None,
        input_size: int = INPUT_SIZE,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.MaxPool2d(3, 2))
        cin = 64
        for i, (s, e1, e3) in enumerate(FIRES, start=2):
            layers.append(Fire(cin, s, e1, e3, depthwise=dwc))
            cin = e1 + e3
            if f"fire{i}" in POOL_AFTER:
                layers.append(nn.MaxPool2d(3, 2))
        layers += [nn.Dropout(0.5), nn.Conv2d(cin, embedding, 1), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        if gdc:
            side = feature_side(input_size)
            self.pool = nn.Sequential(
                nn.Conv2d(embedding, embedding, side, groups=embedding, bias=False), nn.Flatten()
            )
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        for m in self.modules():  # SqueezeNet's own init: He-uniform convs, zero biases
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.head = None
        if num_classes:
            self.head = nn.Sequential(
                nn.BatchNorm1d(embedding), nn.Dropout(0.5), nn.Linear(embedding, num_classes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise ValueError("this SqueezeFacePoseNet was built without a head (num_classes)")
        return self.head(self.forward(x))


def feature_side(input_size: int) -> int:
    """Side of the ``conv10`` map: three floor-mode 3x3/2 pools (113 -> 56 -> 27 -> 13)."""
    side = input_size
    for _ in POOL_AFTER:
        side = (side - 3) // 2 + 1
    return side
