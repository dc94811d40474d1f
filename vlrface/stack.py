"""The local ZenML stack: local orchestrator and artifact store, MLflow tracker and registry.

MLflow keeps runs and the registry in ``<mlflow_dir>/mlflow.db`` (sqlite: MLflow 3 refuses a
``./mlruns`` file store) and artifacts in ``<mlflow_dir>/artifacts``. ``ensure_local_stack`` is
idempotent: it creates what is missing, fixes what differs, and activates the stack.
"""

from __future__ import annotations

from pathlib import Path

TRACKER = "mlflow_tracker"
REGISTRY = "mlflow_registry"
STACK = "vlrface_local"


def tracking_uri(mlflow_dir: str | Path) -> str:
    return f"sqlite:///{Path(mlflow_dir).resolve() / 'mlflow.db'}"


def ensure_experiments(mlflow_dir: str | Path, names: list[str]) -> None:
    """Create MLflow experiments whose artifacts live under ``<mlflow_dir>/artifacts``."""
    from mlflow import MlflowClient

    mlflow_dir = Path(mlflow_dir).resolve()
    (mlflow_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri(mlflow_dir))
    for name in names:
        if client.get_experiment_by_name(name) is None:
            client.create_experiment(
                name, artifact_location=(mlflow_dir / "artifacts" / name).as_uri()
            )


def ensure_local_stack(mlflow_dir: str | Path, experiments: list[str]) -> str:
    """Register (or repair) and activate the local MLflow stack; returns its name."""
    from zenml.client import Client
    from zenml.enums import StackComponentType as T

    client = Client()
    uri = tracking_uri(mlflow_dir)
    wanted = {
        T.EXPERIMENT_TRACKER: (TRACKER, {"tracking_uri": uri}),
        T.MODEL_REGISTRY: (REGISTRY, {}),
    }
    for ctype, (name, config) in wanted.items():
        found = client.list_stack_components(type=ctype, name=name).items
        if not found:
            client.create_stack_component(name, "mlflow", ctype, configuration=config)
        elif any(found[0].configuration.get(k) != v for k, v in config.items()):
            client.update_stack_component(name, ctype, configuration=config)
    if not client.list_stacks(name=STACK).items:
        client.create_stack(
            STACK,
            components={
                T.ORCHESTRATOR: "default",
                T.ARTIFACT_STORE: "default",
                T.EXPERIMENT_TRACKER: TRACKER,
                T.MODEL_REGISTRY: REGISTRY,
            },
        )
    client.activate_stack(STACK)
    ensure_experiments(mlflow_dir, experiments)
    return STACK


def active_tracking_uri() -> str:
    """The tracking URI of the active stack's MLflow experiment tracker."""
    from zenml.client import Client

    tracker = Client().active_stack.experiment_tracker
    if tracker is None or tracker.flavor != "mlflow":
        raise RuntimeError(
            "the active ZenML stack has no MLflow experiment tracker; run `make setup` "
            "(or `vlrface stack setup`)"
        )
    return tracker.get_tracking_uri()
