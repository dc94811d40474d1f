"""``train_binaryfacenet``: data -> validate -> pre-train -> fine-tune -> evaluate -> export
-> latency gate -> register and promote. The pre-trained and fine-tuned backbones are registered
too (``<name>-pretrained``, ``<name>-finetuned``), linked to the exported version by lineage tags.

Run it with ``zenml pipeline run train_binaryfacenet -c configs/demo.yaml`` (or the dotted
``pipelines.train_binaryfacenet``). The
configuration is validated (``vlrface.config.keras``) and the data version resolved from DVC
when the pipeline is compiled, before any step runs; the DVC md5 is a parameter of the data
step, so the cache is keyed on the data version.
"""

from __future__ import annotations

from zenml import pipeline

from pipelines.common import data_steps
from steps import (
    evaluate_model,
    export_lce,
    finetune_model,
    latency_gate,
    load_pretrained,
    pretrain_model,
    register_model,
    register_stage,
)
from vlrface import provenance, runs
from vlrface.config.keras import parse
from vlrface.latency import sources
from vlrface.references import pretrained_file


@pipeline(name="train_binaryfacenet", enable_cache=True, **runs.HOOKS)
def train_binaryfacenet(
    seed: int = 0,
    data: dict | None = None,
    synthetic: dict | None = None,
    model: dict | None = None,
    pretrain: dict | None = None,
    finetune: dict | None = None,
    evaluation: dict | None = None,
    export: dict | None = None,
    latency: dict | None = None,
    registry: dict | None = None,
) -> None:
    cfg = runs.pipeline_config(parse, dict(locals()))
    c = cfg.model_dump(mode="json")
    manifest, faces, data_info = data_steps(cfg, c, seed=cfg.seed)
    pretrained_version = None
    if cfg.model.pretrained:
        pretrained, centres = load_pretrained(
            manifest,
            data=faces,
            model=c["model"],
            checkpoint_sha256=provenance.sha256_file(pretrained_file(cfg.model.pretrained)),
            after="validate_data",
        )
    else:
        pretrained, centres, history = pretrain_model(
            manifest,
            data=faces,
            model=c["model"],
            stage=c["pretrain"],
            seed=cfg.seed,
            after="validate_data",
        )
        pretrained_version = register_stage(
            pretrained, history, data_info, config=c, stage="pretrain", id="register_pretrained"
        )
    finetuned, _, history = finetune_model(
        pretrained,
        centres,
        manifest,
        data=faces,
        model=c["model"],
        stage=c["finetune"],
        seed=cfg.seed,
    )
    finetuned_version = register_stage(
        finetuned,
        history,
        data_info,
        config=c,
        stage="finetune",
        parent=pretrained_version,
        id="register_finetuned",
    )
    metrics = evaluate_model(
        finetuned, manifest, data=faces, evaluation=c["evaluation"], seed=cfg.seed
    )
    tflite, export_report = export_lce(finetuned, manifest, data=faces, export=c["export"])
    latency_report = latency_gate(
        tflite, export_report, latency=c["latency"], environment=sources.environment(cfg.latency)
    )
    register_model(
        finetuned,
        tflite,
        metrics,
        export_report,
        latency_report,
        data_info,
        config=c,
        pretrained_version=pretrained_version,
        finetuned_version=finetuned_version,
    )
