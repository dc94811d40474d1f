"""SE-ResNet-50: the VGGFace2 model [Cao et al.] that the cross-resolution papers fine-tune.

"Cross-Resolution Learning for Face Recognition" (Massoli et al., Sec. 5) starts from "the SeNet-50
architecture from [8]" (VGGFace2), a ResNet-50 [He et al.] with Squeeze-and-Excitation blocks
[Hu et al.]; the descriptor is the 2048-d output of the global average pool before the classifier
(SqueezeFacePoseNet paper, Sec. 4: "the output of the layer adjacent to the classification layer,
with dimensionality 2048"), for 224x224 inputs.

Layout, as in the VGGFace2 Caffe model: a 7x7/2 ``conv1`` with BN and ReLU, a 3x3/2 max-pool
(ceil mode), bottleneck stages of 3-4-6-3 blocks (widths 64-128-256-512, expansion 4), the stride
of a stage on its first 1x1 convolution, a 1x1 projection + BN shortcut where the shape changes,
and in every block an SE gate (GAP, 1x1 conv to C/16 with bias, ReLU, 1x1 conv back with bias,
sigmoid) scaling the residual branch before the addition. Convolutions have no bias (BN follows).
With a 1000-class head this is 28,088,024 parameters, the standard SE-ResNet-50 (Hu et al.,
Table 2: 28.1 M; SqueezeFacePoseNet paper, Table 1: SENet50ft 28.1 M).

``embedding`` adds a bias-free linear projection of the 2048-d pool output plus batch
normalisation (the low-dimensional descriptor of VGGFace2's 256-D models); ``num_classes`` a
fully connected classifier for training.
"""

from __future__ import annotations

import torch
from torch import nn

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride)
EXPANSION = 4
SE_REDUCTION = 16
INPUT_SIZE = 224
DESCRIPTOR = 2048


class SEGate(nn.Module):
    """Squeeze-and-Excitation [Hu et al. §3]: channel weights from the globally pooled map."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION):
        super().__init__()
        self.down = nn.Conv2d(channels, channels // reduction, 1)
        self.up = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.mean(x, dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.up(torch.relu(self.down(w))))


class SEBottleneck(nn.Module):
    """1x1 (stride) -> 3x3 -> 1x1 (x4), BN after each, SE on the branch, then the shortcut."""

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * EXPANSION
        self.branch = nn.Sequential(
            nn.Conv2d(cin, width, 1, stride=stride, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            SEGate(cout),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.branch(x) + self.shortcut(x))


class SEResNet50(nn.Module):
    """``forward`` gives the descriptor (2048-d, or ``embedding``-d); ``logits`` the classifier."""

    def __init__(self, embedding: int | None = None, num_classes: int | None = None):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
        ]
        cin = 64
        for width, blocks, stride in STAGES:
            for b in range(blocks):
                layers.append(SEBottleneck(cin, width, stride if b == 0 else 1))
                cin = width * EXPANSION
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.project = nn.Identity()
        dim = cin
        if embedding:
            self.project = nn.Sequential(
                nn.Linear(cin, embedding, bias=False), nn.BatchNorm1d(embedding)
            )
            dim = embedding
        self.head = nn.Linear(dim, num_classes) if num_classes else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise ValueError("this SEResNet50 was built without a head (num_classes)")
        return self.head(self.forward(x))
