"""Parquet manifests: provenance, atomic writes, clear errors, the CLI, and real `dvc repro`.

The DVC test copies the project's own dvc.yaml into a temp DVC repo holding a tiny synthetic
demo set, reproduces ``manifest_demo``, then "adds a dataset" (a TinyFace fixture under data/,
not yet `dvc add`ed) and reproduces its stage, checking each Parquet's md5 provenance against
what DVC recorded in dvc.lock and data.dvc; finally it runs `make data`'s own command there.
"""

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import ROOT, dvc
from vlrface.cli import main
from vlrface.data import casia, datasets
from vlrface.data.fixtures.tinyface import write_tinyface
from vlrface.data.manifest import build_manifest, load_manifest, write_manifest
from vlrface.data.synthetic import write_casia_layout
from vlrface.errors import DataError


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return write_casia_layout(tmp_path_factory.mktemp("m") / "faces", 4, 3, seed=1, progress=False)


def test_round_trip_keeps_rows_dtypes_and_provenance(tmp_path, faces):
    df = build_manifest("casia_webface", faces, progress=False)
    out = write_manifest(df, tmp_path / "sub" / "faces.parquet")
    back = load_manifest(out)
    pd.testing.assert_frame_equal(back, casia.read_manifest(faces, progress=False))
    prov = back.attrs["provenance"]
    assert prov["dataset"] == "casia_webface" and prov["root"] == str(faces)
    assert prov["rows"] == 12 and prov["skipped"] == 0 and prov["on_error"] == "raise"
    assert prov["reader_version"].startswith("vlrface.data.casia@")
    assert "dvc_md5" not in prov  # not inside a DVC repo
    assert [p.name for p in out.parent.iterdir()] == ["faces.parquet"]  # no temp file left


def test_failed_write_leaves_the_old_manifest(tmp_path, faces):
    out = write_manifest(build_manifest("casia_webface", faces, progress=False), tmp_path / "m.pq")
    before = out.read_bytes()
    bad = pd.DataFrame({"path": ["a"], "x": [object()]})  # pyarrow cannot store an object()
    with pytest.raises(Exception, match="object"):
        write_manifest(bad, out)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.pq"]


def test_errors_name_the_dataset_root_or_file(tmp_path, faces):
    with pytest.raises(DataError, match=r"unknown dataset 'casia'; known: .*casia_webface"):
        build_manifest("casia", faces)
    with pytest.raises(DataError, match=r"nowhere: data root of lfw does not exist"):
        build_manifest("lfw", tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"probe\.mat: file not found"):
        build_manifest("tinyface", faces, protocol={"probe_mat": tmp_path / "probe.mat"})
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"x\.parquet: not a readable Parquet manifest"):
        load_manifest(tmp_path / "x.parquet")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "y.parquet")
    with pytest.raises(DataError, match=r"y\.parquet: .*no vlrface provenance"):
        load_manifest(tmp_path / "y.parquet")


def test_cli_skips_and_counts_bad_records(tmp_path):
    root = tmp_path / "tinyface"
    truth = write_tinyface(root)
    bad = next((root / "Training_Set").rglob("*.jpg"))
    bad.write_bytes(bad.read_bytes()[:100])
    runner = CliRunner()
    out = tmp_path / "t.parquet"
    args = ["data", "manifest", "--dataset", "tinyface", "--root", str(root), "--out", str(out)]
    failed = runner.invoke(main, args)
    assert failed.exit_code == 1 and f"{bad}: image does not decode" in failed.output
    assert not out.exists()
    ok = runner.invoke(main, [*args, "--on-error", "skip", "--json"])
    assert ok.exit_code == 0, ok.output
    prov = json.loads(ok.output[ok.output.index("{") :])
    assert prov["skipped"] == 1 and str(bad) in prov["skipped_examples"][0]
    back = load_manifest(out)
    assert len(back) == prov["rows"] == len(truth) - 1
    wrong = runner.invoke(main, [*args, "--pairs", str(out)])
    assert wrong.exit_code == 2 and "--pairs do(es) not apply to dataset tinyface" in wrong.output
    unknown = runner.invoke(main, [*args[:3], "nope", *args[4:]])
    assert unknown.exit_code == 1 and "unknown dataset 'nope'" in unknown.output


def test_registry_matches_the_readers():
    assert set(datasets.DATASETS) == {
        "ms1m_retinaface",
        "casia_webface",
        "casia_webface_pack",
        "vggface2",
        "tinyface",
        "survface",
        "scface",
        "lfw",
        "ijbb",
        "ijbc",
    }
    train = {n for n, d in datasets.DATASETS.items() if d.role == "train"}
    assert train == {"ms1m_retinaface", "casia_webface", "casia_webface_pack", "vggface2"}
    for spec in datasets.DATASETS.values():
        params = inspect.signature(spec.reader()).parameters
        assert {p.kwarg for p in spec.protocol} | set(spec.reader_kwargs) <= set(params), spec.name
        assert set(spec.train_splits) <= set(spec.splits)
        assert (spec.pair_reader() is None) == (not spec.pairs)
    assert datasets.get("casia_webface").sizes[datasets.ALL] == datasets.Size(10_575, 494_414)
    assert datasets.get("ms1m_retinaface").sizes["train"] == datasets.Size(93_431, 5_179_510)
    assert datasets.get("survface").pairs == {True: 5_320, False: 5_320}


def test_dvc_yaml_has_a_stage_per_registered_dataset():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, spec in datasets.DATASETS.items():
        stage = stages[f"manifest_{name}"]
        cmd = stage["cmd"].split()
        assert cmd[cmd.index("--dataset") + 1] == name
        assert cmd[cmd.index("--root") + 1] == spec.root
        assert cmd[cmd.index("--out") + 1] == stage["outs"][0] == f"manifests/{name}.parquet"
        assert stage["deps"] == [spec.root, spec.module.replace(".", "/") + ".py"]
    assert stages["demo_data"]["cmd"].startswith("vlrface data synth")


def lock_dep(project: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"][stage]
    return next(d["md5"] for d in lock["deps"] if d["path"] == path)


def repro(project: Path, *targets: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "dvc", "repro", *targets],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )


def test_dvc_repro_builds_manifests_with_dvcs_md5(tmp_path):
    project = tmp_path / "project"
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    shutil.copy(ROOT / "dvc.yaml", project.mkdir() or project / "dvc.yaml")
    for dep in {d for s in stages.values() for d in s.get("deps", [])}:
        if dep.startswith("vlrface/") and (ROOT / dep).exists():  # code deps, as in the repo
            (project / dep).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / dep, project / dep)
    (project / "configs").mkdir()
    synth = {"identities": 3, "images_per_identity": 2, "seed": 0}
    (project / "configs" / "demo.yaml").write_text(
        yaml.safe_dump({"parameters": {"synthetic": synth}})
    )
    demo = project / "data" / "casia-webface-synthetic"
    write_casia_layout(demo, **synth, progress=False)
    dvc("init", "--no-scm", "-q", cwd=project)
    dvc("add", "-q", "data", cwd=project)

    done = repro(project, "manifest_demo")  # the other stages' raw folders are absent
    assert done.returncode == 0, done.stderr
    m = load_manifest(project / "manifests" / "demo.parquet")
    prov = m.attrs["provenance"]
    assert len(m) == 6 and prov["dataset"] == "casia_webface" and prov["dvc_file"] == "data.dvc"
    assert prov["dvc_md5"] == lock_dep(project, "manifest_demo", "data/casia-webface-synthetic")
    assert (
        prov["dvc_pointer_md5"]
        == yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    )

    # the user adds TinyFace under data/: outside DVC the manifest refuses an md5 that does not
    # describe the disk; `dvc repro` first commits data.dvc (a changed upstream data source)
    write_tinyface(project / "data" / "tinyface")
    with pytest.raises(DataError, match=r"data\.dvc: the tracked data differs from the pointer"):
        build_manifest("tinyface", project / "data" / "tinyface", progress=False)
    done = repro(project, "manifest_tinyface")
    assert done.returncode == 0, done.stderr
    t = load_manifest(project / "manifests" / "tinyface.parquet")
    prov = t.attrs["provenance"]
    assert prov["dvc_md5"] == lock_dep(project, "manifest_tinyface", "data/tinyface")
    pointer = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    assert prov["dvc_pointer_md5"] == pointer != m.attrs["provenance"]["dvc_pointer_md5"]
    assert set(t["split"]) == {"train", "probe", "gallery", "distractor"}

    assert "didn't change" in repro(project, "manifest_tinyface").stdout
    missing = repro(project, "manifest_lfw")  # not added: fails naming the folder
    assert missing.returncode != 0 and "data/lfw" in missing.stderr + missing.stdout
    # `make data`'s command still works with every manifest stage in dvc.yaml
    assert repro(project, "--force", "-q", "demo_data").returncode == 0
