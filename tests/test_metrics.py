"""Evaluation metrics against scikit-learn, hand computations and plain brute-force loops."""

import numpy as np
import pytest
from sklearn import metrics as skm

from vlrface.protocols import identification as ident
from vlrface.protocols import metrics as m
from vlrface.protocols.templates import rows_of, score_template_pairs, template_features


def random_pairs(n=3000, decimals=None, seed=0):
    rng = np.random.default_rng(seed)
    same = rng.uniform(size=n) < 0.3
    scores = rng.normal(same * 1.2, 1.0)
    if decimals is not None:  # many ties, within and across classes
        scores = np.round(scores, decimals)
    return scores, same


# ---------------------------------------------------------------- ROC-type (1:1)


@pytest.mark.parametrize("decimals", [None, 1, 2])
@pytest.mark.parametrize("drop", [True, False])
def test_roc_curve_is_sklearns(decimals, drop):
    scores, same = random_pairs(decimals=decimals)
    roc = m.roc_curve(scores, same, drop_intermediate=drop)
    fpr, tpr, thr = skm.roc_curve(same, scores, drop_intermediate=drop)
    np.testing.assert_array_equal(roc.fpr, fpr)
    np.testing.assert_array_equal(roc.tpr, tpr)
    np.testing.assert_array_equal(roc.thresholds, thr)


def test_roc_curve_float32_scores():
    scores, same = random_pairs(decimals=3)
    scores = scores.astype(np.float32)
    roc = m.roc_curve(scores, same)
    fpr, tpr, _ = skm.roc_curve(same, scores)
    np.testing.assert_array_equal(roc.fpr, fpr)
    np.testing.assert_array_equal(roc.tpr, tpr)


def test_roc_curve_of_many_pairs_is_sklearns():  # the two-thread sort path
    scores, same = random_pairs(n=600_000, decimals=3, seed=8)
    roc = m.roc_curve(scores.astype(np.float32), same)
    fpr, tpr, _ = skm.roc_curve(same, scores.astype(np.float32))
    np.testing.assert_array_equal(roc.fpr, fpr)
    np.testing.assert_array_equal(roc.tpr, tpr)


@pytest.mark.parametrize("decimals", [None, 1])
def test_auc_is_sklearns(decimals):
    scores, same = random_pairs(decimals=decimals)
    roc = m.roc_curve(scores, same)
    assert m.auc(roc.fpr, roc.tpr) == pytest.approx(skm.roc_auc_score(same, scores), abs=1e-12)
    # area under a decreasing x is the same
    assert m.auc(roc.fpr[::-1], roc.tpr[::-1]) == pytest.approx(skm.auc(roc.fpr, roc.tpr))


@pytest.mark.parametrize("decimals", [None, 2])
def test_tar_at_far_nearest_is_ijb_rule_on_sklearn_roc(decimals):
    scores, same = random_pairs(n=20000, decimals=decimals, seed=1)
    roc = m.roc_curve(scores, same)
    fpr, tpr, _ = skm.roc_curve(same, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    for far in [1e-4, 1e-3, 1e-2, 0.05, 1e-1]:
        assert m.tar_at_far_nearest(roc, far) == tpr[np.argmin(abs(fpr - far))]


@pytest.mark.parametrize("decimals", [None, 2])
def test_frr_at_far_is_best_point_with_far_below(decimals):
    scores, same = random_pairs(n=5000, decimals=decimals, seed=2)
    fpr, tpr, _ = skm.roc_curve(same, scores, drop_intermediate=False)
    for far in [1e-3, 1e-2, 0.1]:
        expected = 1 - tpr[np.searchsorted(fpr, far, side="right") - 1]
        assert m.frr_at_far(scores, same, far) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "pos, neg, expected",
    [
        ([0.9, 0.6, 0.4], [0.7, 0.3, 0.2], 1 / 3),  # FAR = FRR = 1/3 at a ROC point
        ([0.9, 0.5], [0.7, 0.6, 0.1], 0.5),  # FRR 1/2 while FAR jumps 1/3 -> 2/3: crossing at 1/2
        ([0.9, 0.8], [0.2, 0.1], 0.0),  # separable
    ],
)
def test_eer_hand_cases(pos, neg, expected):
    scores = np.r_[pos, neg]
    same = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    for drop in (True, False):
        assert m.eer(m.roc_curve(scores, same, drop)) == pytest.approx(expected)


def test_verification_1to1_reports_named_metrics():
    scores, same = random_pairs()
    out = m.verification_1to1(scores, same, fars=(1e-2,))
    assert set(out) == {"auc", "eer", "tar@far=0.01"}
    assert 0.7 < out["auc"] < 1 and 0 < out["eer"] < 0.5


def test_class_block_folds_survface_layout():
    same = np.r_[np.ones(5320, bool), np.zeros(5320, bool)]
    fold = m.class_block_folds(same, 532)
    assert np.bincount(fold).tolist() == [1064] * 10
    assert (fold[:532] == 0).all() and (fold[5320 : 5320 + 532] == 0).all()
    assert (fold[5320 - 532 : 5320] == 9).all() and (fold[-532:] == 9).all()


def test_survface_mean_accuracy_hand_case():
    # folds of 2 genuine + 2 impostor pairs; pairs interleaved (genuine, impostor, ...)
    # fold 0: genuine .9 .8, impostor .1 .6 -> best threshold in (.6, .8)
    # fold 1: genuine .85 .5, impostor .2 .4 -> best threshold in (.4, .5)
    # fold 0 at (.4, .5): .6 accepted -> 3/4; fold 1 at (.6, .8): .5 rejected -> 3/4
    scores = np.array([0.9, 0.1, 0.8, 0.6, 0.85, 0.2, 0.5, 0.4])
    same = np.array([1, 0, 1, 0, 1, 0, 1, 0], bool)
    accs = m.heldout_accuracies(scores, same, m.class_block_folds(same, 2))
    np.testing.assert_allclose(accs, [0.75, 0.75])
    assert m.survface_verification(scores, same, fold_size=2)["mean_acc"] == pytest.approx(0.75)


def test_survface_tar_at_far_and_auc_against_a_plain_sweep():
    rng = np.random.default_rng(3)
    same = np.r_[np.ones(400, bool), np.zeros(400, bool)]
    scores = np.clip(rng.normal(np.where(same, 0.5, 0.1), 0.2), -1, 1)
    dist = np.sqrt(2 - 2 * scores)
    rows = []
    for t in np.arange(0.2, 2.0 + 0.001, 0.001):
        rows.append((np.mean(dist[~same] < t), np.mean(dist[same] < t)))
    rows.sort(key=lambda r: r[0])  # stable: equal FARs stay in threshold order
    far, tar = np.array(rows).T
    out = m.survface_verification(scores, same, fold_size=40)
    for f in (0.3, 0.1, 0.01, 0.001):
        assert out[f"tar@far={f:g}"] == pytest.approx(np.interp(f, far, tar))
    assert out["auc"] == pytest.approx(np.trapz(tar, far))
    assert 0.5 < out["mean_acc"] < 1


def test_threshold_sweep_accepts_strictly_below():
    dist = np.array([0.5, 1.0, 0.5, 1.0, 1.5])
    same = np.array([1, 1, 0, 0, 0], bool)
    far, tar = m.threshold_sweep(dist, same, [0.5, 1.0, 2.0])
    np.testing.assert_allclose(far, [0, 1 / 3, 1])
    np.testing.assert_allclose(tar, [0, 0.5, 1])


# ---------------------------------------------------------------- closed-set identification


def devkit_brute_force(probe, gallery, probe_ids, gallery_ids, ranks):
    """TinyFace devkit, probe by probe: full stable sort, Market-1501 compute_AP loop."""
    cmc, aps = np.zeros(len(gallery)), []
    for p, pid in zip(probe, probe_ids, strict=True):
        order = np.argsort(-(gallery.astype(np.float64) @ p), kind="stable")
        good = set(np.flatnonzero(gallery_ids == pid).tolist())
        ap, old_recall, old_precision, hits, first = 0.0, 0.0, 1.0, 0, None
        for n, g in enumerate(order):
            if g in good:
                hits += 1
                first = n if first is None else first
            recall, precision = hits / len(good), hits / (n + 1)
            ap += (recall - old_recall) * (old_precision + precision) / 2
            old_recall, old_precision = recall, precision
            if hits == len(good):
                break
        cmc[first:] += 1
        aps.append(ap)
    cmc /= len(probe)
    return {f"rank{k}": cmc[k - 1] for k in ranks}, float(np.mean(aps))


def exact_unit_vectors(n, rng, dim=8):
    """Unit rows whose dot products are exact multiples of 1/4: ties everywhere."""
    one_hot = np.eye(dim)[rng.integers(0, dim, n)] * rng.choice([-1, 1], (n, 1))
    halves = np.zeros((n, dim))
    for i in range(n):
        halves[i, rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return np.where(rng.uniform(size=(n, 1)) < 0.3, one_hot, halves)


@pytest.mark.parametrize("ties", [False, True])
def test_closed_set_cmc_and_map_match_the_devkit_loop(ties):
    rng = np.random.default_rng(4)
    n_ids, ranks = 30, (1, 5, 10, 20, 50)
    centres = rng.normal(size=(n_ids, 16))
    probe_ids = rng.integers(0, n_ids, 60)
    match_ids = np.r_[np.arange(n_ids), rng.integers(0, n_ids, 40)]  # every id has a mate
    gallery_ids = np.r_[match_ids, np.full(200, -100)]  # + distractors
    if ties:  # each identity's own exact vector, or a random one: exact ties everywhere
        own = exact_unit_vectors(n_ids, rng)
        keep = lambda ids, p: np.where(rng.uniform(size=(len(ids), 1)) < p, own[ids], 0)
        probe = keep(probe_ids, 0.5)
        gallery = np.r_[keep(match_ids, 0.6), np.zeros((200, 8))]
        lost = ~probe.any(1)
        probe[lost] = exact_unit_vectors(lost.sum(), rng)
        lost = ~gallery.any(1)
        gallery[lost] = exact_unit_vectors(lost.sum(), rng)
    else:
        probe = centres[probe_ids] + rng.normal(0, 1.5, (len(probe_ids), 16))
        gallery = np.r_[
            centres[match_ids] + rng.normal(0, 1.5, (len(match_ids), 16)),
            rng.normal(0, 2, (200, 16)),
        ]
        probe /= np.linalg.norm(probe, axis=1, keepdims=True)
        gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    got = ident.closed_set_identification(probe, gallery, probe_ids, gallery_ids, ranks, chunk=7)
    cmc, map_ = devkit_brute_force(probe, gallery, probe_ids, gallery_ids, ranks)
    for k in ranks:
        assert got[f"rank{k}"] == pytest.approx(cmc[f"rank{k}"], abs=1e-12)
    assert got["mAP"] == pytest.approx(map_, abs=1e-12)
    assert 0 < got["rank1"] < got["rank50"] <= 1  # a real task, neither trivial nor hopeless


def test_closed_set_needs_a_mate_for_every_probe():
    with pytest.raises(ValueError, match="no mate"):
        ident.closed_set_identification(np.eye(2), np.eye(2), [0, 5], [0, 1])


def test_scface_rank1_is_one_line():
    gallery = np.eye(4)
    probe = np.eye(4)[[0, 1, 2, 3]] + [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [2, 0, 0, 0]]
    r1 = ident.closed_set_identification(probe, gallery, [0, 1, 2, 3], [0, 1, 2, 3], ranks=(1,))
    assert r1["rank1"] == 0.75


# ---------------------------------------------------------------- open-set identification


def survface_brute_force(gallery, gallery_ids, mated, mated_ids, unmated, rank, fpirs):
    ids = sorted(set(gallery_ids.tolist()))
    protos = np.array([gallery[gallery_ids == i].mean(0) for i in ids])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    k_sim, u_sim = unit(mated) @ protos.T, unit(unmated) @ protos.T
    top = np.argsort(-k_sim, axis=1)[:, :rank]
    k_val = np.take_along_axis(k_sim, top, 1)
    label = np.array([ids.index(i) for i in mated_ids])
    u_max = u_sim.max(1)
    rows = []
    for th in np.linspace(min(k_val.min(), u_max.min()), u_max.max(), 1000):
        dir_ = np.mean(((top == label[:, None]) & (k_val > th)).any(1))
        rows.append((dir_, np.mean(u_max > th)))
    dirs, fars = np.array(rows).T
    out = {f"tpir{rank}@fpir={f:g}": dirs[np.argmin(np.abs(fars - f))] for f in fpirs}
    out["auc"] = skm.auc(fars, dirs)
    return out


def test_survface_open_set_matches_the_notebook_loop():
    rng = np.random.default_rng(5)
    n_ids, dim = 40, 16
    centres = rng.normal(size=(n_ids, dim))
    gallery_ids = rng.permutation(np.repeat(np.arange(100, 100 + n_ids), 3))
    gallery = centres[gallery_ids - 100] + rng.normal(0, 1.0, (len(gallery_ids), dim))
    mated_ids = rng.integers(100, 100 + n_ids, 150)
    mated = centres[mated_ids - 100] + rng.normal(0, 1.8, (150, dim))
    unmated = rng.normal(0, 1.5, (300, dim))
    fpirs = (0.01, 0.1, 0.2, 0.3)
    got = ident.survface_open_set(
        gallery, gallery_ids, mated, mated_ids, unmated, rank=5, fpirs=fpirs, chunk=32
    )
    ref = survface_brute_force(gallery, gallery_ids, mated, mated_ids, unmated, 5, fpirs)
    assert got.keys() == ref.keys()
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-6), k
    assert 0 < got["tpir5@fpir=0.01"] < got["tpir5@fpir=0.3"] < 1


def ijb_brute_force(probe, probe_ids, gallery, gallery_ids, fpirs):
    """ijb_evals.py evaluation_1N, probe by probe."""
    sim = probe @ gallery.T
    top, pos, neg, non = {1: 0, 5: 0, 10: 0}, [], [], []
    for i, q in enumerate(probe_ids):
        if q in gallery_ids:
            mate = np.argwhere(gallery_ids == q)[0, 0]
            ranked = np.argsort(sim[i])[::-1]
            for k in top:
                top[k] += mate in ranked[:k]
            pos.append(sim[i][gallery_ids == q][0])
            neg.append(sim[i][gallery_ids != q])
        else:
            non.append(sim[i])
    pos, neg = np.array(pos), np.array(neg)
    correct = pos > neg.max(1)
    s = np.sort(np.array(non).max(1))[::-1]
    out = {f"top{k}": v for k, v in top.items()}
    for f in fpirs:
        thresh = s[max(int(len(s) * f) - 1, 0)]
        out[f"tpir@fpir={f:g}"] = np.sum(correct & (pos > thresh)) / len(pos)
    return out


def test_ijb_open_set_matches_the_reference_loop():
    rng = np.random.default_rng(6)
    dim, subjects = 16, np.arange(500, 560)
    centres = {s: rng.normal(size=dim) for s in subjects}
    galleries = {"G1": subjects[:30], "G2": subjects[30:]}  # disjoint, one template a subject
    probe_ids = rng.choice(subjects, 200)
    probe = np.array([centres[s] for s in probe_ids]) + rng.normal(0, 1.3, (200, dim))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    feats = {}
    for g, ids in galleries.items():
        f = np.array([centres[s] for s in ids]) + rng.normal(0, 0.5, (len(ids), dim))
        feats[g] = (f / np.linalg.norm(f, axis=1, keepdims=True), ids)
    fpirs = (1e-2, 1e-1, 1.0)
    got = ident.ijb_identification(probe, probe_ids, feats, fpirs)
    refs = {g: ijb_brute_force(probe, probe_ids, f, i, fpirs) for g, (f, i) in feats.items()}
    for g, ref in refs.items():
        for f in fpirs:
            assert got[f"{g}.tpir@fpir={f:g}"] == pytest.approx(ref[f"tpir@fpir={f:g}"])
        assert (
            ident.ijb_open_set(probe, probe_ids, *feats[g], fpirs, chunk=9)["top5"] == ref["top5"]
        )
    for k in (1, 5, 10):
        assert got[f"top{k}"] == pytest.approx(sum(r[f"top{k}"] for r in refs.values()) / 200)
    assert 0 < got["top1"] < 1 and 0 < got["tpir@fpir=0.1"] < 1


# ---------------------------------------------------------------- IJB templates


def test_template_pooling_hand_built():
    e = np.array([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1.0], [1.0, 1, 1, 1]])
    flip = np.array([[1.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0], [0, 0, 0, 0]])
    templates = np.array([7, 7, 7, 3, 7])
    medias = np.array([10, 10, 11, 12, 13])  # template 7: media 10 (2 frames), 11, 13
    faceness = np.array([0.5, 1.0, 0.8, 0.9, 0.25])
    ids, feats = template_features(e, templates, medias, faceness, emb_flip=flip)
    f = e + flip  # F2 features: [2,0,0,0], [0,2,0,0], [0,0,4,0], [0,0,0,2], [1,1,1,1]
    media10 = (0.5 * f[0] + 1.0 * f[1]) / 2  # [0.5, 1, 0, 0]
    t7 = media10 + 0.8 * f[2] + 0.25 * f[4]  # [0.75, 1.25, 3.45, 0.25]
    assert ids.tolist() == [3, 7]
    np.testing.assert_allclose(feats[1], t7 / np.linalg.norm(t7), rtol=1e-6)
    np.testing.assert_allclose(feats[0], [0, 0, 0, 1], atol=1e-7)


def test_template_pair_scores_are_the_dot_products_in_pair_order():
    rng = np.random.default_rng(7)
    ids = np.sort(rng.choice(10_000, 50, replace=False))
    feats = rng.normal(size=(50, 8)).astype(np.float32)
    t1, t2 = rng.choice(ids, 400), rng.choice(ids, 400)
    t2[:5] = t1[:5]  # self pairs
    scores = score_template_pairs(ids, feats, t1, t2, block_rows=7)
    expected = np.einsum("ij,ij->i", feats[rows_of(ids, t1)], feats[rows_of(ids, t2)])
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError):
        rows_of(ids, [ids[0], 10_001])


def test_rows_of_any_id_type():
    np.testing.assert_array_equal(rows_of(np.array(["a", "c"]), ["c", "a", "c"]), [1, 0, 1])
    np.testing.assert_array_equal(rows_of(np.array([-5, 3]), [3, -5]), [1, 0])
    with pytest.raises(KeyError):
        rows_of(np.array(["a", "c"]), ["b"])
