"""Step cache keys follow the library code each step calls (``steps/cache.py``)."""

import pytest

from steps import cache
from vlrface.provenance import code_hash


def test_code_hash_follows_content_and_names_not_location(tmp_path):
    for where in ("a", "b"):
        (tmp_path / where / "models").mkdir(parents=True)
        (tmp_path / where / "training.py").write_text("lr = 0.01\n")
        (tmp_path / where / "models" / "net.py").write_text("width = 64\n")
        (tmp_path / where / "models" / "notes.txt").write_text("not code\n")
    a, b = tmp_path / "a", tmp_path / "b"
    first = code_hash("training.py", "models", root=a)
    assert first == code_hash("models", "training.py", root=b)  # same code elsewhere: same key
    (b / "models" / "notes.txt").write_text("changed, but not code\n")
    assert code_hash("training.py", "models", root=b) == first
    (b / "models" / "net.py").write_text("width = 32\n")
    assert code_hash("training.py", "models", root=b) != first
    (b / "models" / "net.py").write_text("width = 64\n")
    (b / "models" / "net.py").rename(b / "models" / "other.py")  # a rename is a change
    assert code_hash("training.py", "models", root=b) != first


def test_a_missing_module_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.py"):
        code_hash("nope.py", root=tmp_path)


def test_every_step_policy_hashes_existing_code():
    funcs = [cache.data_code, cache.training_code, cache.evaluation_code, cache.export_code]
    funcs += [cache.latency_code, cache.registry_code, cache.torch_training_code]
    keys = [f() for f in funcs]
    assert len(set(keys)) == len(keys) and all(len(k) == 64 for k in keys)
    assert cache.TRAINING.cache_func is not None
