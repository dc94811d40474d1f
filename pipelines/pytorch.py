"""The PyTorch track's pipelines: one step graph (``torch_graph``) under two pipeline names.

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

from pipelines.common import data_steps
from steps import (
    evaluate_onnx,
    export_onnx,
    finetune_torch,
    load_torch_pretrained,
    onnx_latency_gate,
    pretrain_torch,
    register_torch,
)
from vlrface import provenance, runs
from vlrface.config.torch import parse_torch
from vlrface.data import versioning


def torch_graph(
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
    """The PyTorch track's step graph, the entrypoint of both ``train_squeezefaceposenet`` and
    ``train_crossres`` (they differ in their configurations only)."""
    cfg = runs.pipeline_config(parse_torch, dict(locals()))
    c = cfg.model_dump(mode="json")
    manifest, faces, data_info = data_steps(cfg, c, seed=cfg.seed)
    if cfg.model.pretrained:
        pretrained = load_torch_pretrained(
            model=c["model"],
            checkpoint_sha256=provenance.sha256_file(versioning.existing(cfg.model.pretrained)),
            after="validate_data",
        )
    else:
        pre_manifest, pre_data, after = manifest, faces, ["validate_data"]
        if cfg.pretrain_data is not None:
            pre_manifest, pre_data, _ = data_steps(
                cfg,
                c,
                "pretrain_data",
                cfg.seed,
                load_id="load_pretrain_data",
                align_id="align_pretrain_data",
                validate_id="validate_pretrain_data",
            )
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


train_squeezefaceposenet = pipeline(
    name="train_squeezefaceposenet", enable_cache=True, **runs.HOOKS
)(torch_graph)
train_crossres = pipeline(name="train_crossres", enable_cache=True, **runs.HOOKS)(torch_graph)
