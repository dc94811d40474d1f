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

``PROTOCOLS`` maps a protocol name to its runner; ``PROTOCOL_FILES`` to the keyword arguments
that name its protocol files (the CLI's ``--<file>`` options). The ``ALIGNABLE`` runners take
``align`` and report what they did in ``artifacts["alignment"]`` (``common.alignment_line``).
"""

from __future__ import annotations

from vlrface.protocols.identities import run_identities
from vlrface.protocols.ijb import run_ijbb, run_ijbc
from vlrface.protocols.lfw import run_lfw
from vlrface.protocols.scface import run_scface
from vlrface.protocols.survface import run_survface
from vlrface.protocols.tinyface import run_tinyface
from vlrface.protocols.vggface2_pose import run_vggface2_pose

PROTOCOLS = {
    "lfw": run_lfw,
    "scface": run_scface,
    "tinyface": run_tinyface,
    "survface": run_survface,
    "ijbb": run_ijbb,
    "ijbc": run_ijbc,
    "vggface2_pose": run_vggface2_pose,
    "identities": run_identities,
}

PROTOCOL_FILES = {
    "lfw": ("pairs", "bin"),
    "scface": ("features", "annotations"),
    "tinyface": ("probe_mat", "gallery_mat"),
    "survface": ("positive_mat", "negative_mat", "gallery_mat", "mated_probe_mat"),
    "ijbb": (),
    "ijbc": (),
    "vggface2_pose": (),
    "identities": (),
}

# protocols whose runner aligns faces (``align``: auto | landmarks | detector | none); the
# native low-resolution sets (TinyFace, SurvFace) are read as they are
ALIGNABLE = ("lfw", "scface", "ijbb", "ijbc", "vggface2_pose", "identities")

DEFAULT_RESOLUTIONS = {
    "lfw": (7, 14, 21, 28, 56, 112),
    "scface": (),
    "tinyface": (),
    "survface": (),
    "ijbb": (8, 16, 24, 32, 64, 128),
    "ijbc": (8, 16, 24, 32, 64, 128),
    "vggface2_pose": (),
    "identities": (7, 14, 28),
}


def run(protocol: str, embedder, root, **kwargs):
    """``PROTOCOLS[protocol](embedder, root, **kwargs)``; ``KeyError`` naming the protocol."""
    if protocol not in PROTOCOLS:
        raise KeyError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol](embedder, root, **kwargs)
