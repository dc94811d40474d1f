"""Is the synthetic demo task learnt? The registered champion vs the same network untrained.

Evaluates both with the pipeline's own protocol (HR-HR and HR-LR verification, 10-fold accuracy)
on the demo test split, and prints a table. Run after `make run`:

    .venv/bin/python benchmarks/demo_learnability.py [--config configs/demo.yaml]
"""

import argparse
import json
import tempfile

import numpy as np
import yaml

from vlrface.config.keras import parse
from vlrface.data import casia
from vlrface.embedders import KerasEmbedder
from vlrface.materializers import load_keras
from vlrface.models.keras import build_model
from vlrface.preprocess import load_face
from vlrface.protocols.verification import evaluate_pairs, make_pairs
from vlrface.stack import active_tracking_uri
from vlrface.training.keras import seed_everything


def champion_backbone(name: str):
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    client = MlflowClient(active_tracking_uri())
    version = client.get_model_version_by_alias(name, "champion")
    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifacts(
            f"{version.source}/backbone.keras", dst_path=tmp, tracking_uri=active_tracking_uri()
        )
        return load_keras(path), version.version


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    args = ap.parse_args()
    cfg = parse(yaml.safe_load(open(args.config))["parameters"], args.config)
    manifest = casia.read_manifest(cfg.data.root, cfg.data.test_fraction, cfg.seed)
    test = manifest[manifest.split == "test"].reset_index(drop=True)
    pairs = make_pairs(test, cfg.evaluation.pairs, cfg.seed)
    images = np.stack([load_face(cfg.data.root, p, cfg.data.image_size) for p in test.path])
    seed_everything(cfg.seed)
    trained, version = champion_backbone(cfg.registry.model_name)
    rows = {}
    for label, model in [("untrained", build_model(cfg.model)), (f"champion v{version}", trained)]:
        metrics, _ = evaluate_pairs(
            KerasEmbedder(model),
            images,
            pairs,
            cfg.data.name,
            cfg.evaluation.resolutions,
            cfg.evaluation.far,
            cfg.evaluation.folds,
            progress=False,
        )
        rows[label] = {k: v for k, v in metrics.items() if k.endswith(".acc")}
    keys = list(next(iter(rows.values())))
    print(f"{'model':<16}" + "".join(f"{k.split('.', 2)[2]:>18}" for k in keys))
    for label, m in rows.items():
        print(f"{label:<16}" + "".join(f"{m[k]:>18.4f}" for k in keys))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
