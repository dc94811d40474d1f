"""Real faces: the authors' checkpoint vs its VLR fine-tune vs the distilled LCE student.

    PYTHONPATH=. .venv/bin/python benchmarks/real_faces.py \\
        [--checkpoint ../shared/reference/binaryfacenet_ms1m_retina_epoch19.h5] \\
        [--finetuned models:/binaryfacenet_celeba_vlr-finetuned/<v> | file.keras] \\
        [--student models:/binaryfacenet_lce_celeba_distill-finetuned/<v> | file.keras] \\
        [--celeba ../shared/data/celeba-1k/faces_celeba_112x112] \\
        [--london ../shared/data/london-set/aligned112] [--cache build/real_faces] \\
        [--json out.json] [--celeba-id] [--train-identities]

Without ``--finetuned`` / ``--student`` the latest registered version of
``binaryfacenet_celeba_vlr-finetuned`` / ``binaryfacenet_lce_celeba_distill-finetuned`` (the
Keras backbones the profiles ``configs/celeba_vlr_finetune.yaml`` / ``celeba_distill_lce.yaml``
register) is read from the active stack's MLflow registry (or ``MLFLOW_TRACKING_URI``).

Per model, on real faces, HR gallery vs probes at full resolution and 28 / 14 / 7 px (inter-area
down and up, no flip-averaging: the profiles' evaluation settings):

* **CelebA hold-out, pairs** (``celeba``): the training pipeline's own in-run protocol
  (``verification.evaluate_heldout``) on the identities ``load_data`` holds out (seed 0, 10 %):
  the same 3,000 pairs, 10-fold accuracy. For a fine-tuned model this re-measures its run's
  ``eval.celeba.*`` metrics; for the checkpoint it is the baseline the goals are stated against.
* With ``--train-identities``, **CelebA training identities, pairs** (``celeba_train``): the
  same protocol on as many training identities as the hold-out has (a seeded sample). The gap
  to the hold-out, set against the checkpoint's own gap (it never saw either), is how far a
  model has fitted the identities it trained on.
* **London set** and, with ``--celeba-id``, **CelebA hold-out, identification**
  (``identities`` protocol): each
  identity's first face is the gallery (London: neutral), the others are probes (London:
  smiling); 10-fold accuracy over mated + as many non-mated pairs, and rank-1.

For a registered version, the CelebA pairs figures are read from the MLflow run that trained it
(its evaluate step ran exactly this protocol on the same pairs) unless ``--remeasure``; the
table says where each figure comes from.

Each (model, benchmark) result is kept in ``--cache`` under the model file's sha256, so a rerun
only embeds what changed. Prints a Markdown table (README "Real faces").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

RES = (28, 14, 7)
NAMES = {
    "finetuned": "binaryfacenet_celeba_vlr-finetuned",
    "student": "binaryfacenet_lce_celeba_distill-finetuned",
}


def use_registry() -> None:
    """``MLFLOW_TRACKING_URI``, else the active ZenML stack's MLflow (where the profiles
    register)."""
    import mlflow

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        from vlrface.stack import active_tracking_uri

        mlflow.set_tracking_uri(active_tracking_uri())


def latest_version_uri(name: str) -> str:
    """``models:/<name>/<latest version>`` on the active registry."""
    from mlflow import MlflowClient

    use_registry()
    versions = MlflowClient().search_model_versions(f"name='{name}'")
    if not versions:
        sys.exit(f"no registered version of {name}: run its profile or pass the model")
    return f"models:/{name}/{max(int(v.version) for v in versions)}"


def model_file(spec: str) -> Path:
    """The local .keras/.h5 file of ``spec`` (a file, or a models:/ / runs:/ URI)."""
    if spec.startswith(("models:/", "runs:/")):
        import mlflow

        use_registry()
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=spec))
        found = [p for s in (".keras", ".h5") for p in sorted(folder.rglob(f"*{s}"))]
        if not found:
            sys.exit(f"{spec}: no .keras or .h5 model inside")
        return found[0]
    path = Path(spec)
    if not path.is_file():
        sys.exit(f"{spec}: model file not found")
    return path


def run_metrics(spec: str, label: str = "celeba") -> tuple[dict, str] | None:
    """The ``eval.<label>.*`` metrics of the run that registered ``models:/<name>/<version>``."""
    if not spec.startswith("models:/"):
        return None
    from mlflow import MlflowClient

    name, version = spec.removeprefix("models:/").split("/")
    client = MlflowClient()
    run_id = client.get_model_version(name, version).run_id
    found = {
        k: v
        for k, v in client.get_run(run_id).data.metrics.items()
        if k.startswith(f"eval.{label}.")
    }
    return (found, run_id) if f"eval.{label}.hr_lr.7.acc" in found else None


def load(path: Path):
    from vlrface.embedders import KerasEmbedder

    if path.suffix == ".h5":
        from vlrface.models.keras.checkpoint import load_h5

        return KerasEmbedder(load_h5(path))
    from vlrface.keras_materializer import load_keras

    return KerasEmbedder(load_keras(str(path)))


def celeba_pairs(embedder, root: str, args, trained: bool = False) -> dict:
    """The pipeline's in-run held-out verification (``load_data``'s identity split). With
    ``trained``, the same protocol on as many of the TRAINING identities (a seeded sample),
    labelled ``celeba_train``: the gap between the two is what a model has fitted to the
    identities it trained on, beyond what it learned of faces in general."""
    import numpy as np

    from vlrface.config.common import DataConfig, EvalConfig
    from vlrface.data.records import identity_split
    from vlrface.data.training_set import training_rows
    from vlrface.protocols.verification import evaluate_heldout

    data = DataConfig(
        root=root, layout="casia_webface_pack", dvc_file=None, synthetic=False,
        name="celeba_train" if trained else "celeba", test_fraction=args.test_fraction,
    )  # fmt: skip
    rows = training_rows(data)
    split = np.array([identity_split(i, args.seed, data.test_fraction) for i in rows.identity])
    if trained:
        held_out = rows.identity[split == "test"].nunique()
        train_ids = sorted(rows.identity[split == "train"].unique())
        picked = np.random.default_rng([args.seed, 0x7A]).choice(train_ids, held_out, False)
        split = np.where(rows.identity.isin(picked), "test", "train")
    rows = rows.assign(split=split)
    ev = EvalConfig(resolutions=list(RES), pairs=args.pairs, flip=False, down="area", up="area")
    metrics, _, _ = evaluate_heldout(embedder, rows, data, ev, args.seed)
    return metrics


def identities(embedder, root: str, label: str, args, **kw) -> dict:
    from vlrface.protocols.identities import run_identities

    metrics, art = run_identities(
        embedder, root, resolutions=RES, flip=False, label=label, seed=args.seed, **kw
    )
    return {**metrics, f"eval.{label}.counts": art["counts"]}


def row(m: dict, label: str, metric: str) -> list[str]:
    keys = [f"eval.{label}.hr_hr.112.{metric}"] + [f"eval.{label}.hr_lr.{r}.{metric}" for r in RES]
    return [f"{100 * m[k]:.1f}" if k in m else "-" for k in keys]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--checkpoint", default="../shared/reference/binaryfacenet_ms1m_retina_epoch19.h5"
    )
    ap.add_argument("--finetuned", help="default: latest " + NAMES["finetuned"])
    ap.add_argument("--student", help="default: latest " + NAMES["student"])
    ap.add_argument("--celeba", default="../shared/data/celeba-1k/faces_celeba_112x112")
    ap.add_argument("--london", default="../shared/data/london-set/aligned112")
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-fraction", type=float, default=0.1)
    ap.add_argument("--cache", default="build/real_faces")
    ap.add_argument("--only", nargs="+", choices=("checkpoint", "finetuned", "student"))
    ap.add_argument(
        "--celeba-id", action="store_true",
        help="also the identities protocol on the CelebA hold-out (rank-1; another full embedding)",
    )  # fmt: skip
    ap.add_argument(
        "--train-identities", action="store_true",
        help="also the CelebA pairs protocol on as many training identities (over-fitting)",
    )  # fmt: skip
    ap.add_argument(
        "--remeasure", action="store_true",
        help="embed the CelebA pairs again even where the training run logged them",
    )  # fmt: skip
    ap.add_argument("--json", help="write every figure here")
    args = ap.parse_args()

    specs = {
        "checkpoint": args.checkpoint,
        "finetuned": args.finetuned,
        "student": args.student,
    }
    for who in ("finetuned", "student"):
        if specs[who] is None and (not args.only or who in args.only):
            specs[who] = latest_version_uri(NAMES[who])
    benches = {
        "celeba": lambda e: celeba_pairs(e, args.celeba, args),
        "celeba_id": lambda e: identities(
            e,
            args.celeba,
            "celeba_id",
            args,
            test_fraction=args.test_fraction,
            split_seed=args.seed,
        ),  # fmt: skip
        "celeba_train": lambda e: celeba_pairs(e, args.celeba, args, trained=True),
        "london": lambda e: identities(e, args.london, "london", args),
    }
    if not args.celeba_id:
        del benches["celeba_id"]
    if not args.train_identities:
        del benches["celeba_train"]
    settings = [args.pairs, args.seed, args.test_fraction, RES, args.celeba, args.london]
    results: dict = {}
    for who, spec in specs.items():
        if spec is None or (args.only and who not in args.only):
            continue
        path = model_file(spec)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        results[who] = {"model": spec, "sha256": sha, "source": {}}
        embedder = None
        logged = None if args.remeasure else run_metrics(spec)
        for bench, fn in benches.items():
            if bench == "celeba" and logged is not None:
                results[who].update(logged[0])
                results[who]["source"][bench] = f"MLflow run {logged[1]}"
                continue
            results[who]["source"][bench] = "measured"
            key = hashlib.sha256(json.dumps([sha, bench, settings]).encode()).hexdigest()[:24]
            cached = Path(args.cache) / f"{who}-{bench}-{key}.json"
            if cached.is_file():
                found = json.loads(cached.read_text())
            else:
                embedder = embedder or load(path)
                print(f"{who}: {bench} ...", file=sys.stderr, flush=True)
                found = fn(embedder)
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps(found, indent=1))
            results[who].update(found)

    head = "| model | benchmark | metric | HR-HR | HR-LR 28 | HR-LR 14 | HR-LR 7 |"
    lines = [head, "|" + "---|" * 7]
    for who, m in results.items():
        for label, title, metrics in (
            ("celeba", "CelebA-1k hold-out, 3,000 pairs", ("acc",)),
            ("celeba_train", "CelebA-1k training identities, 3,000 pairs", ("acc",)),
            ("celeba_id", "CelebA-1k hold-out, 1st face gallery", ("acc", "rank1")),
            ("london", "London set, neutral vs smiling", ("acc", "rank1")),
        ):
            if label not in m.get("source", {}):
                continue
            for metric in metrics:
                lines.append(
                    f"| {who} | {title} | {metric} | " + " | ".join(row(m, label, metric)) + " |"
                )
    print("\n".join(lines))
    for who, m in results.items():
        print(f"{who}: {m['model']} (sha256 {m['sha256'][:12]}); {m['source']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
