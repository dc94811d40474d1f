"""``train_crossres``: cross-resolution training of SE-ResNet-50 on VGGFace2
(Massoli et al., "Cross-Resolution Learning for Face Recognition"; docs/papers.md).

T-C (configs/crossres_vggface2.yaml): a frozen teacher (the HR model the student starts from)
sees each HR face, the student its down-sampled copy, the down-sampling probability rising
0 -> 1 over training (curriculum); loss = softmax cross-entropy + 0.1 * feature MSE (Eq. 1).
nT-nC (configs/crossres_vggface2_ntnc.yaml) is the same pipeline without the teacher and with a
fixed down-sampling probability. The steps are the PyTorch track's
(``pipelines.squeezefaceposenet.torch_graph``): data -> validate -> (load pre-trained |
pre-train) -> fine-tune -> ONNX export -> evaluate on ONNX -> latency gate -> register.

Run it with ``zenml pipeline run pipelines.train_crossres -c configs/crossres_demo.yaml``.
"""

from __future__ import annotations

from zenml import pipeline

from pipelines.squeezefaceposenet import torch_graph
from vlrface import runs


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
    torch_graph(
        dict(
            seed=seed,
            data=data,
            pretrain_data=pretrain_data,
            synthetic=synthetic,
            model=model,
            pretrain=pretrain,
            finetune=finetune,
            evaluation=evaluation,
            export=export,
            latency=latency,
            registry=registry,
        )
    )
