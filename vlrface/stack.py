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


# --------------------------------------------------------------------------------------------
# team mode: the stack of infra/stacks/local.yaml on a given MLflow server, S3 endpoint and bucket

TEAM_STACK = "vlrface_team"
S3_SECRET, MLFLOW_SECRET = "vlrface_s3", "vlrface_mlflow"


def check_s3(endpoint: str | None, bucket: str, component: str = "S3") -> None:
    """Raise ``StoreError`` naming ``component`` unless ``bucket`` answers at ``endpoint`` with
    the credentials of the environment."""
    import boto3
    import botocore.exceptions as bx

    from vlrface.errors import StoreError

    where = f"{component} s3://{bucket}" + (f" at {endpoint}" if endpoint else "")
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").head_bucket(
            Bucket=bucket
        )
    except bx.NoCredentialsError:
        raise StoreError(
            f"{where}: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        ) from None
    except bx.EndpointConnectionError:
        raise StoreError(f"{where}: cannot connect to the endpoint") from None
    except bx.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        missing, denied = "the bucket does not exist", "access denied with these credentials"
        what = {"404": missing, "NoSuchBucket": missing, "403": denied}.get(code, f"error {code}")
        raise StoreError(f"{where}: {what}") from None


def check_mlflow(tracking_uri: str, component: str = "MLflow tracking server") -> None:
    """Raise ``StoreError`` unless the MLflow server at ``tracking_uri`` answers /health."""
    import urllib.error
    import urllib.request

    from vlrface.errors import StoreError

    if not tracking_uri.startswith(("http://", "https://")):
        raise StoreError(f"{component} {tracking_uri!r}: not an http(s) URL")
    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=10) as r:
            if r.status != 200:
                raise StoreError(f"{component} {tracking_uri}: /health answered {r.status}")
    except urllib.error.HTTPError as exc:
        raise StoreError(f"{component} {tracking_uri}: /health answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreError(f"{component} {tracking_uri}: unreachable ({reason})") from None


def _ensure_secret(client, name: str, values: dict[str, str]) -> None:
    try:
        found = client.get_secret(name)
    except KeyError:
        client.create_secret(name, values=values)
        return
    if found.secret_values != values:
        client.update_secret(name, add_or_update_values=values)


def ensure_team_stack(
    tracking_uri: str,
    s3_endpoint: str | None,
    bucket: str,
    definition: dict | None = None,
) -> str:
    """Register (or repair) and activate the team stack: ``infra/stacks/local.yaml`` with this
    MLflow server, S3 endpoint and artifact bucket. The stores are checked first (a clear
    ``StoreError`` naming the component, nothing registered); credentials go into the ZenML
    secrets the definition references, from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD."""
    import os

    from zenml.client import Client
    from zenml.enums import StackComponentType

    from vlrface.errors import StoreError
    from vlrface.infra import stack_definition

    env = os.environ
    check_mlflow(tracking_uri)
    if not (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")):
        raise StoreError(
            f"ZenML artifact store s3://{bucket}: no credentials (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY; they go into the ZenML secret vlrface_s3)"
        )
    check_s3(s3_endpoint, bucket, "ZenML artifact store")
    doc = definition or stack_definition("local")
    comps = doc["components"]
    comps["experiment_tracker"]["configuration"]["tracking_uri"] = tracking_uri
    store = comps["artifact_store"]["configuration"]
    store["path"] = f"s3://{bucket}"
    if s3_endpoint:
        store.setdefault("client_kwargs", {})["endpoint_url"] = s3_endpoint
    else:
        store.get("client_kwargs", {}).pop("endpoint_url", None)
    client = Client()
    _ensure_secret(
        client,
        S3_SECRET,
        {
            "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        },
    )
    _ensure_secret(
        client,
        MLFLOW_SECRET,
        {
            "username": env.get("MLFLOW_TRACKING_USERNAME", "vlrface"),
            "password": env.get("MLFLOW_TRACKING_PASSWORD", "vlrface"),
        },
    )
    ids = {}
    for key, comp in comps.items():
        ctype = StackComponentType(key)
        found = client.list_stack_components(type=ctype, name=comp["name"]).items
        if not found:
            made = client.create_stack_component(
                comp["name"], comp["flavor"], ctype, configuration=comp["configuration"]
            )
        elif found[0].configuration != comp["configuration"] and comp["configuration"]:
            made = client.update_stack_component(
                comp["name"], ctype, configuration=comp["configuration"]
            )
        else:
            made = found[0]
        ids[ctype] = made.id
    name = doc["stack_name"]
    if client.list_stacks(name=name).items:
        client.update_stack(name, component_updates={k: [v] for k, v in ids.items()})
    else:
        client.create_stack(name, components=ids)
    client.activate_stack(name)
    return name
