"""Metric core at full benchmark scale on synthetic embeddings, against straightforward versions.

    .venv/bin/python benchmarks/eval_metrics.py [--repeats 5] [--naive-probes 300] [--skip-naive]

* IJB-C 1:1: 23,124 templates (128-d), 15,658,489 pairs (19,557 genuine). Ours:
  ``score_template_pairs`` (blocked Gram GEMM) + ``verification_1to1`` (ROC from sorted counts,
  AUC, EER, TAR@FAR by the IJB nearest rule). Straightforward: insightface's
  ``verification_11`` (gather both templates' features per batch of 100,000 pairs, multiply,
  sum) + ``sklearn.metrics.roc_curve`` + ``auc`` at full scale.
* TinyFace 1:N: 3,728 probes vs 4,443 mates + 153,428 distractors (128-d). Ours:
  ``closed_set_identification`` (chunked GEMM, one count per mate). Straightforward: the devkit
  per probe (full stable argsort of the 157,871 scores, AP loop transcribed with cumsums), on
  the first ``--naive-probes`` probes, extrapolated linearly to 3,728.

Times: best and median wall-clock seconds of ``--repeats`` and the median CPU seconds (all
threads; robust to other users' load on a shared machine). Peak RSS is the process's resident
set high-water mark while the step runs (sampled every 2 ms), minus its RSS before the step.
"""

import argparse
import os
import threading
import time

import numpy as np

from vlrface.protocols.identification import closed_set_identification
from vlrface.protocols.metrics import verification_1to1
from vlrface.protocols.templates import score_template_pairs

IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRss:
    """Peak resident set size above the level at entry, sampled by a thread."""

    def __enter__(self):
        self.base = self.peak = rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss())
        self.mib = (self.peak - self.base) / 2**20


def timed(fn, repeats):
    """``(result, [(wall s, cpu s)...], peak MiB)`` of ``repeats`` calls."""
    times, peak = [], 0.0
    for _ in range(repeats):
        with PeakRss() as mem:
            t, c = time.perf_counter(), time.process_time()
            out = fn()
            times.append((time.perf_counter() - t, time.process_time() - c))
        peak = max(peak, mem.mib)
    return out, times, peak


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def ijb_data(rng, n_templates=23_124, n_pairs=15_658_489, n_genuine=19_557, dim=128):
    subject = rng.integers(0, 3_531, n_templates)
    centres = rng.normal(size=(3_531, dim))
    feats = unit(centres[subject] + rng.normal(0, 1.2, (n_templates, dim)))
    ids = np.sort(rng.choice(200_000, n_templates, replace=False))  # sparse template ids
    by_subject = np.argsort(subject, kind="stable")
    place = np.empty(n_templates, int)
    place[by_subject] = np.arange(n_templates)
    size = np.bincount(subject, minlength=3_531)[subject]
    within = place - np.searchsorted(subject[by_subject], subject)  # rank within its subject
    a = rng.choice(np.flatnonzero(size >= 2), n_genuine)
    b = by_subject[place[a] - within[a] + (within[a] + rng.integers(1, size[a])) % size[a]]
    a_neg = rng.integers(0, n_templates, n_pairs - n_genuine, dtype=np.int32)
    b_neg = rng.integers(0, n_templates, n_pairs - n_genuine, dtype=np.int32)
    while (clash := np.flatnonzero(subject[a_neg] == subject[b_neg])).size:
        b_neg[clash] = rng.integers(0, n_templates, clash.size)
    p1 = np.r_[a, a_neg].astype(np.int32)
    p2 = np.r_[b, b_neg].astype(np.int32)
    same = subject[p1] == subject[p2]
    return ids, feats, ids[p1], ids[p2], same


def naive_ijb(ids, feats, t1, t2, same, batch=100_000):
    from sklearn.metrics import auc, roc_curve

    row = np.zeros(ids.max() + 1, int)
    row[ids] = np.arange(len(ids))
    score = []
    for s in range(0, len(t1), batch):
        f1, f2 = feats[row[t1[s : s + batch]]], feats[row[t2[s : s + batch]]]
        score.extend(np.sum(f1 * f2, -1))
    score = np.array(score)
    fpr, tpr, _ = roc_curve(same, score)
    out = {"auc": auc(fpr, tpr)}
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    out.update({f"tar@far={f:g}": tpr[np.argmin(abs(fpr - f))] for f in IJB_FARS})
    return out, score


def tinyface_data(rng, n_ids=2_569, n_probe=3_728, n_match=4_443, n_distract=153_428, dim=128):
    centres = rng.normal(size=(n_ids, dim))
    probe_ids = np.r_[np.arange(n_ids), rng.integers(0, n_ids, n_probe - n_ids)]
    match_ids = np.r_[np.arange(n_ids), rng.integers(0, n_ids, n_match - n_ids)]
    probe = unit(centres[probe_ids] + rng.normal(0, 1.3, (n_probe, dim)))
    match = unit(centres[match_ids] + rng.normal(0, 1.3, (n_match, dim)))
    distract = unit(rng.normal(size=(n_distract, dim)))
    gallery = np.r_[match, distract]
    gallery_ids = np.r_[match_ids, np.full(n_distract, -100)]
    return probe, probe_ids, gallery, gallery_ids


def naive_tinyface(probe, probe_ids, gallery, gallery_ids, ranks=(1, 5, 10, 20, 50)):
    """Devkit, probe by probe: full stable sort, CMC, compute_AP as cumulative sums."""
    cmc, aps = np.zeros(len(gallery)), []
    for p, pid in zip(probe, probe_ids, strict=True):
        good = (gallery_ids == pid)[np.argsort(-(gallery @ p), kind="stable")]
        last = np.flatnonzero(good)[-1]
        hits = np.cumsum(good[: last + 1])
        recall = np.r_[0.0, hits / hits[-1]]
        precision = np.r_[1.0, hits / np.arange(1, last + 2)]
        aps.append(np.sum(np.diff(recall) * (precision[:-1] + precision[1:]) / 2))
        cmc[np.argmax(good) :] += 1
    out = {f"rank{k}": cmc[k - 1] / len(probe) for k in ranks}
    out["mAP"] = float(np.mean(aps))
    return out


def row(task, method, times, mib, note=""):
    wall, cpu = np.array(times).T
    mem = f"{mib:8.0f}" if mib is not None else " " * 8
    figures = f"{wall.min():7.2f} {np.median(wall):7.2f} {np.median(cpu):7.2f}"
    return f"{task:10s} {method:47s} {figures} {mem}  {note}"


def bench_ijb(rng, repeats: int, naive: bool) -> tuple[list, list]:
    ids, feats, t1, t2, same = ijb_data(rng)
    lines, checks = [], []
    scores, times, mib = timed(lambda: score_template_pairs(ids, feats, t1, t2), repeats)
    lines.append(row("IJB-C 1:1", "ours: score pairs (blocked GEMM)", times, mib))
    ours, times, mib = timed(lambda: verification_1to1(scores, same, IJB_FARS), repeats)
    lines.append(row("IJB-C 1:1", "ours: ROC + AUC + EER + TAR@FAR (nearest)", times, mib))
    _, times, mib = timed(
        lambda: verification_1to1(score_template_pairs(ids, feats, t1, t2), same, IJB_FARS),
        repeats,
    )
    lines.append(row("IJB-C 1:1", "ours: total", times, mib, "target <= 15 s"))
    _, times, _ = timed(lambda: np.sort(scores[~same]), repeats)
    lines.append(row("IJB-C 1:1", "reference point: np.sort of impostor scores", times, None))
    if naive:
        (ref, ref_scores), times, mib = timed(lambda: naive_ijb(ids, feats, t1, t2, same), 1)
        lines.append(row("IJB-C 1:1", "naive: gather-multiply-sum + sklearn ROC", times, mib))
        diff = max(abs(ours[k] - ref[k]) for k in ref)
        checks.append(
            f"IJB-C: max |score ours - naive| = {np.abs(scores - ref_scores).max():.1e}; "
            f"max |metric ours - naive| = {diff:.1e} (one genuine pair = {1 / same.sum():.1e})"
        )
        on_ref = verification_1to1(ref_scores, same, IJB_FARS)
        exact = all(on_ref[k] == ref[k] for k in ref if k != "auc")
        auc_gap = abs(on_ref["auc"] - ref["auc"])
        checks.append(
            f"IJB-C: ours on the naive scores: TAR@FAR identical to sklearn's: {exact}, "
            f"|AUC diff| {auc_gap:.1e}"
        )
    checks.append("IJB-C ours: " + ", ".join(f"{k} {v:.4f}" for k, v in ours.items()))
    return lines, checks


def bench_tinyface(rng, repeats: int, naive_probes: int) -> tuple[list, list]:
    probe, probe_ids, gallery, gallery_ids = tinyface_data(rng)
    lines, checks = [], []
    ours, times, mib = timed(
        lambda: closed_set_identification(probe, gallery, probe_ids, gallery_ids), repeats
    )
    method = "ours: CMC + mAP (chunked GEMM, count per mate)"
    lines.append(row("TinyFace", method, times, mib, "target <= 5 s"))
    buf = np.empty((256, len(gallery)), np.float32)
    chunks = np.split(probe, range(256, len(probe), 256))
    gemm = lambda: [np.matmul(p, gallery.T, out=buf[: len(p)]) for p in chunks]
    _, times, _ = timed(gemm, repeats)
    lines.append(row("TinyFace", "reference point: the GEMM alone", times, None))
    checks.append("TinyFace ours: " + ", ".join(f"{k} {v:.4f}" for k, v in ours.items()))
    if naive_probes:
        n, scale = naive_probes, len(probe) / naive_probes
        sub = probe[:n], probe_ids[:n]
        ref, times, mib = timed(lambda: naive_tinyface(*sub, gallery, gallery_ids), 1)
        method = f"naive: per-probe argsort, x{scale:.1f} from {n}"
        lines.append(row("TinyFace", method, np.array(times) * scale, mib))
        ours_sub = closed_set_identification(sub[0], gallery, sub[1], gallery_ids)
        diff = max(abs(ours_sub[k] - ref[k]) for k in ref)
        checks.append(f"TinyFace, first {n} probes: max |ours - naive| over CMC, mAP = {diff:.1e}")
    return lines, checks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--naive-probes", type=int, default=300, help="0: no naive TinyFace run")
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.1f}; {args.repeats} repeats")
    print("wall s: best wall-clock; median: median wall-clock; cpu s: median CPU, all threads\n")
    head = f"{'wall s':>7s} {'median':>7s} {'cpu s':>7s} {'peak MiB':>8s}"
    print(f"{'task':10s} {'method':47s} {head}", flush=True)
    ijb_lines, ijb_checks = bench_ijb(rng, args.repeats, not args.skip_naive)
    print("\n".join(ijb_lines), flush=True)
    naive_probes = 0 if args.skip_naive else args.naive_probes
    tiny_lines, tiny_checks = bench_tinyface(rng, args.repeats, naive_probes)
    print("\n".join(tiny_lines))
    print("\n" + "\n".join(ijb_checks + tiny_checks))


if __name__ == "__main__":
    main()
