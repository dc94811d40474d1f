"""What both tracks' pipelines share: the data steps of a configured dataset."""

from __future__ import annotations

from steps import align_data, load_data, validate_data
from vlrface.data import versioning


def data_steps(
    cfg,
    config: dict,
    section: str = "data",
    seed: int = 0,
    load_id: str | None = None,
    align_id: str | None = None,
    validate_id: str | None = None,
):
    """load -> align -> validate the dataset of the configuration's ``section`` (``data`` or
    ``pretrain_data``; ``cfg`` the parsed configuration, ``config`` its JSON dump), its data
    version resolved from DVC now, at compilation. The ``*_id`` name the step invocations (None:
    the steps' own names; a second dataset's steps need their own). Returns ``(manifest, faces,
    data_info)``: ``faces`` the data section later steps read images with (the aligned copy)."""
    own = getattr(cfg, section)
    version = versioning.resolve(own.dvc_file, own.root).as_dict()
    data = config[section]
    manifest, data_info = load_data(data=data, data_version=version, seed=seed, id=load_id)
    # training reads aligned faces only: later steps read images from the aligned copy
    manifest, faces = align_data(manifest, data=data, data_version=version, id=align_id)
    validate_data(manifest, data=faces, id=validate_id)
    return manifest, faces, data_info
