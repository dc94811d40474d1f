"""Step cache keys follow the library code each step calls (``steps/cache.py``)."""

import ast
import shutil
from pathlib import Path

import pytest

import steps
from steps import cache
from tests.conftest import ROOT
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
    keys = [cache.key(name) for name in cache.PARTS]
    assert len(set(keys)) == len(keys) and all(len(k) == 64 for k in keys)
    assert cache.TRAINING.cache_func is not None


def _part_of(step_name: str) -> str:
    policy = getattr(steps, step_name).configuration.cache_policy
    return policy.cache_func.import_path.rsplit(".", 1)[1].removesuffix("_code")


def _module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _called_modules(step_name: str) -> set[Path]:
    """Files of the vlrface modules a step uses: imported inside the step function or the
    module's helpers it calls (transitively), or imported at the module's top and named in
    them."""
    fn = getattr(steps, step_name).entrypoint
    tree = ast.parse(Path(fn.__code__.co_filename).read_text())
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    top = {}  # name bound at module level -> module it comes from
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vlrface"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                top[alias.asname or alias.name] = sub if _module_file(sub) else node.module
    found, todo, seen = set(), [step_name], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        local = set()  # names a function imports itself: not the module's functions
        for node in ast.walk(defs[name]):
            if isinstance(node, ast.ImportFrom) and node.module.startswith("vlrface"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if _module_file(sub) else node.module)
                    local.add(alias.asname or alias.name)
        for node in ast.walk(defs[name]):
            if isinstance(node, ast.Name) and node.id not in local:
                if node.id in top:
                    found.add(top[node.id])
                todo.append(node.id)
    return {_module_file(m) for m in found}


@pytest.mark.parametrize("step_name", steps.__all__)
def test_each_key_covers_the_library_its_step_calls(step_name):
    parts = [ROOT / p for p in (*cache.COMMON, *cache.PARTS[_part_of(step_name)])]
    step_file = Path(getattr(steps, step_name).entrypoint.__code__.co_filename)
    assert step_file in parts, f"{step_name}: its module {step_file.name} is not in its key"
    for used in _called_modules(step_name):
        assert any(used == p or p in used.parents for p in parts), (
            f"{step_name} calls {used.relative_to(ROOT)}, which its cache key leaves out"
        )


@pytest.fixture()
def repo_copy(tmp_path) -> Path:
    for folder in ("steps", "vlrface"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__py*"))
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path}: {old!r} not found"
    path.write_text(text.replace(old, new, 1))


def test_editing_a_called_library_function_changes_the_key(repo_copy):
    """export_onnx and evaluate_onnx load the model with ``training/torch.py``'s load_model:
    an edit there changes their keys; an edit to a helper in the step's own module does too;
    a latency table edit leaves export and training alone."""
    before = {name: cache.key(name, repo_copy) for name in cache.PARTS}
    _edit(repo_copy / "vlrface/training/torch.py", "def load_model(", "def load_model(  ")
    after = {name: cache.key(name, repo_copy) for name in cache.PARTS}
    for name in ("onnx_export", "onnx_evaluation", "torch_training", "registry"):
        assert after[name] != before[name], name
    for name in ("training", "export", "latency", "data"):
        assert after[name] == before[name], name
    _edit(repo_copy / "steps/training.py", "def _logger(", "def _logger(  ")  # a step helper
    edited = {name: cache.key(name, repo_copy) for name in cache.PARTS}
    assert edited["training"] != after["training"]
    assert edited["torch_training"] != after["torch_training"]
    _edit(repo_copy / "vlrface/latency/devices.yaml", "\n", "\n# edited\n")
    last = {name: cache.key(name, repo_copy) for name in cache.PARTS}
    changed = {name for name in cache.PARTS if last[name] != edited[name]}
    assert changed == {"latency", "onnx_latency"}
