"""Atomic promotion on a real MLflow sqlite registry: concurrent promotions serialise under the
champion lock, and the champion move and its history event succeed or fail together when the
store fails between them (failures injected as sqlite triggers: real store errors that MLflow
raises as it would for any other)."""

import multiprocessing as mp
import sqlite3

import pytest

from tests.test_promotion import make_version, new_store
from vlrface import registry
from vlrface.promotion import load_policy

ROUNDS = 20


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return new_store(tmp_path)


def _promoter(uri, policy_path, barrier, jobs, results):
    """A separate process: for each job (name, version), wait for the other promoter, then
    promote."""
    from vlrface import registry
    from vlrface.promotion import load_policy

    client = registry.client_for(uri)
    policy = load_policy(policy_path)
    for name, version in iter(jobs.get, None):
        barrier.wait()
        try:
            d, _ = registry.promote(client, name, policy, version, by=f"racer-{version}")
            results.put((name, version, d.promote, d.champion_version, None))
        except Exception as exc:  # reported to the test, which fails on it
            results.put((name, version, None, None, f"{type(exc).__name__}: {exc}"))


def test_concurrent_promotions_serialise_and_the_better_one_wins(store):
    """Champion v1; v2 (better) and v3 (worse than v2, better than v1) promoted at once by two
    processes, 20 rounds: v2 ends champion every round, and each decision was judged against
    the champion it replaced (the history's chain of champions is unbroken)."""
    names = []
    for r in range(ROUNDS):
        name = f"race{r}"
        v1 = make_version(store, name, acc14=0.70, acc7=0.50)
        registry.promote(store["client"], name, load_policy(store["policy"]), v1)
        assert make_version(store, name, acc14=0.90, acc7=0.60) == 2
        assert make_version(store, name, acc14=0.80, acc7=0.60) == 3
        names.append(name)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    queues = [ctx.Queue(), ctx.Queue()]
    procs = [
        ctx.Process(target=_promoter, args=(store["uri"], store["policy"], barrier, q, results))
        for q in queues
    ]
    for p in procs:
        p.start()
    for name in names:
        queues[0].put((name, 2))
        queues[1].put((name, 3))
    for q in queues:
        q.put(None)
    got = [results.get(timeout=300) for _ in range(2 * ROUNDS)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert [g for g in got if g[4]] == []
    client = store["client"]
    for name in names:
        mine = {v: (promoted, against) for n, v, promoted, against, _ in got if n == name}
        assert int(registry.champion(client, name).version) == 2, (name, mine)
        # v3 promoted only if it came first (then v2 replaced it); v2 always promoted
        assert mine[2][0] is True
        assert mine[3] in ((True, 1), (False, 2)), mine
        if mine[3][0]:
            assert mine[2] == (True, 3)
        events = list(reversed(registry.history(client, name)))
        chain = [e for e in events if e["event"] == "promote"]
        for before, after in zip(chain, chain[1:], strict=False):
            assert after["previous"] == before["version"]  # judged against the one it replaced
        assert chain[-1]["version"] == 2
        assert registry.champion_stack(registry.history(client, name))[-1] == 2
        assert registry.PENDING not in client.get_registered_model(name).tags


def _db(store) -> sqlite3.Connection:
    return sqlite3.connect(store["root"] / "mlflow.db", isolation_level=None)


def test_history_failure_after_the_alias_move_restores_the_alias(store):
    client, name = store["client"], "fail-history"
    policy = load_policy(store["policy"])
    v1 = make_version(store, name, acc14=0.70, acc7=0.50)
    registry.promote(client, name, policy, v1)
    v2 = make_version(store, name, acc14=0.90, acc7=0.60)
    before = registry.history(client, name)
    with _db(store) as db:
        db.execute(
            "CREATE TRIGGER no_history BEFORE INSERT ON registered_model_tags "
            "WHEN NEW.key LIKE 'history.%' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    with pytest.raises(registry.RegistryError, match="nothing changed: .*injected failure"):
        registry.promote(client, name, policy, v2)
    assert int(registry.champion(client, name).version) == v1
    assert registry.history(client, name) == before
    assert registry.PENDING not in client.get_registered_model(name).tags
    assert client.get_model_version(name, str(v2)).tags["promotion.decision"] == "failed"
    _db(store).execute("DROP TRIGGER no_history")
    d, event = registry.promote(client, name, policy, v2)
    assert d.promote and event["previous"] == v1
    assert int(registry.champion(client, name).version) == v2


def test_store_down_during_the_move_is_repaired_by_the_next_promotion(store):
    """The history write fails and so does the move back (the issue's case): the error says
    so, the intent stays, and the next locked operation puts alias and history in agreement."""
    client, name = store["client"], "fail-both"
    policy = load_policy(store["policy"])
    v1 = make_version(store, name, acc14=0.70, acc7=0.50)
    registry.promote(client, name, policy, v1)
    v2 = make_version(store, name, acc14=0.90, acc7=0.60)
    with _db(store) as db:
        db.execute(
            "CREATE TRIGGER no_history BEFORE INSERT ON registered_model_tags "
            "WHEN NEW.key LIKE 'history.%' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        # once the alias points at v2, no alias write may succeed: the move back fails
        db.execute(
            "CREATE TRIGGER no_move_back BEFORE UPDATE ON registered_model_aliases "
            f"WHEN OLD.version = {v2} BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    with pytest.raises(registry.RegistryError, match="could not be undone"):
        registry.promote(client, name, policy, v2)
    assert registry.PENDING in client.get_registered_model(name).tags
    with _db(store) as db:
        db.execute("DROP TRIGGER no_history")
        db.execute("DROP TRIGGER no_move_back")
    # the next rollback/promotion reconciles first: v1 is champion again, as the history says
    with pytest.raises(registry.RegistryError, match="no previous champion"):
        registry.rollback(client, name)
    assert int(registry.champion(client, name).version) == v1
    assert registry.champion_stack(registry.history(client, name)) == [v1]
    assert registry.PENDING not in client.get_registered_model(name).tags
    d, _ = registry.promote(client, name, policy, v2)
    assert d.promote and int(registry.champion(client, name).version) == v2
    event = registry.rollback(client, name)
    assert event["version"] == v1 and int(registry.champion(client, name).version) == v1


def test_locked_store_is_retried_and_a_held_lock_times_out(store, monkeypatch):
    """A transient 'database is locked' is retried with backoff; a champion lock held by a live
    holder makes a second promotion wait, then fail with one line naming the lock."""
    import threading
    import time

    client, name = store["client"], "locked"
    policy = load_policy(store["policy"])
    v1 = make_version(store, name, acc14=0.70, acc7=0.50)
    holder = sqlite3.connect(store["root"] / "mlflow.db", check_same_thread=False)
    holder.isolation_level = None
    holder.execute("BEGIN EXCLUSIVE")  # a writer that holds the database for a while
    threading.Timer(1.0, lambda: holder.execute("COMMIT")).start()
    start = time.monotonic()
    d, _ = registry.promote(client, name, policy, v1)
    assert d.promote and time.monotonic() - start >= 1.0
    v2 = make_version(store, name, acc14=0.90, acc7=0.60)
    with registry.champion_lock(client, name):
        with pytest.raises(registry.RegistryError, match="champion of 'locked' is locked by"):
            with registry.champion_lock(client, name, timeout=0.5):
                pass
    assert registry.promote(client, name, policy, v2)[0].promote


def test_lock_is_chosen_from_the_store_uri(tmp_path, monkeypatch):
    """sqlite: a lease row; a local directory: flock; PostgreSQL/MySQL: session locks; a remote
    server without its backend named: a one-line refusal."""
    from mlflow import MlflowClient

    assert isinstance(registry._store_lock("sqlite:////x/m.db", "k"), registry._SqliteLease)
    for uri in (str(tmp_path), tmp_path.as_uri()):
        a, b = registry._store_lock(uri, "champion:m"), registry._store_lock(uri, "champion:m")
        assert isinstance(a, registry._FileLock)
        assert a.try_acquire() is None and b.try_acquire() is not None
        a.release()
        assert b.try_acquire() is None
        b.release()
    lock = registry._store_lock("postgresql://u@127.0.0.1:9/db", "champion:m")
    assert isinstance(lock, registry._SessionLock) and lock.pg
    client = MlflowClient(tracking_uri="http://127.0.0.1:9", registry_uri="http://127.0.0.1:9")
    with pytest.raises(registry.RegistryError, match="VLRFACE_REGISTRY_LOCK_URI"):
        with registry.champion_lock(client, "m"):
            pass
    monkeypatch.setenv(registry.LOCK_ENV, f"sqlite:///{tmp_path / 'lock.db'}")
    with registry.champion_lock(client, "m", timeout=1):
        pass
