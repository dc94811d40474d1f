"""The PyTorch track: face backbones by name, each with its preprocessing as data.

``build_torch(name)`` returns a freshly initialised ``nn.Module`` whose ``forward`` maps an NCHW
float batch (in the model's channel order) to ``(N, D)`` descriptors, with its ``Preprocessing``
attached as ``model.preprocessing``. Images in vlrface are RGB; ``Preprocessing.geometry`` and
``Preprocessing.normalize`` turn uint8 RGB faces into the normalised NHWC RGB batch that every
``Embedder`` takes, and ``TorchEmbedder``/``ONNXEmbedder`` reorder channels for BGR models.

Parameter counts (``count_params``) are the learnable weights and biases, BN running statistics
excluded; ``include_head=False`` also leaves out the training classifier, the convention of
the SqueezeFacePoseNet paper's Table 1 (``vlrface.models.torch.squeezefaceposenet``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from vlrface.models import zoo

TORCH_ZOO = zoo.names("torch")

# SqueezeFacePoseNet paper, Table 1 (bottom): parameters (M) and model size (MB) as printed.
# The sizes are not float32 params * 4 (1,235,496 -> 4.71 MiB / 4.94 MB); all four SqueezeFacePose-
# Net rows are 4.41 MB * params / 1,235,496 (3.57 bytes per parameter), about what zlib makes of
# float32 weights (MATLAB .mat files are zlib-compressed). SENet50ft's 155 MB is a MatConvNet file.
PAPER_TABLE1 = {
    "squeezefaceposenet": (1.24, 4.41),
    "squeezefaceposenet_gdc": (1.4, 5.01),
    "squeezefaceposenet_dwc": (0.69, 2.5),
    "squeezefaceposenet_dwc_gdc": (0.86, 3.1),
    "se_resnet50": (28.1, 155.0),
}


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its faces: geometry, channel order and pixel normalisation.

    ``mean``/``std`` are per channel in **RGB** order on 0..255 pixels; ``channel_order`` is the
    order the network itself takes (the embedders swap RGB to BGR where it says so).
    ``resize_shorter``/``center_crop`` (if set) come before the final resize to ``input_size``.
    """

    input_size: int
    channel_order: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize_shorter: int | None = None
    center_crop: int | None = None
    source: str = ""

    def geometry(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` -> ``(N, input_size, input_size, 3)``: shorter side to
        ``resize_shorter``, centre ``center_crop``, then resize to ``input_size`` (bilinear)."""
        import cv2

        out = []
        for img in images:
            if self.resize_shorter:
                h, w = img.shape[:2]
                k = self.resize_shorter / min(h, w)
                img = cv2.resize(img, (round(w * k), round(h * k)), interpolation=cv2.INTER_LINEAR)
            if self.center_crop:
                h, w = img.shape[:2]
                t, left = (h - self.center_crop) // 2, (w - self.center_crop) // 2
                img = img[t : t + self.center_crop, left : left + self.center_crop]
            if img.shape[:2] != (self.input_size, self.input_size):
                size = (self.input_size, self.input_size)
                img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
            out.append(img)
        return np.stack(out)

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(..., 3)`` -> float32 ``(x - mean) / std``, still RGB."""
        mean = np.asarray(self.mean, np.float32)
        return (batch.astype(np.float32) - mean) / np.asarray(self.std, np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


# Massoli's SE-ResNet-50 (VGGFace2 Caffe port): BGR, Resize(256), Crop(224), BGR mean
# [91.4953, 103.8827, 131.0912] subtracted, no scaling (docs/datasets.md).
SE_RESNET50_PREPROCESSING = Preprocessing(
    input_size=224,
    channel_order="BGR",
    mean=(131.0912, 103.8827, 91.4953),
    resize_shorter=256,
    center_crop=224,
    source="VGGFace2 SENet-50 (docs/datasets.md)",
)
# SqueezeFacePoseNet §4: shorter side 256, centre 224x224 crop, resize to 113x113. The paper
# trains in MATLAB from the ImageNet SqueezeNet, whose input layer zero-centres RGB 0..255 pixels;
# the ImageNet RGB mean below is that convention (assumed: the paper does not print it).
SQUEEZEFACEPOSENET_PREPROCESSING = Preprocessing(
    input_size=113,
    channel_order="RGB",
    mean=(123.68, 116.779, 103.939),
    resize_shorter=256,
    center_crop=224,
    source="SqueezeFacePoseNet §4 (mean: assumed ImageNet zero-centring)",
)


def preprocessing_of(name: str) -> Preprocessing:
    """The preprocessing of zoo model ``name`` (its row's ``preprocessing``)."""
    return zoo.resolve(zoo.entry(name, "torch").preprocessing)


def build_torch(name: str, embedding: int | None = None, num_classes: int | None = None):
    """A freshly initialised torch model by name (a row of ``vlrface.models.zoo``),
    ``model.preprocessing`` attached.

    ``embedding``: SE-ResNet-50 adds a projection of its 2048-d pool output to this size;
    SqueezeFacePoseNet sets the ``conv10`` width (its descriptor, 1000 in the paper).
    ``num_classes``: the training classifier (``model.logits``); ``None`` builds none.
    """
    row = zoo.entry(name, "torch")
    extra = {"embedding": embedding} if embedding is not None else {}
    model = zoo.resolve(row.builder)(**row.args, **extra, num_classes=num_classes)
    model.preprocessing = preprocessing_of(name)
    model.name = name
    return model


def count_params(model, include_head: bool = False) -> int:
    """Learnable parameters (BN running statistics are buffers, not counted); without
    ``include_head`` the training classifier (``model.head``) is left out."""
    return sum(
        p.numel() for n, p in model.named_parameters() if include_head or not n.startswith("head.")
    )


def float32_size_mb(params: int) -> float:
    """Size of ``params`` float32 weights in MiB (``params * 4 / 2**20``)."""
    return params * 4 / 2**20
