"""train_binaryfacenet on REAL faces: a few CelebA-1k identities (copied into a temporary
insightface pack, never into the repo), fine-tuned from the authors' checkpoint with VLR
augmentation, evaluated on held-out identities, versioned by content (no DVC), registered.

Needs ../shared (skipped without it); about a minute or two on two cores."""

import os

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT
from vlrface.data import recordio

pytestmark = pytest.mark.pipeline

IDENTITIES = 12


def mini_pack(src, dst, identities: int) -> int:
    """The first ``identities`` classes of the pack ``src`` as a pack under ``dst``; returns the
    number of images."""
    from vlrface.data.insightface import read_layout

    reader = recordio.IndexedRecordReader(src / "train.rec")
    _, ranges = read_layout(reader)
    dst.mkdir(parents=True)
    key, spans = 1, []
    with recordio.RecordWriter(dst / "train.rec") as writer:
        for cls in range(identities):
            start, end = (int(v) for v in ranges[cls])
            spans.append((key, key + end - start))
            for old in range(start, end):
                header, jpeg = recordio.unpack(reader.read(old))
                writer.write(key, recordio.pack(recordio.IRHeader(0, [cls, 1.0], key, 0), jpeg))
                key += 1
        n = key - 1
        writer.write(0, recordio.pack(recordio.IRHeader(0, [n + 1, n + 1 + identities], 0, 0), b""))
        for cls, (a, b) in enumerate(spans):
            ident = n + 1 + cls
            writer.write(ident, recordio.pack(recordio.IRHeader(0, [a, b], ident, 0), b""))
    (dst / "property").write_text(f"{identities},112,112\n{n}\n")
    return n


def test_finetune_from_checkpoint_on_real_faces(shared_dir, session_tmp):
    from mlflow import MlflowClient
    from zenml.client import Client

    from pipelines import train_binaryfacenet
    from vlrface.data.versioning import content_version
    from vlrface.stack import ensure_local_stack

    pack = session_tmp / "celeba_mini" / "faces"
    n = mini_pack(shared_dir / "data" / "celeba-1k" / "faces_celeba_112x112", pack, IDENTITIES)
    assert n > 10 * IDENTITIES
    ensure_local_stack(session_tmp / "mlflow", ["train_binaryfacenet"])
    with open(ROOT / "configs" / "celeba_vlr_finetune.yaml") as fh:
        cfg = yaml.safe_load(fh)
    p = cfg["parameters"]
    p["data"].update(root=str(pack), test_fraction=0.3)
    p["model"]["pretrained"] = str(
        shared_dir / "reference" / "binaryfacenet_ms1m_retina_epoch19.h5"
    )
    # three smoke steps at a negligible lr (BatchNorm frozen by the profile), so that the
    # full-resolution figure below measures the checkpoint as the pipeline loaded it, not how far
    # three steps of 16 faces move it (on 60 pairs the profile's lr moves it by a few points)
    p["finetune"].update(
        steps_per_epoch=3, batch_size=16, lr=1e-6, checkpoint_dir=str(session_tmp / "ck_real"),
        embedding_cache=str(session_tmp / "emb_real"),
    )  # fmt: skip
    p["evaluation"].update(pairs=60, folds=5, resolutions=[7, 14])
    p["registry"] = {"model_name": "celeba_mini", "compare_metric": "eval.celeba.hr_lr.14.acc"}
    path = session_tmp / "celeba_mini.yaml"
    path.write_text(yaml.safe_dump(cfg))

    response = train_binaryfacenet.with_options(config_path=str(path))()
    run = Client().get_pipeline_run(response.id)
    steps = {name: str(step.status) for name, step in run.steps.items()}
    assert steps["load_pretrained"] == "completed" and steps["register_model"] == "completed"

    client = MlflowClient(os.environ["VLRFACE_TEST_MLFLOW_URI"])
    exp = client.get_experiment_by_name("train_binaryfacenet")
    (mlrun,) = client.search_runs([exp.experiment_id], f"attributes.run_name = '{run.name}'")
    tags, metrics = mlrun.data.tags, mlrun.data.metrics
    assert tags["data.version_source"] == "content-md5"
    assert tags["data.dvc_md5"] == content_version(pack).md5
    assert tags["data.synthetic"] == "false"
    # the profile registers the fine-tune and the checkpoint side by side (output_ensemble)
    assert mlrun.data.params["finetune.run.output_ensemble"] == "0.5"
    assert metrics["export.lce.parity.cosine_min"] > 0.97
    # the checkpoint recognises real held-out faces at full resolution
    assert metrics["eval.celeba.hr_hr.112.acc"] > 0.75
    assert np.isfinite(metrics["eval.celeba.hr_lr.7.acc"])
    # the head started at the checkpoint's class means (embedding table kept in the cache)
    assert list((session_tmp / "emb_real").glob("*.npy"))
    versions = client.search_model_versions("name='celeba_mini'")
    assert len(versions) == 1
