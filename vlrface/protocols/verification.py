"""1:1 verification: pairs, 10-fold accuracy and TAR@FAR, at full and at very low resolution.

Accuracy follows insightface's LFW routine (docs/datasets.md, LFW): pairs are split into 10
contiguous folds; on each fold the threshold that maximises accuracy on the other 9 folds is
applied to it; the figure is the mean (and std) of the 10 held-out accuracies. Scores are cosine
similarities of L2-normalised, flip-summed descriptors (equivalent to insightface's squared L2
distance on unit vectors, ``d = 2 - 2 cos``).

TAR@FAR: the threshold is the smallest score whose false-accept rate over all negative pairs is
<= FAR; TAR is the share of positive pairs above it. With fewer than ``1/FAR`` negatives this is
the highest negative score, the conservative reading.

HR-LR ("hr_lr"): the first image of each pair stays at full resolution (gallery), the second is
down-sampled to ``r x r`` and back (probe), as in BinaryFaceNet's ``lfw_{r}_hr2lr_interArea``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_pairs(test: pd.DataFrame, n_pairs: int, seed: int) -> pd.DataFrame:
    """``n_pairs`` balanced pairs (half same-identity), shuffled: columns ``a, b, same``.

    ``a`` and ``b`` index rows of ``test``. Identities need >= 2 images for positive pairs.
    """
    rng = np.random.default_rng([seed, 0xA1])
    by_id = {k: np.asarray(v) for k, v in test.groupby("identity").indices.items()}
    multi = sorted(k for k, v in by_id.items() if len(v) >= 2)
    ids = sorted(by_id)
    if not multi or len(ids) < 2:
        raise ValueError(
            f"verification needs >= 2 test identities and one with >= 2 images; got {len(ids)} "
            f"identities, {len(multi)} with >= 2 images"
        )
    n_pos = n_pairs // 2
    rows, seen = [], set()
    tries = 0
    while len(rows) < n_pos and tries < 50 * n_pairs:
        tries += 1
        ident = multi[rng.integers(len(multi))]
        a, b = rng.choice(by_id[ident], 2, replace=False)
        key = (min(a, b), max(a, b))
        if key not in seen:
            seen.add(key)
            rows.append((int(a), int(b), True))
    while len(rows) < 2 * n_pos and tries < 100 * n_pairs:
        tries += 1
        i, j = rng.choice(len(ids), 2, replace=False)
        a, b = rng.choice(by_id[ids[i]]), rng.choice(by_id[ids[j]])
        key = (min(a, b), max(a, b))
        if key not in seen:
            seen.add(key)
            rows.append((int(a), int(b), False))
    pairs = pd.DataFrame(rows, columns=["a", "b", "same"])
    return pairs.iloc[rng.permutation(len(pairs))].reset_index(drop=True)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold (predict same if score > t) with the highest accuracy on these pairs."""
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], same[order].astype(np.int64)
    # Threshold below s[k] (k = 0..n): pairs k.. are accepted.
    pos_above = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    neg_below = np.concatenate([[0], np.cumsum(1 - y)])
    correct = pos_above + neg_below
    # a threshold cannot fall between equal scores: only cut where the score changes
    cuttable = np.concatenate([[True], s[1:] > s[:-1], [True]])
    k = int(np.argmax(np.where(cuttable, correct, -1)))
    if k == 0:
        return float(s[0]) - 1e-6
    if k == len(s):
        return float(s[-1])
    return float((s[k - 1] + s[k]) / 2)


def heldout_accuracies(scores, same, fold) -> np.ndarray:
    """Accuracy of each fold at the threshold that is best on all the other folds."""
    scores, same, fold = np.asarray(scores, np.float64), np.asarray(same, bool), np.asarray(fold)
    accs = []
    for f in np.unique(fold):
        test = fold == f
        t = best_threshold(scores[~test], same[~test])
        accs.append(float(np.mean((scores[test] > t) == same[test])))
    return np.array(accs)


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: int = 10) -> tuple[float, float]:
    """Mean and std of held-out accuracy over ``folds`` contiguous folds."""
    n = len(scores)
    if n < folds:
        raise ValueError(f"{n} pairs cannot be split into {folds} folds")
    bounds = np.linspace(0, n, folds + 1).astype(int)
    accs = heldout_accuracies(scores, same, np.searchsorted(bounds, np.arange(n), "right") - 1)
    return float(np.mean(accs)), float(np.std(accs))


def threshold_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """The score threshold (accept when ``score > threshold``) whose false-accept rate over the
    negative pairs is <= ``far``: the ``floor(far * negatives)``-th highest negative score."""
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    neg = np.sort(scores[~same])[::-1]
    if not len(neg) or not same.any():
        raise ValueError("TAR@FAR needs positive and negative pairs")
    allowed = int(np.floor(far * len(neg)))  # negatives that may score above the threshold
    return float(neg[allowed]) if allowed < len(neg) else -np.inf


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """True-accept rate at the threshold whose false-accept rate is <= ``far``."""
    threshold = threshold_at_far(scores, same, far)
    return float(np.mean(np.asarray(scores, np.float64)[np.asarray(same, bool)] > threshold))


def threshold_suffix(far: float) -> str:
    """``1e-3`` -> ``threshold_far_1e-3``: the metric holding ``threshold_at_far``."""
    return metric_suffix(far).replace("tar_far_", "threshold_far_")


def verification_metrics(scores: np.ndarray, same: np.ndarray, far: float, folds: int = 10):
    """``{"acc", "acc_std", "tar@far=<far>"}`` of one score set."""
    acc, std = kfold_accuracy(scores, same, folds)
    return {"acc": acc, "acc_std": std, f"tar_far_{far:g}": tar_at_far(scores, same, far)}


def metric_suffix(far: float) -> str:
    """``1e-3`` -> ``tar_far_1e-3`` (no dots, so names stay hierarchical)."""
    mantissa, exp = f"{far:.0e}".split("e")
    return f"tar_far_{mantissa}e{int(exp)}"


def evaluate_pairs(
    embedder,
    images: np.ndarray,
    pairs: pd.DataFrame,
    dataset: str,
    resolutions: list[int],
    far: float = 1e-3,
    folds: int = 10,
    flip: bool = True,
    down: str = "area",
    up: str = "area",
    progress: bool = True,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """HR-HR and HR-LR (gallery HR, probe at ``r`` px) verification of uint8 ``images``.

    Returns ``(metrics, scores)``: metrics named ``eval.<dataset>.<variant>.<res>.<metric>``
    (``hr_hr.<full size>`` and ``hr_lr.<r>``), and the score array of each variant for plots.
    """
    from vlrface.degrade import degrade
    from vlrface.embedders import embed_images
    from vlrface.preprocess import normalize
    from vlrface.progress import tqdm

    size = images.shape[1]
    same = pairs["same"].to_numpy(bool)
    a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    hr = embed_images(embedder, normalize(images), flip=flip)
    variants = [("hr_hr", size, hr)]
    for r in tqdm(resolutions, desc=f"eval {dataset} HR-LR", unit="res", disable=not progress):
        lr = np.stack([degrade(img, r, down, up) for img in images])
        variants.append(("hr_lr", r, embed_images(embedder, normalize(lr), flip=flip)))
    metrics, scores = {}, {}
    for variant, res, probe in variants:
        s = (hr[a] * probe[b]).sum(1)
        key = f"eval.{dataset}.{variant}.{res}"
        scores[key] = s
        m = verification_metrics(s, same, far, folds)
        metrics[f"{key}.acc"] = m["acc"]
        metrics[f"{key}.acc_std"] = m["acc_std"]
        metrics[f"{key}.{metric_suffix(far)}"] = m[f"tar_far_{far:g}"]
        # the verification threshold a served model decides with (``same: yes/no``)
        metrics[f"{key}.{threshold_suffix(far)}"] = threshold_at_far(s, same, far)
    return metrics, scores


def evaluate_heldout(embedder, manifest: pd.DataFrame, data, evaluation, seed: int):
    """The pipelines' in-run verification: ``evaluation.pairs`` pairs of the manifest's held-out
    (``split == "test"``) identities, HR-HR and HR-LR at ``evaluation.resolutions``
    (``evaluate_pairs``; with each variant's ``threshold_far_<far>``, the score at FAR
    ``evaluation.far``: ``verification_threshold`` picks the HR-HR one for registration). Only
    the faces the pairs use are read and embedded. ``data`` and ``evaluation`` are
    ``vlrface.config`` ``DataConfig`` / ``EvalConfig``. Returns
    ``(metrics, scores, pairs)``; ``pairs`` index rows of the test split."""
    from vlrface.preprocess import load_face

    test = manifest[manifest.split == "test"].reset_index(drop=True)
    pairs = make_pairs(test, evaluation.pairs, seed)
    used, inverse = np.unique(np.concatenate([pairs.a, pairs.b]), return_inverse=True)
    images = np.stack([load_face(data.root, test.path[i], data.image_size) for i in used])
    n = len(pairs)
    metrics, scores = evaluate_pairs(
        embedder,
        images,
        pairs.assign(a=inverse[:n], b=inverse[n:]),
        data.name,
        evaluation.resolutions,
        evaluation.far,
        evaluation.folds,
        evaluation.flip,
        evaluation.down,
        evaluation.up,
    )
    return metrics, scores, pairs


def verification_threshold(metrics: dict, dataset: str, size: int, far: float) -> float | None:
    """The HR-HR threshold at ``far`` of a held-out evaluation's metrics (``evaluate_pairs``),
    or None when the metrics lack it (e.g. an older run)."""
    value = metrics.get(f"eval.{dataset}.hr_hr.{size}.{threshold_suffix(far)}")
    return None if value is None or not np.isfinite(value) else float(value)
