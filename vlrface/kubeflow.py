"""``vlrface_kubeflow``: ZenML 0.98's Kubeflow orchestrator with the pod placement it drops.

ZenML 0.98's Kubeflow orchestrator compiles a pipeline to a KFP spec (one container task per
step) but, of a step's settings, keeps only the CPU count and the ``accelerator`` node label:
its settings class rebuilds ``pod_settings`` from ``node_selectors`` (tolerations and ``env``
are lost), no node selector reaches the spec, and a ``memory`` setting fails to compile
(``ResourceSettings.get_memory()`` is a float, KFP takes a string). This flavor subclasses it and
writes, for each task, with KFP's own ``kfp.kubernetes`` platform config:

* CPU and memory requests = limits (``resources``: ``cpu_count``, ``memory``), and with
  ``gpu_count`` the accelerator (``nvidia.com/gpu`` unless an ``accelerator`` node label names
  one) and its count;
* ``pod_settings.node_selectors`` and ``pod_settings.tolerations``;
* ``pod_settings.env``: plain values, and ``valueFrom.secretKeyRef`` entries as references to a
  Kubernetes Secret (``use_secret_as_env``): the value never enters the spec.

Register it once, then import ``infra/stacks/kubeflow.yaml``::

    zenml orchestrator flavor register vlrface.kubeflow.VlrfaceKubeflowOrchestratorFlavor

Its settings key is ``orchestrator.vlrface_kubeflow`` (``infra/settings/kubeflow.yaml``).
"""

from __future__ import annotations

from typing import Any

from pydantic import model_validator
from zenml.integrations.kubeflow.flavors.kubeflow_orchestrator_flavor import (
    KubeflowOrchestratorConfig,
    KubeflowOrchestratorFlavor,
    KubeflowOrchestratorSettings,
)
from zenml.integrations.kubeflow.orchestrators.kubeflow_orchestrator import KubeflowOrchestrator
from zenml.integrations.kubernetes.pod_settings import KubernetesPodSettings

FLAVOR = "vlrface_kubeflow"
GPU = "nvidia.com/gpu"
# pod settings this flavor carries into the KFP spec; any other field is refused at validation
SUPPORTED_POD_FIELDS = {"node_selectors", "tolerations", "env"}


class VlrfaceKubeflowSettings(KubeflowOrchestratorSettings):
    """Kubeflow settings whose ``pod_settings`` are kept as given (and merged with the legacy
    ``node_selectors`` key)."""

    @model_validator(mode="wrap")
    @classmethod
    def _keep_pod_settings(cls, data: Any, handler):
        given = data.get("pod_settings") if isinstance(data, dict) else None
        model = handler(data)
        if given is None:
            return model
        pod = (
            given
            if isinstance(given, KubernetesPodSettings)
            else KubernetesPodSettings.model_validate(given)
        )
        fields = KubernetesPodSettings.model_fields
        extra = {
            f
            for f in pod.model_fields_set - SUPPORTED_POD_FIELDS
            if getattr(pod, f) != fields[f].get_default(call_default_factory=True)
        }
        if extra:
            raise ValueError(
                f"{FLAVOR} orchestrator: pod_settings field(s) {sorted(extra)} do not reach a KFP "
                f"spec; supported: {sorted(SUPPORTED_POD_FIELDS)}"
            )
        legacy = dict(model.pod_settings.node_selectors) if model.pod_settings else {}
        merged = pod.model_copy(update={"node_selectors": {**legacy, **pod.node_selectors}})
        model.__dict__["pod_settings"] = merged  # the model may be frozen; it is ours still
        return model


class VlrfaceKubeflowOrchestratorConfig(KubeflowOrchestratorConfig, VlrfaceKubeflowSettings):
    """The Kubeflow orchestrator's configuration with ``VlrfaceKubeflowSettings``."""


def _memory(resources) -> str | None:
    """ZenML's ``memory`` (``16GB``, ``4GiB``: validated by ZenML) as a Kubernetes quantity."""
    return resources.memory[:-1] if resources.memory else None  # 16GB -> 16G, 4GiB -> 4Gi


def apply_to_task(task, resources, pod: KubernetesPodSettings | None):
    """Write ``resources`` (ZenML ``ResourceSettings``) and ``pod`` onto a KFP ``PipelineTask``."""
    from kfp import kubernetes

    if resources is not None:
        if resources.cpu_count:
            cpu = f"{resources.cpu_count:g}"
            task.set_cpu_request(cpu).set_cpu_limit(cpu)
        memory = _memory(resources)
        if memory:
            task.set_memory_request(memory).set_memory_limit(memory)
        if resources.gpu_count:
            selectors = pod.node_selectors if pod else {}
            task.set_accelerator_type(selectors.get("accelerator", GPU))
            task.set_accelerator_limit(resources.gpu_count)
    if pod is None:
        return task
    for key, value in pod.node_selectors.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for tol in pod.tolerations:
        kubernetes.add_toleration(
            task,
            key=tol.get("key"),
            operator=tol.get("operator"),
            value=tol.get("value"),
            effect=tol.get("effect"),
            toleration_seconds=tol.get("toleration_seconds", tol.get("tolerationSeconds")),
        )
    for env in pod.env:
        ref = (env.get("valueFrom") or env.get("value_from") or {}).get("secretKeyRef")
        if ref:
            kubernetes.use_secret_as_env(task, ref["name"], {ref["key"]: env["name"]})
        elif "value" in env:
            task.set_env_variable(name=env["name"], value=str(env["value"]))
        else:
            raise ValueError(
                f"{FLAVOR} orchestrator: env {env.get('name')!r} needs a value or a "
                "valueFrom.secretKeyRef"
            )
    return task


class VlrfaceKubeflowOrchestrator(KubeflowOrchestrator):
    """ZenML's Kubeflow orchestrator; each task also gets its memory, node selectors,
    tolerations and Secret references (``apply_to_task``)."""

    _steps: dict | None = None

    @property
    def settings_class(self):
        return VlrfaceKubeflowSettings

    def submit_pipeline(self, snapshot, *args, **kwargs):
        self._steps = snapshot.step_configurations
        try:
            return super().submit_pipeline(snapshot, *args, **kwargs)
        finally:
            self._steps = None

    def _configure_container_resources(
        self, dynamic_component, resource_settings, node_selector_constraint=None
    ):
        # called once per task, after ZenML set its display name to the step's name
        name = dynamic_component._task_spec.display_name
        step = (self._steps or {}).get(name)
        if step is None:
            raise RuntimeError(f"{FLAVOR} orchestrator: task {name!r} is no step of the snapshot")
        settings = self.get_settings(step)
        return apply_to_task(dynamic_component, resource_settings, settings.pod_settings)


class VlrfaceKubeflowOrchestratorFlavor(KubeflowOrchestratorFlavor):
    """The ``vlrface_kubeflow`` orchestrator flavor."""

    @property
    def name(self) -> str:
        return FLAVOR

    @property
    def config_class(self):
        return VlrfaceKubeflowOrchestratorConfig

    @property
    def implementation_class(self):
        return VlrfaceKubeflowOrchestrator
