"""The PyTorch track's pipelines: one step graph (``torch_graph``) under two names.

``train_squeezefaceposenet``: MS1M pre-training, then VGGFace2 fine-tuning of SqueezeFacePoseNet
(the SqueezeFacePoseNet paper's recipe), exported to ONNX and registered.

``train_crossres``: cross-resolution training of SE-ResNet-50 on VGGFace2
(the cross-resolution learning paper's T-C recipe). T-C (configs/crossres_vggface2.yaml): a frozen
teacher (the HR model the student starts from) sees each HR face, the student its down-sampled
copy, the down-sampling probability rising 0 -> 1 over training (curriculum); loss = softmax
cross-entropy + 0.1 * feature MSE (Eq. 1). nT-nC (configs/crossres_vggface2_ntnc.yaml) is the
same pipeline without the teacher and with a fixed down-sampling probability.

data (fine-tune + evaluation set) and pretrain_data (the pre-training set, when it differs) ->
validate both -> pretrain_torch -> finetune_torch -> export_onnx (parity floor) -> evaluate_onnx
(the held-out verification and ``evaluation.protocols`` on the ONNX embeddings) ->
onnx_latency_gate -> register_torch.

Run them with ``zenml pipeline run pipelines.train_squeezefaceposenet -c
configs/squeezefaceposenet_demo.yaml`` and ``zenml pipeline run pipelines.train_crossres -c
configs/crossres_demo.yaml``. The configuration (``vlrface.config.torch``) is validated and the
data versions resolved from DVC when the pipeline is compiled, before any step runs.
"""

from __future__ import annotations

from zenml import pipeline

from steps import (
    align_data,
    evaluate_onnx,
    export_onnx,
    finetune_torch,
    load_data,
    load_torch_pretrained,
    onnx_latency_gate,
    pretrain_torch,
    register_torch,
    validate_data,
)
from vlrface import provenance, runs
from vlrface.config.torch import parse_torch
from vlrface.data import versioning


def torch_graph(given: dict) -> None:
    """The PyTorch track's step graph, shared by ``train_squeezefaceposenet`` and
    ``train_crossres``; call it inside a ``@pipeline`` function."""
    runs.check_compiling_run_settings()  # a typo outside parameters: fails too
    cfg = parse_torch({k: v for k, v in given.items() if v is not None}, "parameters")
    c = cfg.model_dump(mode="json")
    version = versioning.resolve(cfg.data.dvc_file, cfg.data.root)
    manifest, data_info = load_data(data=c["data"], data_version=version.as_dict(), seed=cfg.seed)
    # training reads aligned faces only: later steps read images from the aligned copy
    manifest, faces = align_data(manifest, data=c["data"], data_version=version.as_dict())
    validate_data(manifest, data=faces)
    if cfg.model.pretrained:
        pretrained = load_torch_pretrained(
            model=c["model"],
            checkpoint_sha256=provenance.sha256_file(versioning.existing(cfg.model.pretrained)),
            after="validate_data",
        )
    else:
        pre_manifest, pre_data, after = manifest, faces, ["validate_data"]
        if cfg.pretrain_data is not None:
            pre = cfg.pretrain_data
            pre_version = versioning.resolve(pre.dvc_file, pre.root)
            pre_manifest, _ = load_data(
                data=c["pretrain_data"],
                data_version=pre_version.as_dict(),
                seed=cfg.seed,
                id="load_pretrain_data",
            )
            pre_manifest, pre_data = align_data(
                pre_manifest,
                data=c["pretrain_data"],
                data_version=pre_version.as_dict(),
                id="align_pretrain_data",
            )
            validate_data(pre_manifest, data=pre_data, id="validate_pretrain_data")
            after.append("validate_pretrain_data")
        pretrained, _ = pretrain_torch(
            pre_manifest,
            data=pre_data,
            model=c["model"],
            stage=c["pretrain"],
            seed=cfg.seed,
            after=after,
        )
    finetuned, _ = finetune_torch(
        pretrained, manifest, data=faces, model=c["model"], stage=c["finetune"], seed=cfg.seed
    )
    onnx, export_report = export_onnx(finetuned, manifest, data=faces, export=c["export"])
    metrics = evaluate_onnx(onnx, manifest, data=faces, evaluation=c["evaluation"], seed=cfg.seed)
    latency_report = onnx_latency_gate(onnx, latency=c["latency"])
    register_torch(finetuned, onnx, metrics, export_report, latency_report, data_info, config=c)


@pipeline(name="train_squeezefaceposenet", enable_cache=True, **runs.HOOKS)
def train_squeezefaceposenet(
    seed: int = 0,
    data: dict | None = None,
    pretrain_data: dict | None = None,
    synthetic: dict | None = None,
    model: dict | None = None,
    pretrain: dict | None = None,
    finetune: dict | None = None,
    evaluation: dict | None = None,
    export: dict | None = None,
    latency: dict | None = None,
    registry: dict | None = None,
) -> None:
    torch_graph(dict(locals()))


@pipeline(name="train_crossres", enable_cache=True, **runs.HOOKS)
def train_crossres(
    seed: int = 0,
    data: dict | None = None,
    pretrain_data: dict | None = None,
    synthetic: dict | None = None,
    model: dict | None = None,
    pretrain: dict | None = None,
    finetune: dict | None = None,
    evaluation: dict | None = None,
    export: dict | None = None,
    latency: dict | None = None,
    registry: dict | None = None,
) -> None:
    torch_graph(dict(locals()))
