"""Any set of labelled, aligned faces as an HR-gallery / LR-probe benchmark (``identities``).

The data: an identity-folder tree (``<root>/<identity>/<image>``, e.g. the London set's
``aligned112``) or an insightface pack (``train.rec`` + ``train.idx`` [+ ``property``], e.g.
CelebA-1k). Faces are aligned to the ArcFace template (``align``, ``common.face_loader``): a
pack's faces and ``size x size`` images are read as they are; with ``auto`` (default) or
``detector`` a larger loose photo (e.g. the London set's ``crop256``) is detected and aligned,
and one without a face falls back to a resize, counted in ``artifacts["alignment"]``; ``none``
resizes every photo whole.
``test_fraction`` keeps only the identities that ``vlrface.data.records.identity_split`` (seed
``split_seed``) holds out, the same identities the training pipeline's ``load_data`` holds out
with the same seed and fraction: a model's hold-out, measured outside its run.

Gallery and probes: per identity, the first image in path order is the gallery (for the London
set ``<id>_neutral`` before ``<id>_smiling``); the others are probes. The gallery stays at full
resolution; probes are degraded to ``r x r`` and back (``vlrface.degrade.degrade``, ``down`` /
``up``) for each ``r`` of ``resolutions`` (``hr_hr.<size>``: undegraded probes). Identities with
a single image only join the gallery (distractors).

Metrics, named as the other protocols' (``eval.<label>.<variant>.<res>.<metric>``, ``label``
defaulting to ``identities``):

* ``acc`` / ``acc_std``: 10-fold verification accuracy (``verification.kfold_accuracy``) over
  every mated gallery-probe pair and as many non-mated ones, drawn with ``seed`` (each probe
  against a random other identity's gallery face), shuffled together;
* ``tar_far_1e-3``: TAR at FAR 1e-3 (``verification.tar_at_far``) over ALL gallery-probe
  comparisons (mated vs every non-mated one: enough negatives for the rate to mean something);
* ``rank1``: closed-set rank-1 identification of the probes against the whole gallery
  (``identification.closed_set_identification``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vlrface.data.records import DataError, identity_split
from vlrface.protocols.common import SIZE, check_root, embed_at, face_loader
from vlrface.protocols.identification import closed_set_identification
from vlrface.protocols.verification import kfold_accuracy, metric_suffix, tar_at_far

RESOLUTIONS = (7, 14, 28)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def metric_names(
    resolutions=RESOLUTIONS, size: int = SIZE, far: float = 1e-3, label: str = "identities"
) -> list[str]:
    """The names ``run_identities`` returns, in its order."""
    runs = [("hr_hr", size)] + [("hr_lr", int(r)) for r in resolutions if int(r) < size]
    return [
        f"eval.{label}.{variant}.{res}.{m}"
        for variant, res in runs
        for m in ("acc", "acc_std", metric_suffix(far), "rank1")
    ]


def is_pack(root: Path) -> bool:
    return (root / "train.rec").is_file() and (root / "train.idx").is_file()


def read_identities(root, test_fraction: float | None = None, split_seed: int = 0):
    """``DataFrame(path, identity)`` of ``root`` (a pack or an identity-folder tree), sorted by
    identity then path; only the held-out identities when ``test_fraction`` is given."""
    root = check_root(root)
    if is_pack(root):
        from vlrface.data.insightface import read_manifest

        rows = read_manifest(root, progress=False)[["path", "identity"]]
    else:
        rows = pd.DataFrame(
            [
                (p.relative_to(root).as_posix(), p.parent.name)
                for p in sorted(root.glob("*/*"))
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            ],
            columns=["path", "identity"],
        )
    if rows.empty:
        raise DataError(
            f"{root}: no faces: expected an insightface pack (train.rec, train.idx) or "
            "<identity>/<image> folders"
        )
    rows = rows.astype({"identity": str})
    if test_fraction is not None:
        held = [identity_split(i, split_seed, test_fraction) == "test" for i in rows.identity]
        rows = rows[held]
    # path order within an identity: a pack's records by key number, folders by name
    key = rows.path.str.extract(r"#(\d+)$")[0]
    order = key.astype(float) if key.notna().all() else rows.path
    rows = rows.assign(_o=order).sort_values(["identity", "_o"], kind="stable")
    return rows.drop(columns="_o").reset_index(drop=True)


def gallery_probe_split(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(gallery row indices, probe row indices)``: an identity's first image is its gallery."""
    first = ~rows.identity.duplicated()
    gallery, probes = np.flatnonzero(first), np.flatnonzero(~first)
    if len(probes) == 0 or len(gallery) < 2:
        raise DataError(
            f"identities protocol needs >= 2 identities and one with >= 2 images; got "
            f"{len(gallery)} identities, {len(probes)} probe images"
        )
    return gallery, probes


def run_identities(
    embedder,
    root,
    *,
    resolutions=RESOLUTIONS,
    flip: bool = True,
    progress: bool = True,
    far: float = 1e-3,
    down: str = "area",
    up: str = "area",
    size: int = SIZE,
    folds: int = 10,
    seed: int = 0,
    test_fraction: float | None = None,
    split_seed: int = 0,
    label: str = "identities",
    align: str = "auto",
):
    """``(metrics, artifacts)``: ``eval.<label>.<hr_hr.<size>|hr_lr.<r>>.{acc, acc_std,
    tar_far_1e-3, rank1}`` (module doc); artifacts ``scores`` (name prefix -> balanced pair
    scores), ``same``, ``counts``."""
    rows = read_identities(root, test_fraction, split_seed)
    gallery, probes = gallery_probe_split(rows)
    ids = rows.identity.to_numpy()
    g_ids, p_ids = ids[gallery], ids[probes]
    load = face_loader(Path(root), list(rows.path), size, up, align=align)
    res = [None, *[int(r) for r in resolutions if int(r) < size]]
    emb = embed_at(
        embedder, load, len(rows), res, flip=flip, down=down, up=up, progress=progress,
        desc=f"eval {label}",
    )  # fmt: skip
    # balanced pairs: each probe with its own gallery face and with a random other one
    rng = np.random.default_rng([seed, 0x1D])
    g_index = {g: k for k, g in enumerate(g_ids)}
    mate = np.array([g_index[i] for i in p_ids])
    other = (mate + rng.integers(1, len(gallery), len(probes))) % len(gallery)
    a = np.r_[mate, other]
    b = np.r_[np.arange(len(probes)), np.arange(len(probes))]
    same = np.r_[np.ones(len(probes), bool), np.zeros(len(probes), bool)]
    order = rng.permutation(len(a))
    a, b, same = a[order], b[order], same[order]
    mated_all = p_ids[:, None] == g_ids[None, :]
    metrics, scores = {}, {}
    g_emb = emb[None][gallery]
    for r in res:
        variant, shown = ("hr_hr", size) if r is None else ("hr_lr", r)
        p_emb = emb[r][probes]
        key = f"eval.{label}.{variant}.{shown}"
        s = (g_emb[a] * p_emb[b]).sum(1)
        scores[key] = s
        acc, std = kfold_accuracy(s, same, folds)
        full = p_emb @ g_emb.T
        metrics[f"{key}.acc"] = acc
        metrics[f"{key}.acc_std"] = std
        metrics[f"{key}.{metric_suffix(far)}"] = tar_at_far(full.ravel(), mated_all.ravel(), far)
        metrics[f"{key}.rank1"] = closed_set_identification(p_emb, g_emb, p_ids, g_ids, ranks=(1,))[
            "rank1"
        ]
    counts = {
        "identities": int(len(gallery)),
        "probes": int(len(probes)),
        "pairs": int(len(a)),
        "negatives_for_far": int((~mated_all).sum()),
    }
    artifacts = {"scores": scores, "same": same, "counts": counts}
    return metrics, {**artifacts, "alignment": load.stats}
