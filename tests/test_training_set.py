"""Training rows of a run: SCface protocol 50/80 subjects, and TinyFace + SurvFace combined
under one root, read back through the same path every step uses."""

import pytest

from vlrface.config.common import DataConfig
from vlrface.config.keras import parse
from vlrface.data import scface
from vlrface.data.fixtures.scface import write_scface
from vlrface.data.fixtures.survface import write_survface
from vlrface.data.fixtures.tinyface import write_tinyface
from vlrface.data.records import DataError
from vlrface.data.training_set import training_rows
from vlrface.errors import ConfigError
from vlrface.preprocess import load_face


def test_scface_trains_on_subjects_up_to_n_only(tmp_path):
    write_scface(tmp_path / "scface", subjects=8)
    cfg = DataConfig(root=str(tmp_path / "scface"), layout="scface", subjects=5, synthetic=False)
    rows = training_rows(cfg)
    assert sorted(set(rows.identity.astype(int))) == [1, 2, 3, 4, 5]
    assert "mugshot" in set(rows.camera) and set(rows.camera) <= {"mugshot", *scface.VISIBLE}
    with pytest.raises(DataError, match="set data.subjects"):
        training_rows(DataConfig(root=str(tmp_path / "scface"), layout="scface"))


def test_tinyface_and_survface_combine_under_one_root(tmp_path):
    tiny = write_tinyface(tmp_path / "tinyface", train_ids=(1, 2, 3), images_per_train_id=2)
    surv = write_survface(tmp_path / "survface", train_ids=(1, 2), images_per_train_id=3)
    cfg = DataConfig(
        root=str(tmp_path),
        datasets=[
            {"layout": "tinyface", "root": "tinyface"},
            {"layout": "survface", "root": "survface"},
        ],
        synthetic=False,
    )
    rows = training_rows(cfg)
    # equal raw ids of the two releases stay two classes
    assert sorted(set(rows.identity)) == [
        "survface:1",
        "survface:2",
        "tinyface:1",
        "tinyface:2",
        "tinyface:3",
    ]
    assert len(rows) == 3 * 2 + 2 * 3
    assert set(rows.raw_identity) == {"1", "2", "3"}
    assert rows.path.str.match(r"^(tinyface|survface)/").all()
    face = load_face(cfg.root, rows.path.iloc[0])  # every step reads from data.root
    assert face.ndim == 3 and face.shape[2] == 3
    assert len(rows.attrs["provenance"]["datasets"]) == 2
    assert tiny is not None and surv is not None


def test_combined_config_is_checked(tmp_path):
    base = {"finetune": {"epochs": 1}, "pretrain": {"epochs": 1}}
    both = {"layout": "tinyface", "datasets": [{"layout": "tinyface", "root": "a"}] * 2}
    with pytest.raises(ConfigError, match="not both"):
        parse({**base, "data": both})
    with pytest.raises(ConfigError, match="under data.root"):
        parse({**base, "data": {"datasets": [{"layout": "tinyface", "root": "../x"}] * 2}})
    with pytest.raises(ConfigError, match="needs data.datasets"):
        parse({**base, "data": {"identity_mapping": "map.csv"}})
