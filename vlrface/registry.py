"""The MLflow model registry: versions with provenance tags, gates, and the ``champion`` alias.

A registered version is created only after every file of it is stored, and deleted again if
anything after its creation fails, so a half-written version never stays. ``champion`` moves
only when every rule of the promotion policy (``vlrface.promotion``) passed, judged against the
champion read under ``champion_lock`` (a lock the registry's database enforces: a lease row
taken in a ``BEGIN IMMEDIATE`` transaction on sqlite, a session advisory lock on PostgreSQL and
MySQL, ``flock`` in a local file store), so concurrent promotions serialise. The alias move
and its history event are written together or not at all (``move_champion``: a write-ahead
intent tag, undone on failure or by the next ``reconcile``). The decision, its reasons and
numbers are tagged on the version either way.

History: one registered-model tag per event, ``history.<nanoseconds>`` -> JSON (``event``:
``promote`` | ``refuse`` | ``rollback``, ``version``, ``previous`` and ``champion`` before and
after, ``reasons``, ``rules``, ``at``, ``by``). One tag write is atomic, and events are never
rewritten, so the history is append-only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import sqlite3
import tempfile
import time
import uuid
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from vlrface import provenance
from vlrface.errors import IntegrityError, VlrfaceError
from vlrface.export.metrics import format_of
from vlrface.promotion import Decision, Policy, Rule, evaluate

CHAMPION = "champion"
HISTORY = "history."
# a champion move in progress: {"key": <history tag>, "from": version|None, "to": version|None}
PENDING = "vlrface.champion.pending"
CARD = "model_card.md"
CONFIG_ARTIFACT = "registry/config.json"
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


log = logging.getLogger(__name__)


class RegistryError(VlrfaceError):
    """The registry is unreachable, or a model/version is unknown, or a file fails its sha256."""


def fail_fast() -> None:
    """Make MLflow's HTTP client give up at once on an unreachable server (default: ~2 min of
    retries) unless the user asked otherwise."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def client_for(uri: str) -> MlflowClient:
    fail_fast()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def errors(uri: str):
    """Turn MLflow's exceptions into one-line ``RegistryError``s."""
    try:
        yield
    except MlflowException as exc:
        first = (str(exc).strip().splitlines() or ["unknown error"])[0]
        if "API request to" in first and "failed" in first:
            cause = "connection refused" if "refused" in first.lower() else first[-160:]
            raise RegistryError(f"cannot reach the MLflow registry at {uri}: {cause}") from None
        raise RegistryError(f"MLflow registry at {uri}: {first[:300]}") from None


def _missing(exc: MlflowException) -> bool:
    return exc.error_code in NOT_FOUND


# --- transient store errors ------------------------------------------------------------------

TRANSIENT = (
    "database is locked",
    "database is busy",
    "temporarily unavailable",
    "could not connect",
    "connection refused",
    "server closed the connection",
    "max retries exceeded",
)
RETRY_S = 30.0


def transient(exc: BaseException) -> bool:
    """A store error worth retrying: locked/busy database, unreachable server."""
    if isinstance(exc, MlflowException) and exc.error_code == "TEMPORARILY_UNAVAILABLE":
        return True
    msg = str(exc).lower()
    return any(t in msg for t in TRANSIENT)


def retrying(fn, *args, budget: float | None = None, **kwargs):
    """``fn(*args, **kwargs)``, retried with exponential backoff on transient store errors for at
    most ``budget`` seconds (default ``$VLRFACE_STORE_RETRY_S`` or 30); then the error."""
    if budget is None:
        budget = float(os.environ.get("VLRFACE_STORE_RETRY_S", RETRY_S))
    deadline, delay = time.monotonic() + budget, 0.1
    while True:
        try:
            return fn(*args, **kwargs)
        except (MlflowException, OSError, sqlite3.OperationalError) as exc:
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            log.warning("store error (%s), retrying in %.1f s", first, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


# --- the champion lock: a lock the registry's backing store enforces -------------------------

LOCK_ENV = "VLRFACE_REGISTRY_LOCK_URI"
LOCK_TIMEOUT_S = 120.0
LOCK_LEASE_S = 600.0
LOCK_TABLE = "vlrface_locks"


def lock_uri(client: MlflowClient) -> str:
    """The database the champion lock lives in: ``$VLRFACE_REGISTRY_LOCK_URI`` (the backend
    store of a remote tracking server), else the client's registry URI."""
    return os.environ.get(LOCK_ENV) or client._registry_uri


class _SqliteLease:
    """A lease row in the tracking database's ``vlrface_locks`` table, taken and given back in
    ``BEGIN IMMEDIATE`` transactions, so sqlite serialises the compare-and-set. A holder that
    died (same host, its process gone) or outlived its lease is replaced."""

    def __init__(self, uri: str, key: str):
        from sqlalchemy.engine import make_url

        self.path = make_url(uri).database or ""
        self.uri, self.key = uri, key
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.holder = f"{self.host}:{self.pid}:{uuid.uuid4().hex}"

    def _tx(self, fn):
        import sqlite3

        con = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {LOCK_TABLE} (name TEXT PRIMARY KEY, "
                "holder TEXT NOT NULL, host TEXT, pid INTEGER, expires REAL NOT NULL)"
            )
            try:
                out = fn(con)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            return out
        finally:
            con.close()

    def _stale(self, host: str, pid: int, expires: float) -> bool:
        if expires < time.time():
            return True
        if host != self.host:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def try_acquire(self) -> str | None:
        """``None`` when taken, else who holds it."""

        def take(con):
            row = con.execute(
                f"SELECT holder, host, pid, expires FROM {LOCK_TABLE} WHERE name = ?", (self.key,)
            ).fetchone()
            if row is not None and not self._stale(row[1], row[2], row[3]):
                return row[0]
            con.execute(
                f"INSERT OR REPLACE INTO {LOCK_TABLE} VALUES (?, ?, ?, ?, ?)",
                (self.key, self.holder, self.host, self.pid, time.time() + LOCK_LEASE_S),
            )
            return None

        try:
            return self._tx(take)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return "a writer of the database (busy)"
            raise RegistryError(f"cannot lock '{self.key}' in {self.uri}: {exc}") from None

    def release(self) -> None:
        self._tx(
            lambda con: con.execute(
                f"DELETE FROM {LOCK_TABLE} WHERE name = ? AND holder = ?", (self.key, self.holder)
            )
        )


class _SessionLock:
    """A session-level lock of a database server (PostgreSQL ``pg_try_advisory_lock``, MySQL
    ``GET_LOCK``) on a connection of its own: the server drops it when the holder dies."""

    def __init__(self, uri: str, key: str):
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        self.uri, self.key = uri, key
        self.engine = sqlalchemy.create_engine(uri, poolclass=NullPool)
        self.pg = self.engine.dialect.name == "postgresql"
        self.conn = None

    def try_acquire(self) -> str | None:
        import sqlalchemy

        if self.conn is None:
            self.conn = self.engine.connect()
        if self.pg:
            # a signed 64-bit key from the name (hashtext() is not stable across versions)
            k = int.from_bytes(hashlib.sha256(self.key.encode()).digest()[:8], "big", signed=True)
            got = self.conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": k})
        else:
            got = self.conn.execute(sqlalchemy.text("SELECT GET_LOCK(:k, 0)"), {"k": self.key[:64]})
        self.conn.commit()
        return None if got.scalar() in (True, 1) else "another session of the database"

    def release(self) -> None:
        if self.conn is not None:
            self.conn.close()  # a session lock ends with its session
            self.conn = None
        self.engine.dispose()


class _FileLock:
    """A local file store (``file:`` URI or a path): ``flock`` on a lock file inside it, which
    the kernel drops when the holder dies."""

    def __init__(self, uri: str, key: str):
        from urllib.parse import unquote, urlparse

        root = Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else Path(uri)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
        self.path = root / f".vlrface-lock-{safe}"
        self.fd = None

    def try_acquire(self) -> str | None:
        import fcntl

        if self.fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return f"another process (lock file {self.path})"
        return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def _store_lock(uri: str, key: str):
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else "file"
    if scheme == "sqlite":
        return _SqliteLease(uri, key)
    if scheme in ("postgresql", "postgres", "mysql"):
        return _SessionLock(uri, key)
    if scheme == "file":
        return _FileLock(uri, key)
    raise RegistryError(
        f"cannot lock the champion of '{key.split(':', 1)[-1]}' on {uri}: promotion needs the "
        f"store the registry is kept in (sqlite, postgresql, mysql, a local directory); set "
        f"{LOCK_ENV} to the tracking server's backend store URI"
    )


@contextmanager
def champion_lock(client: MlflowClient, name: str, timeout: float | None = None):
    """Hold the lock on ``name``'s champion: promotions, rollbacks and pipeline registrations
    of one model run one at a time, each reading the champion it may replace under the lock.
    Waits up to ``timeout`` seconds (default ``$VLRFACE_REGISTRY_LOCK_TIMEOUT`` or 120)."""
    if timeout is None:
        timeout = float(os.environ.get("VLRFACE_REGISTRY_LOCK_TIMEOUT", LOCK_TIMEOUT_S))
    uri = lock_uri(client)
    lock = _store_lock(uri, f"champion:{name}")
    deadline, delay = time.monotonic() + timeout, 0.02
    try:
        while (holder := lock.try_acquire()) is not None:
            if time.monotonic() >= deadline:
                raise RegistryError(
                    f"the champion of '{name}' is locked by {holder} (waited {timeout:g} s); "
                    "nothing changed"
                )
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)
    except BaseException as exc:
        with suppress(Exception):
            lock.release()
        if isinstance(exc, Exception) and not isinstance(exc, RegistryError):
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise RegistryError(f"cannot lock the champion of '{name}' on {uri}: {first}") from None
        raise
    try:
        yield
    finally:
        lock.release()


def champion(client: MlflowClient, name: str):
    """The version holding alias ``champion``, or ``None``."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if _missing(exc):
            return None
        raise


def get_model(client: MlflowClient, name: str):
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"unknown registered model '{name}'") from None
        raise


def get_version(client: MlflowClient, name: str, version: int | str | None = None):
    """Version ``version`` of ``name`` (default: the latest)."""
    get_model(client, name)
    if version is None:
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise RegistryError(f"registered model '{name}' has no versions")
        return max(versions, key=lambda v: int(v.version))
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if _missing(exc):
            raise RegistryError(f"registered model '{name}' has no version {version}") from None
        raise


def _float(x) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def record_from_tags(tags: dict[str, str], version: int | None = None) -> dict:
    """What a policy reads of a version: its export ``format`` (``vlrface.export.metrics``),
    ``values`` (``metric.*`` tags, ``latency.<d>.ms``), ``gates``, per-device ``latency``
    {ms, budget_ms, source}, ``files`` (sha256 tags)."""
    values: dict[str, float] = {}
    latency: dict[str, dict] = {}
    for k, v in tags.items():
        if k.startswith("metric.") and (x := _float(v)) is not None:
            values[k[len("metric.") :]] = x
        elif k.startswith("latency.") and k.count(".") >= 2:
            device, field_ = k[len("latency.") :].rsplit(".", 1)
            if field_ in ("ms", "budget_ms"):
                latency.setdefault(device, {})[field_] = _float(v)
            elif field_ == "source":
                latency.setdefault(device, {})["source"] = v
    for device, r in latency.items():
        r.setdefault("source", tags.get("latency.source", "unknown"))
        if r.get("ms") is not None:
            values.setdefault(f"latency.{device}.ms", r["ms"])
    fmt = format_of(tags, values)
    return {
        "version": version,
        "format": fmt.name if fmt else None,
        "values": values,
        "gates": {
            k[len("gate.") :]: v == "passed" for k, v in tags.items() if k.startswith("gate.")
        },
        "latency": {d: r for d, r in latency.items() if "ms" in r or "budget_ms" in r},
        "latency_source": tags.get("latency.source"),
        "files": {k[len("sha256.") :]: v for k, v in tags.items() if k.startswith("sha256.")},
    }


def version_record(mv) -> dict:
    return record_from_tags(dict(mv.tags), int(mv.version))


def verify_files(client: MlflowClient, mv) -> list[Rule]:
    """Download every file a version's ``sha256.<file>`` tags name and check its hash."""
    files = {k[len("sha256.") :]: v for k, v in mv.tags.items() if k.startswith("sha256.")}
    if not files:
        return [Rule("files", False, f"v{mv.version} records no sha256.<file> tags", None)]
    import mlflow.artifacts

    rules = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, expected) in enumerate(sorted(files.items())):
            try:
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{mv.source.rstrip('/')}/{name}",
                    dst_path=str(Path(tmp, str(i))),
                    tracking_uri=client._tracking_client.tracking_uri,
                )
            except (MlflowException, OSError) as exc:
                reason = f"file {name} of v{mv.version} cannot be read: {str(exc)[:120]}"
                rules.append(Rule(f"files.{name}", False, reason, None, None, expected))
                continue
            got = provenance.sha256_file(path)
            if got == expected:
                rules.append(Rule(f"files.{name}", True, f"{name} sha256 ok", got, None, expected))
            else:
                reason = (
                    f"sha256 mismatch: {name} of v{mv.version} is {got[:12]}..., "
                    f"its tag says {expected[:12]}..."
                )
                rules.append(Rule(f"files.{name}", False, reason, got, None, expected))
    return rules


def now() -> tuple[int, str]:
    ns = time.time_ns()
    return ns, datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")


def append_history(client: MlflowClient, name: str, event: dict) -> dict:
    """Append ``event`` to ``name``'s history (one registered-model tag); returns it with ``at``."""
    key, event = _history_entry(client, name, event)
    retrying(client.set_registered_model_tag, name, key, json.dumps(event))
    return event


def _history_entry(client: MlflowClient, name: str, event: dict) -> tuple[str, dict]:
    ns, at = now()
    existing = set(get_model(client, name).tags)
    while f"{HISTORY}{ns:020d}" in existing:
        ns += 1
    return f"{HISTORY}{ns:020d}", {"at": at, "model": name, **event}


def _set_champion(client: MlflowClient, name: str, version: int | None) -> None:
    if version is not None:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    elif champion(client, name) is not None:
        client.delete_registered_model_alias(name, CHAMPION)


def reconcile(client: MlflowClient, name: str) -> str | None:
    """Finish or undo a champion move a store failure interrupted (its ``PENDING`` intent is
    still there): if the move's history event was written, ``champion`` goes to the version
    the event names, else back where it was; so the alias and the history agree again.
    Returns ``"completed"``, ``"undone"`` or ``None`` (nothing was pending)."""
    tags = get_model(client, name).tags
    raw = tags.get(PENDING)
    if not raw:
        return None
    try:
        intent = json.loads(raw)
        key, want = intent["key"], intent["to" if intent["key"] in tags else "from"]
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"'{name}': unreadable {PENDING} tag {raw[:80]!r}") from None
    current = champion(client, name)
    if (int(current.version) if current else None) != want:
        _set_champion(client, name, want)
    client.delete_registered_model_tag(name, PENDING)
    done = "completed" if key in tags else "undone"
    log.warning("'%s': an interrupted champion move was %s (champion v%s)", name, done, want)
    return done


def move_champion(
    client: MlflowClient, name: str, to: int | None, previous: int | None, event: dict
) -> dict:
    """Move ``champion`` from ``previous`` to ``to`` and append ``event`` to the history, both or
    neither; the caller holds ``champion_lock``. The intent is written first (``PENDING``), so
    a failure anywhere is undone at once, or, if the store is down, by the next ``reconcile``
    (every promotion and rollback starts with one). Transient errors are retried."""
    key, event = _history_entry(client, name, event)
    intent = {"key": key, "from": previous, "to": to}
    retrying(client.set_registered_model_tag, name, PENDING, json.dumps(intent))
    try:
        if to != previous:
            retrying(_set_champion, client, name, to)
        retrying(client.set_registered_model_tag, name, key, json.dumps(event))
    except BaseException as exc:
        try:
            retrying(reconcile, client, name)
        except Exception as undo:
            first = (str(undo).strip().splitlines() or [""])[0][:160]
            raise RegistryError(
                f"'{name}': moving champion v{previous} -> v{to} failed ({_first(exc)}) and "
                f"could not be undone ({first}); the next promote or rollback restores it"
            ) from None
        if isinstance(exc, Exception) and not isinstance(exc, RegistryError):
            raise RegistryError(
                f"'{name}': moving champion v{previous} -> v{to} failed, nothing changed: "
                f"{_first(exc)}"
            ) from None
        raise
    with suppress(Exception):  # left behind, the next reconcile completes it
        retrying(client.delete_registered_model_tag, name, PENDING)
    return event


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def history(client: MlflowClient, name: str | None = None) -> list[dict]:
    """Every promote/refuse/rollback event (of ``name``, or of every model), newest first."""
    models = [get_model(client, name)] if name else list(client.search_registered_models())
    events = []
    for m in models:
        for key, value in m.tags.items():
            if key.startswith(HISTORY):
                try:
                    event = json.loads(value)
                except json.JSONDecodeError:
                    continue
                events.append((key[len(HISTORY) :], {"model": m.name, **event}))
    return [e for _, e in sorted(events, key=lambda ke: ke[0], reverse=True)]


def record_decision(
    client: MlflowClient,
    name: str,
    version: int | str,
    d: Decision,
    policy: Policy | None = None,
    by: str = "pipeline",
) -> dict:
    """Tag the decision on the version and record it: a promotion moves ``champion`` and
    appends the event together (``move_champion``), a refusal only appends. The caller holds
    ``champion_lock`` and decided ``d`` against the champion read under it."""
    version = str(version)
    previous = champion(client, name)
    prev_v = int(previous.version) if previous else None
    if d.promote and d.champion_version != prev_v:
        raise RegistryError(
            f"'{name}': v{version} was judged against champion v{d.champion_version}, but the "
            f"champion is v{prev_v}; nothing changed"
        )
    _, at = now()
    tags = {
        "promotion.decision": "promoted" if d.promote else "refused",
        "promotion.reasons": json.dumps(d.reasons),
        "promotion.rules": json.dumps(d.as_dict()["rules"]),
        "promotion.at": at,
        "promotion.by": by,
        "promotion.champion_before": str(prev_v) if prev_v else "",
    }
    if policy is not None:
        tags["promotion.policy"] = json.dumps(policy.as_dict())
    for k, v in tags.items():
        retrying(client.set_model_version_tag, name, version, k, v)
    event = {
        "event": "promote" if d.promote else "refuse",
        "version": int(version),
        "previous": prev_v,
        "champion": int(version) if d.promote else prev_v,
        "by": by,
        "policy": d.policy,
        "reasons": d.reasons,
        "rules": d.as_dict()["rules"],
    }
    if not d.promote:
        return append_history(client, name, event)
    try:
        return move_champion(client, name, int(version), prev_v, event)
    except BaseException:
        with suppress(Exception):
            client.set_model_version_tag(name, version, "promotion.decision", "failed")
        raise


def policy_of(mv) -> Policy | None:
    """The policy recorded on a version when it was last decided, if any."""
    raw = mv.tags.get("promotion.policy")
    if not raw:
        return None
    try:
        return Policy.model_validate(json.loads(raw))
    except ValueError:
        return None


def decide(
    client: MlflowClient, name: str, policy: Policy, mv, file_rules: list[Rule] = ()
) -> Decision:
    """``mv`` judged under ``policy`` against the champion as it is now (``file_rules``: its
    files' sha256 checks, added to the decision)."""
    current = champion(client, name)
    if current is not None and str(current.version) == str(mv.version):
        d = Decision(
            promote=False,
            name=name,
            version=int(mv.version),
            champion_version=int(current.version),
            policy=policy.source,
        )
        d.add(Rule("champion", False, f"v{mv.version} already is the champion of '{name}'"))
        return d
    d = evaluate(policy, version_record(mv), version_record(current) if current else None)
    d.name = name
    for rule in file_rules:
        d.add(rule)
    return d


def promote(
    client: MlflowClient,
    name: str,
    policy: Policy,
    version: int | str | None = None,
    dry_run: bool = False,
    by: str = "cli",
) -> tuple[Decision, dict | None]:
    """Re-evaluate ``version`` (default: the latest) against the current champion under
    ``policy``, and check its files' sha256 before anything moves. The champion is read, the
    decision made and recorded under ``champion_lock``, so concurrent promotions serialise and
    each is judged against the champion it replaces. Returns the decision and the history event
    (``None`` on a dry run, or when the version already is the champion)."""
    mv = get_version(client, name, version)
    file_rules = verify_files(client, mv)  # before the lock: it reads only this version
    if dry_run:
        return decide(client, name, policy, mv, file_rules), None
    with champion_lock(client, name):
        reconcile(client, name)
        d = decide(client, name, policy, mv, file_rules)
        if any(r.rule == "champion" for r in d.rules):
            return d, None
        event = record_decision(client, name, mv.version, d, policy, by=by)
    previous = [d.champion_version] if d.promote and d.champion_version else []
    _refresh_cards(client, name, [mv.version, *previous])
    return d, event


def champion_stack(events: list[dict]) -> list[int]:
    """Replay the history (newest first, as ``history`` returns it): the champions, oldest at
    the bottom; a promotion pushes, a rollback pops."""
    stack: list[int] = []
    for e in reversed(events):
        if e.get("event") == "promote":
            stack.append(int(e["version"]))
        elif e.get("event") == "rollback" and stack:
            stack.pop()
    return stack


def rollback(client: MlflowClient, name: str, dry_run: bool = False, by: str = "cli") -> dict:
    """Move ``champion`` back to the champion before the current one, as the history records
    it; the target's files are verified first. Raises ``RegistryError`` if there is none."""
    if dry_run:
        return _rollback(client, name, True, by)
    with champion_lock(client, name):
        reconcile(client, name)
        return _rollback(client, name, False, by)


def _rollback(client: MlflowClient, name: str, dry_run: bool, by: str) -> dict:
    current = champion(client, name)
    if current is None:
        raise RegistryError(f"'{name}' has no champion to roll back")
    stack = champion_stack(history(client, name))
    cur = int(current.version)
    if not stack or stack[-1] != cur:
        raise RegistryError(
            f"champion v{cur} of '{name}' was not set by a recorded promotion "
            f"(the history's champion is {f'v{stack[-1]}' if stack else 'none'}); "
            "nothing rolled back"
        )
    if len(stack) < 2:
        raise RegistryError(
            f"no previous champion of '{name}' in its history (v{cur} is the first); "
            "nothing rolled back"
        )
    target = get_version(client, name, stack[-2])
    bad = [r for r in verify_files(client, target) if not r.passed]
    if bad:
        raise RegistryError(f"{bad[0].reason}; nothing rolled back")
    event = {
        "event": "rollback",
        "version": int(target.version),
        "previous": cur,
        "champion": int(target.version),
        "by": by,
        "reasons": [f"rollback from v{cur} to the previous champion v{target.version}"],
    }
    if dry_run:
        return {"model": name, "dry_run": True, **event}
    event = move_champion(client, name, int(target.version), cur, event)
    _, at = now()
    for k, v in {
        "promotion.decision": "promoted",
        "promotion.reasons": json.dumps(event["reasons"]),
        "promotion.at": at,
        "promotion.by": f"{by} (rollback)",
    }.items():
        retrying(client.set_model_version_tag, name, str(target.version), k, v)
    retrying(client.set_model_version_tag, name, str(cur), "promotion.decision", "rolled back")
    _refresh_cards(client, name, [target.version, cur])
    return event


STAGE_NAMES = {"pretrain": "pretrained", "finetune": "finetuned"}


def stage_model_name(name: str, stage: str) -> str:
    """The registered model that holds ``name``'s backbones after ``stage``:
    ``binaryfacenet-pretrained``, ``binaryfacenet-finetuned``."""
    return f"{name}-{STAGE_NAMES.get(stage, stage)}"


def register(
    client: MlflowClient,
    name: str,
    source: str,
    run_id: str,
    tags: dict[str, str],
    description: str = "",
):
    """Create a model version of ``name`` from ``source`` with ``tags``."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="vlrface face descriptor")
    return client.create_model_version(
        name,
        source=source,
        run_id=run_id,
        tags={k: str(v) for k, v in tags.items()},
        description=description,
    )


def own_run(mv) -> bool:
    """Whether the run's metrics are the version's own: not for a training stage's version
    (``binaryfacenet-pretrained``: tag ``stage``, stored under the run's ``stages/``), which
    shares its run with the exported version, whose evaluation the run logged."""
    return "stage" not in dict(mv.tags) and "/stages/" not in (mv.source or "")


def card_inputs(client: MlflowClient, mv) -> dict:
    """Everything the model card shows of a version: its tags, its run's metrics and params, the
    pipeline configuration logged with it, whether it is champion."""
    metrics, params, config = {}, {}, None
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
            params = dict(run.data.params)
            metrics = dict(run.data.metrics) if own_run(mv) else {}
        except MlflowException:
            pass
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(mv.run_id, CONFIG_ARTIFACT, tmp)
                config = json.loads(Path(path).read_text())
        except (MlflowException, OSError, ValueError):
            config = None
    aliases = aliases_of(client, mv.name, mv.version)
    return {
        "name": mv.name,
        "version": int(mv.version),
        "aliases": aliases,
        "tags": dict(mv.tags),
        "run_id": mv.run_id,
        "run_metrics": metrics,
        "run_params": params,
        "config": config,
        "created": mv.creation_timestamp,
        "description": mv.description,
    }


def refresh_card(client: MlflowClient, name: str, version: int | str) -> str | None:
    """Re-render the version's model card and replace ``model_card.md`` in its run (after a
    later decision); returns the card, or ``None`` if the version has no run."""
    from vlrface.reports.model_card import render

    mv = client.get_model_version(name, str(version))
    if not mv.run_id:
        return None
    card = render(card_inputs(client, mv))
    client.log_text(mv.run_id, card, CARD)
    return card


def _refresh_cards(client: MlflowClient, name: str, versions: list) -> None:
    """Best effort: the decision is already recorded; a stale card must not undo it."""
    for v in versions:
        try:
            refresh_card(client, name, v)
        except (MlflowException, OSError):
            continue


def list_versions(client: MlflowClient, name: str | None = None) -> list[dict]:
    """Every version (of ``name``, or of every registered model), newest first."""
    models = [name] if name else [m.name for m in client.search_registered_models()]
    out = []
    for model in models:
        # search results leave `aliases` empty: take them from the registered model
        aliases: dict[str, list[str]] = {}
        for alias, version in get_model(client, model).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        for v in client.search_model_versions(f"name='{model}'"):
            tags = dict(v.tags)
            out.append(
                {
                    "name": v.name,
                    "version": int(v.version),
                    "aliases": sorted(aliases.get(str(v.version), [])),
                    "metrics": {
                        k[len("metric.") :]: float(x)
                        for k, x in tags.items()
                        if k.startswith("metric.")
                    },
                    "gates": {
                        k[len("gate.") :]: x == "passed"
                        for k, x in tags.items()
                        if k.startswith("gate.")
                    },
                    "latency": {
                        k[len("latency.") : -len(".ms")]: float(x)
                        for k, x in tags.items()
                        if k.startswith("latency.")
                        and k.endswith(".ms")
                        and not k.endswith(".budget_ms")
                    },
                    "latency_source": tags.get("latency.source"),
                    "decision": tags.get("promotion.decision"),
                    "created": v.creation_timestamp,
                }
            )
    return sorted(out, key=lambda r: (r["name"], -r["version"]))


# --- verified loads ---------------------------------------------------------------------------

MANIFEST = "files.json"  # sha256 of every other file of a model directory (vlrface/registration.py)
# MLflow's client writes this (the version's name and number) into a models:/ download; with a
# local artifact store and no destination it writes it into the stored version itself (e.g.
# mlflow.pyfunc.load_model("models:/<name>@champion")). vlrface never reads it.
MLFLOW_META = "registered_model_meta"


def check_tree(folder: Path, expected: dict[str, str], what: str) -> None:
    """Refuse ``folder`` unless every file ``expected`` names is there with that sha256 and no
    other file (but ``files.json`` and MLflow's ``registered_model_meta`` at the top) is; the
    error names the file."""
    folder = Path(folder)
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {
        MANIFEST,
        MLFLOW_META,
    }
    for name, sha in sorted(expected.items()):
        path = folder / name
        if name not in present:
            raise IntegrityError(f"{name} of {what} is missing; refusing to load it")
        got = provenance.sha256_file(path)
        if got != sha:
            raise IntegrityError(
                f"sha256 mismatch: {name} of {what} is {got[:12]}..., its tag says "
                f"{sha[:12]}...; refusing to load it"
            )
    if extra := sorted(present - set(expected)):
        raise IntegrityError(
            f"{extra[0]} of {what} is not among its recorded files; refusing to load it"
        )


def version_by_alias(client: MlflowClient, name: str, alias: str):
    """The version of ``name`` holding ``alias``; ``RegistryError`` if the model or the alias
    is unknown."""
    get_model(client, name)
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if _missing(exc):
            raise RegistryError(f"registered model '{name}' has no alias '{alias}'") from None
        raise


def resolve_version(client: MlflowClient, name: str, alias: str | None = None, version=None):
    """The version a reference names: by ``alias``, else ``version`` (default: the latest)."""
    if alias is not None:
        return version_by_alias(client, name, alias)
    return get_version(client, name, version)


def aliases_of(client: MlflowClient, name: str, version: int | str) -> list[str]:
    """The aliases ``version`` of ``name`` holds (search results leave ``aliases`` empty)."""
    model = get_model(client, name)
    return sorted(a for a, v in model.aliases.items() if str(v) == str(version))


def policy_for(client: MlflowClient, name: str, version=None, path: str | Path | None = None):
    """The promotion policy ``vlrface promote`` applies: ``path``, else the default file
    (``mlflow/promotion.yaml``) if present, else the policy the version was last decided under;
    ``RegistryError`` when there is none."""
    from vlrface.promotion import DEFAULT_POLICY, load_policy

    if path is not None:
        return load_policy(path)
    if Path(DEFAULT_POLICY).is_file():
        return load_policy(DEFAULT_POLICY)
    policy = policy_of(get_version(client, name, version))
    if policy is None:
        raise RegistryError(
            f"no promotion policy: {DEFAULT_POLICY} does not exist and the version records "
            "none; pass --policy FILE"
        )
    return policy


def _version_of(client: MlflowClient, uri: str):
    """The model version a ``models:/`` URI names (``@alias``, ``/<version>``, ``/latest``)."""
    from vlrface.references import parse

    ref = parse(uri)
    return resolve_version(client, ref.name, ref.alias, ref.version)


def fetch_verified(uri: str, client: MlflowClient | None = None) -> Path:
    """A local copy of the model at ``uri``, every file checked before anything reads it.

    ``models:/``: against the version's ``sha256.<file>`` tags (a version without them is
    refused); ``runs:/``: against the tags of the registered version stored there, else the
    directory's ``files.json``; a local directory: against its ``files.json`` if it has one.
    Raises ``IntegrityError`` naming the file that fails."""
    import mlflow.artifacts

    if uri.startswith("models:/"):
        client = client or MlflowClient()
        mv = _version_of(client, uri)
        expected = {k[len("sha256.") :]: v for k, v in mv.tags.items() if k.startswith("sha256.")}
        what = f"{mv.name} v{mv.version}"
        if not expected:
            raise IntegrityError(f"{what} records no sha256.<file> tags; refusing to load it")
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=mv.source, dst_path=tempfile.mkdtemp(prefix="vlrface-model-")
            )
        )
        check_tree(local, expected, what)
        return _no_pickle(local, what)
    if uri.startswith("runs:/"):
        client = client or MlflowClient()
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=tempfile.mkdtemp(prefix="vlrface-model-")
            )
        )
        run_id = uri[len("runs:/") :].strip("/").split("/", 1)[0]
        sub = uri[len("runs:/") :].strip("/").partition("/")[2].strip("/")
        for mv in client.search_model_versions(f"run_id='{run_id}'"):
            if mv.source.rstrip("/").endswith(f"/{sub}") and sub:
                expected = {
                    k[len("sha256.") :]: v for k, v in mv.tags.items() if k.startswith("sha256.")
                }
                check_tree(local, expected, f"{mv.name} v{mv.version}")
                return _no_pickle(local, f"{mv.name} v{mv.version}")
    else:
        local = Path(uri)
    manifest = local / MANIFEST
    if local.is_dir() and manifest.is_file():
        try:
            expected = json.loads(manifest.read_text())
            assert isinstance(expected, dict)
        except (ValueError, AssertionError, UnicodeDecodeError):
            raise IntegrityError(f"{manifest}: not a JSON map of sha256 sums") from None
        check_tree(local, expected, str(local))
    return _no_pickle(local, str(local)) if local.is_dir() else local


def _no_pickle(folder: Path, what: str) -> Path:
    """Refuse a model directory holding a pickle: loading one may run any code it names
    (versions registered before models-from-code: register them again)."""
    if found := pickles_in(folder):
        raise IntegrityError(
            f"{found[0]} of {what} is a pickle, which could run code when loaded; refusing to "
            "load it (register the model again: vlrface stores none)"
        )
    return folder


PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt")


def pickles_in(folder: Path) -> list[str]:
    """Files of ``folder`` (and members of zip files in it: ``.keras``, torch checkpoints) that
    are pickles, by name or by content (a pickle protocol 2+ opcode stream): ``[]`` is clean."""
    import zipfile

    def is_pickle(name: str, head: bytes) -> bool:
        return name.lower().endswith(PICKLE_SUFFIXES) or (
            len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
        )

    found = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        with path.open("rb") as f:
            head = f.read(2)
        if is_pickle(rel, head):
            found.append(rel)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                for member in z.namelist():
                    with z.open(member) as m:
                        if is_pickle(member, m.read(2)):
                            found.append(f"{rel}:{member}")
    return found
