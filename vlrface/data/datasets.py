"""The dataset registry: every supported dataset's reader, protocol files, official sizes, role.

One ``Dataset`` per name. Readers are named by module path and imported only when used, so one
reader that fails to import (or is not written yet) never breaks the others, the CLI or the
pipeline. Official sizes are those of docs/datasets.md; validation (``vlrface.data.validation``)
checks a manifest against them: fewer images or identities than the release (a subset, e.g. a
fixture or a partial download) warns, more fails.

``role`` says how a run uses the set: ``train`` sets are learnt from, ``eval`` sets measured on.
``train_splits`` names the splits of a set that a run may train on (TinyFace and SurvFace ship a
training split beside their test splits); identities in them must not reach any evaluation split
(``validation.check_disjoint``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from vlrface.errors import DataError


@dataclass(frozen=True)
class Size:
    """Official identities / images of one split (``None`` where the release does not say)."""

    identities: int | None = None
    images: int | None = None


ALL = "all"  # the key of ``Dataset.sizes`` that counts the whole manifest, all splits together


@dataclass(frozen=True)
class ProtocolFile:
    """A protocol file a reader takes: CLI option ``--<option>``, reader keyword ``kwarg``."""

    option: str
    help: str

    @property
    def kwarg(self) -> str:
        return self.option.replace("-", "_")


@dataclass(frozen=True)
class Resolution:
    """What the stored faces' pixel sizes look like.

    ``exact``: every image is ``exact x exact`` (aligned packs). ``mean_below``: a native VLR
    set, faces (their larger side) average fewer pixels than this (TinyFace 20x16, SurvFace
    24x20 on average). ``min_side``: no image is smaller than this on its shorter side.
    """

    exact: int | None = None
    mean_below: int | None = None
    min_side: int | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    module: str  # the reader's module, imported lazily
    role: str  # "train" | "eval"
    root: str  # where the raw release lives in the DVC-tracked data folder
    sizes: dict[str, Size]  # split (or ALL) -> official size
    splits: tuple[str, ...]  # the reader's split values
    train_splits: tuple[str, ...] = ()
    path_pattern: str = r".+"  # regex every manifest ``path`` matches
    unique: tuple[str, ...] = ("path",)  # columns that key a row (IJB: a face in a template)
    resolution: Resolution = Resolution()
    protocol: tuple[ProtocolFile, ...] = ()
    reader_kwargs: dict = field(default_factory=dict)
    function: str = "read_manifest"
    # official verification pairs {same: count}; ``pairs_function`` reads them (module attr)
    pairs: dict[bool, int] = field(default_factory=dict)
    pairs_function: str | None = None
    identity_is_name: bool = False  # the identity is the person's name (matches across sets)

    def reader(self) -> Callable:
        """The reader function, imported now; ``DataError`` if its module is not available."""
        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            raise DataError(
                f"{self.name}: reader module {self.module} cannot be imported ({exc})"
            ) from exc
        return getattr(module, self.function)

    def pair_reader(self) -> Callable | None:
        """The verification-pairs function (``None`` for sets without 1:1 pairs)."""
        if self.pairs_function is None:
            return None
        return getattr(importlib.import_module(self.module), self.pairs_function)


_MAT = "MATLAB devkit list"
_TINYFACE_TEST = ("probe", "gallery", "distractor")
_SURVFACE_TEST = ("verification", "gallery", "mated_probe", "unmated_probe")

DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            name="ms1m_retinaface",
            title="MS1MV3 (ms1m-retinaface-t1), insightface RecordIO pack",
            module="vlrface.data.insightface",
            role="train",
            root="data/ms1m-retinaface-t1",
            sizes={"train": Size(93_431, 5_179_510)},
            splits=("train",),
            train_splits=("train",),
            path_pattern=r"^[^/]+\.rec#\d+$",
            resolution=Resolution(exact=112),
            reader_kwargs={"source": "ms1m_retinaface"},
        ),
        Dataset(
            name="casia_webface",
            title="CASIA-WebFace, original release layout <id>/<NNN>.jpg",
            module="vlrface.data.casia",
            role="train",
            root="data/casia-webface",
            sizes={ALL: Size(10_575, 494_414)},
            splits=("train",),
            train_splits=("train",),
            path_pattern=r"^\d{7}/\d{3}\.jpg$",
            # the release is 250x250; the synthetic demo set in this layout is 112x112
            resolution=Resolution(min_side=64),
        ),
        Dataset(
            name="casia_webface_pack",
            title="CASIA-WebFace, insightface pack faces_webface_112x112",
            module="vlrface.data.insightface",
            role="train",
            root="data/faces_webface_112x112",
            sizes={"train": Size(10_572, 490_623)},
            splits=("train",),
            train_splits=("train",),
            path_pattern=r"^[^/]+\.rec#\d+$",
            resolution=Resolution(exact=112),
            reader_kwargs={"source": "casia_webface_pack"},
        ),
        Dataset(
            name="vggface2",
            title="VGGFace2, loose crops train/ and test/",
            module="vlrface.data.vggface2",
            role="train",
            root="data/vggface2",
            # test images: 3.31 M total - 3,141,890 train (paper)
            sizes={"train": Size(8_631, 3_141_890), "test": Size(500, 169_396)},
            splits=("train", "test"),
            train_splits=("train",),
            path_pattern=r"^(?:train|test)/n\d{6}/\d{4}_\d{2}\.jpg$",
        ),
        Dataset(
            name="tinyface",
            title="QMUL-TinyFace, native low resolution",
            module="vlrface.data.tinyface",
            role="eval",
            root="data/tinyface",
            sizes={
                "train": Size(2_570, 7_804),
                "probe": Size(2_569, 3_728),
                "gallery": Size(None, 4_443),
                "distractor": Size(None, 153_428),
            },
            splits=("train", *_TINYFACE_TEST),
            train_splits=("train",),
            path_pattern=r"^(?:Training_Set/[^/]+|Testing_Set/(?:Probe|Gallery_Match|"
            r"Gallery_Distractor))/[^/]+\.jpg$",
            resolution=Resolution(mean_below=32),
            protocol=(
                ProtocolFile("probe-mat", f"probe_img_ID_pairs.mat ({_MAT})"),
                ProtocolFile("gallery-mat", f"gallery_match_img_ID_pairs.mat ({_MAT})"),
            ),
        ),
        Dataset(
            name="survface",
            title="QMUL-SurvFace, native low resolution surveillance faces",
            module="vlrface.data.survface",
            role="eval",
            root="data/survface",
            sizes={"train": Size(5_319, 220_890)},
            splits=("train", *_SURVFACE_TEST),
            train_splits=("train",),
            path_pattern=r"^(?:training_set/\d+|Face_Verification_Test_Set/verification_images|"
            r"Face_Identification_Test_Set/(?:gallery|mated_probe|unmated_probe))/[^/]+\.jpg$",
            resolution=Resolution(mean_below=32),
            protocol=(
                ProtocolFile("positive-mat", f"positive_pairs_names.mat ({_MAT})"),
                ProtocolFile("negative-mat", f"negative_pairs_names.mat ({_MAT})"),
                ProtocolFile("gallery-mat", f"gallery_img_ID_pairs.mat ({_MAT})"),
                ProtocolFile("mated-probe-mat", f"mated_probe_img_ID_pairs.mat ({_MAT})"),
            ),
            pairs={True: 5_320, False: 5_320},
            pairs_function="read_pairs",
            # test set: 10,254 ids / 242,617 images over all test splits
        ),
        Dataset(
            name="scface",
            title="SCface, mugshots and surveillance cameras at 3 distances",
            module="vlrface.data.scface",
            role="eval",
            root="data/scface",
            # rotation mugshots (9/subject) are not read: 4,160 - 130 x 9
            sizes={ALL: Size(130, 2_990), "mugshot": Size(130, 130)},
            splits=("mugshot", "surveillance"),
            path_pattern=r"^(?:mugshot_frontal_cropped_all|surveillance_cameras_\w+(?:/cam_\d)?)"
            r"/\d{3}_[^/]+\.(?:jpg|JPG)$",
            protocol=(
                ProtocolFile("features", "features.txt (subject attributes)"),
                ProtocolFile("annotations", "scface_annotations.txt (4 landmarks)"),
            ),
            # protocol 50/80: subjects 1-50 fine-tune, 51-130 test (scface.protocol_50_80)
        ),
        Dataset(
            name="lfw",
            title="LFW, raw release <Name>/<Name>_<NNNN>.jpg + pairs.txt",
            module="vlrface.data.lfw",
            role="eval",
            root="data/lfw",
            sizes={ALL: Size(5_749, 13_233)},
            splits=("test",),
            path_pattern=r"^(?:[^/]+/)?[^/]+/[^/]+_\d{4}\.jpg$",
            resolution=Resolution(exact=250),
            protocol=(ProtocolFile("pairs", "pairs.txt (View 2, 10 folds of 600)"),),
            pairs={True: 3_000, False: 3_000},
            pairs_function="read_pairs",
            identity_is_name=True,
        ),
        Dataset(
            name="ijbb",
            title="IJB-B, insightface evaluation pack (loose_crop/ + meta/) or NIST release",
            module="vlrface.data.ijb",
            role="eval",
            root="data/ijbb",
            sizes={ALL: Size(None, 227_630)},
            splits=("test",),
            path_pattern=r"^(?:loose_crop/\d+\.jpg|(?:img|frames)/[^/]+)$",
            unique=("path", "template_id"),
            # 12,115 templates; 8,010,270 template pairs (10,270 genuine)
        ),
        Dataset(
            name="ijbc",
            title="IJB-C, insightface evaluation pack (loose_crop/ + meta/) or NIST release",
            module="vlrface.data.ijb",
            role="eval",
            root="data/ijbc",
            sizes={ALL: Size(None, 469_375)},
            splits=("test",),
            path_pattern=r"^(?:loose_crop/\d+\.jpg|(?:img|frames)/[^/]+)$",
            unique=("path", "template_id"),
            # 15,658,489 template pairs (19,557 genuine)
        ),
    )
}


def get(name: str) -> Dataset:
    """The registered dataset ``name``, or ``DataError`` listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None
