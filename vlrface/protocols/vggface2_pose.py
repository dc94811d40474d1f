"""VGGFace2 cross-pose verification (SqueezeFacePoseNet paper, Sec. 4-5; VGGFace2-Pose, 368 ids).

Template construction (stated, partly assumed):

* ``test_posetemp_imglist.txt`` is read with blocks of ``images_per_pose`` (10) images, so the
  manifest's ``pose`` column is the pose index within the identity; **assumption [U]**: each
  identity lists 10 frontal, then 10 three-quarter, then 10 profile images (the paper gives 10
  images per pose; the file's order is not documented).
* Within an (identity, pose), images in path order are cut into consecutive templates of
  ``k`` images (1 or 5; an incomplete last group is dropped): 10 or 2 templates per pose.
  A template is the mean of its L2-normalised flip-summed descriptors, re-normalised.
* Genuine trials: each template of a user against the user's other templates (same pose: each
  unordered pair once; cross pose: every pose-A template against every pose-B template).
  Impostor trials: the user's first pose-A template against the second pose-B template (the
  last, if there is one) of each of the next ``impostor_users`` (100) users, wrapping around.
* Faces are aligned with the 5 MTCNN points of ``bb_landmark/`` (else resized whole).

Metrics: ``eval.vggface2_pose.<poseA>_<poseB>.t<k>.{eer, frr_far_1e-2, frr_far_1e-3}`` for the
same-pose and cross-pose combinations the data holds; scores are cosine similarities.
"""

from __future__ import annotations

from itertools import combinations, combinations_with_replacement

import numpy as np

from vlrface.data import vggface2 as vggface2_data
from vlrface.data.records import DataError
from vlrface.protocols.common import SIZE, check_root, embed_at, exp_suffix, face_loader
from vlrface.protocols.metrics import eer, frr_at_far, roc_curve

POSES = ("frontal", "three_quarter", "profile")
FARS = (1e-2, 1e-3)


def _templates(manifest, emb, k: int) -> dict:
    """``{(identity, pose): [template feature, ...]}`` of ``k``-image templates."""
    out = {}
    for (ident, pose), part in manifest.groupby(["identity", "pose_index"], sort=True):
        rows = part.sort_values("path").index.to_numpy()
        groups = [rows[s : s + k] for s in range(0, len(rows) - k + 1, k)]
        feats = [emb[g].mean(0) for g in groups]
        if feats:
            out[ident, pose] = [f / max(np.linalg.norm(f), 1e-12) for f in feats]
    return out


def _trials(templates: dict, users: list, pa: int, pb: int, impostor_users: int):
    scores, same = [], []
    for u in users:
        ta, tb = templates.get((u, pa), []), templates.get((u, pb), [])
        if pa == pb:
            genuine = list(combinations(range(len(ta)), 2))
        else:
            genuine = [(i, j) for i in range(len(ta)) for j in range(len(tb))]
        for i, j in genuine:
            scores.append(float(ta[i] @ (ta if pa == pb else tb)[j]))
            same.append(True)
    for n, u in enumerate(users):
        if (u, pa) not in templates:
            continue
        for step in range(1, min(impostor_users, len(users) - 1) + 1):
            other = templates.get((users[(n + step) % len(users)], pb))
            if other:
                scores.append(float(templates[u, pa][0] @ other[min(1, len(other) - 1)]))
                same.append(False)
    return np.array(scores), np.array(same, bool)


def run_vggface2_pose(
    embedder,
    root,
    *,
    resolutions=(),
    flip: bool = True,
    progress: bool = True,
    template_sizes=(1, 5),
    images_per_pose: int = 10,
    impostor_users: int = 100,
    down: str = "area",
    up: str = "area",
    size: int = SIZE,
    align: str = "auto",
):
    """``(metrics, artifacts)``; artifacts ``scores`` and ``same`` per name prefix."""
    root = check_root(root)
    m = vggface2_data.read_manifest(
        root, progress=False, splits=("test",), pose_template_size=images_per_pose
    )
    if "pose" not in m:
        raise DataError(f"{root}: no test_posetemp_imglist.txt (the pose template list)")
    m = m[m["pose"] != ""].reset_index(drop=True)
    m["pose_index"] = m["pose"].astype(int)
    marks = m["landmarks"].tolist() if "landmarks" in m else None
    res = [None, *[int(r) for r in resolutions]]
    load = face_loader(root, m["path"].tolist(), size, up, landmarks=marks, align=align)
    emb = embed_at(
        embedder,
        load,
        len(m),
        res,
        flip=flip,
        down=down,
        up=up,
        progress=progress,
        desc="eval vggface2_pose",
    )
    users = sorted(m["identity"].unique())
    metrics, artifacts = {}, {"scores": {}, "same": {}}
    for r in res:
        for k in template_sizes:
            templates = _templates(m, emb[r], k)
            for pa, pb in combinations_with_replacement(range(len(POSES)), 2):
                s, same = _trials(templates, users, pa, pb, impostor_users)
                if not same.any() or same.all():
                    continue
                tag = f"t{k}" if r is None else f"t{k}_r{r}"
                key = f"eval.vggface2_pose.{POSES[pa]}_{POSES[pb]}.{tag}"
                artifacts["scores"][key], artifacts["same"][key] = s, same
                metrics[f"{key}.eer"] = eer(roc_curve(s, same))
                for f in FARS:
                    metrics[f"{key}.frr_far_{exp_suffix(f)}"] = frr_at_far(s, same, f)
    artifacts["alignment"] = load.stats
    return metrics, artifacts
