"""The evaluation protocols, one runner each, over any ``Embedder`` (Keras, LCE, PyTorch, ONNX).

``run_<protocol>(embedder, root, *, resolutions=..., flip=True, progress=True, **files)`` reads
the dataset through its reader, aligns faces where the release ships landmarks, degrades probes
with ``vlrface.degrade.degrade`` (inter-area down, ``up`` configurable), embeds with flip TTA and
returns ``(metrics, artifacts)``: metrics named ``eval.<protocol>.<variant>.<res>.<metric>``
(the names MLflow logs and ``vlrface evaluate --json`` prints), artifacts the score arrays,
CMC results and matrices the plots need. The protocols, their variants and names are documented
in their modules: ``lfw``, ``scface``, ``tinyface``, ``survface``, ``ijb`` (``ijbb``/``ijbc``),
``vggface2_pose``, and ``identities`` (any identity-folder tree or insightface pack: HR gallery
vs LR probes).

``TABLE`` holds one row per protocol, the only place a protocol is declared: its runner, its
protocol files (the runner's keyword arguments, the configuration's ``files`` keys and the CLI's
``--<file>`` options, with their help), whether it aligns faces (``align``; it reports what it
did in ``artifacts["alignment"]``, ``common.alignment_line``), its default probe resolutions and
whether its metric names are known from the configuration alone. ``PROTOCOLS``,
``PROTOCOL_FILES``, ``ALIGNABLE``, ``DEFAULT_RESOLUTIONS`` and ``KNOWN_AHEAD`` are views of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vlrface.protocols import identities, ijb, lfw
from vlrface.protocols.identities import run_identities
from vlrface.protocols.ijb import run_ijbb, run_ijbc
from vlrface.protocols.lfw import run_lfw
from vlrface.protocols.scface import run_scface
from vlrface.protocols.survface import run_survface
from vlrface.protocols.tinyface import run_tinyface
from vlrface.protocols.vggface2_pose import run_vggface2_pose


@dataclass(frozen=True)
class Protocol:
    runner: Callable
    files: dict[str, str] = field(default_factory=dict)  # runner keyword -> what the file is
    alignable: bool = False  # takes ``align``: auto | landmarks | detector | none
    resolutions: tuple[int, ...] = ()  # default probe sizes (px); () the release's own
    known_ahead: bool = False  # metric names follow from the configuration alone


TABLE: dict[str, Protocol] = {
    "lfw": Protocol(
        run_lfw,
        {"pairs": "pairs.txt (default <data>/pairs.txt)",
         "bin": "an aligned insightface lfw.bin instead of the raw release"},
        alignable=True, resolutions=lfw.RESOLUTIONS, known_ahead=True,
    ),
    "scface": Protocol(
        run_scface,
        {"features": "features.txt",
         "annotations": "scface_annotations.txt (4 landmarks)"},
        alignable=True,
    ),
    # the native low-resolution sets (TinyFace, SurvFace) are read as they are
    "tinyface": Protocol(
        run_tinyface,
        {"probe_mat": "probe_img_ID_pairs.mat", "gallery_mat": "the gallery .mat list"},
        known_ahead=True,
    ),
    "survface": Protocol(
        run_survface,
        {"positive_mat": "positive_pairs_names.mat",
         "negative_mat": "negative_pairs_names.mat",
         "gallery_mat": "the gallery .mat list",
         "mated_probe_mat": "mated_probe_img_ID_pairs.mat"},
    ),
    "ijbb": Protocol(run_ijbb, alignable=True, resolutions=ijb.RESOLUTIONS),
    "ijbc": Protocol(run_ijbc, alignable=True, resolutions=ijb.RESOLUTIONS),
    "vggface2_pose": Protocol(run_vggface2_pose, alignable=True),
    "identities": Protocol(
        run_identities, alignable=True, resolutions=identities.RESOLUTIONS, known_ahead=True
    ),
}  # fmt: skip

PROTOCOLS = {name: p.runner for name, p in TABLE.items()}
PROTOCOL_FILES = {name: tuple(p.files) for name, p in TABLE.items()}
ALIGNABLE = tuple(name for name, p in TABLE.items() if p.alignable)
DEFAULT_RESOLUTIONS = {name: p.resolutions for name, p in TABLE.items()}
KNOWN_AHEAD = tuple(name for name, p in TABLE.items() if p.known_ahead)


def file_options() -> dict[str, tuple[str, str]]:
    """``{keyword: help}`` of every protocol file, the help naming the protocols that take it
    (the CLI's ``--<file>`` options)."""
    out: dict[str, list[str]] = {}
    for name, p in TABLE.items():
        for keyword, what in p.files.items():
            out.setdefault(keyword, []).append(f"{name}: {what}.")
    return {k: " ".join(v) for k, v in out.items()}


def run(protocol: str, embedder, root, **kwargs):
    """``PROTOCOLS[protocol](embedder, root, **kwargs)``; ``KeyError`` naming the protocol."""
    if protocol not in PROTOCOLS:
        raise KeyError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol](embedder, root, **kwargs)
