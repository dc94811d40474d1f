"""Fuzz targets for every parser of untrusted bytes, and ``make fuzz``'s runner.

Each target writes the fuzzed bytes where the parser reads them and calls the real parser. A
case ends ``ok`` (parsed), ``refused`` (the project's own error, ``VlrfaceError``), ``foreign``
(any other exception: a bug) or, for the runner, a crash (the process died). Inputs are valid
files built by the dataset fixtures, mutated (bit flips, truncation, insertions of NUL, invalid
UTF-8, separators, duplicated spans), or random bytes.

    python -m tests.fuzz --cases 10000            # every target, one child process each
    python -m tests.fuzz --target mat --cases 500
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from vlrface.errors import VlrfaceError

SPICE = [b"\x00", b"\xff", b"\xc3\x28", b"\r", b"\n", b",", b"\t", b'"', b"#", b" ", b"-1"]


@functools.lru_cache(maxsize=1)
def fixtures() -> Path:
    """Valid release files from the dataset fixtures, built once per process."""
    from vlrface.data.fixtures.insightface import write_pack
    from vlrface.data.fixtures.lfw import write_lfw
    from vlrface.data.fixtures.tinyface import write_tinyface
    from vlrface.data.fixtures.vggface2 import write_vggface2

    root = Path(tempfile.mkdtemp(prefix="vlrface-fuzz-"))
    write_lfw(root / "lfw")
    write_vggface2(root / "vgg")
    write_tinyface(root / "tiny")
    write_pack(root / "pack")
    (root / "combine.csv").write_text(
        "source,identity,global_identity\ncasia,1,g1\nlfw,Ann,g1\ncasia,2,g2\n"
    )
    (root / "config.yaml").write_text(
        (Path(__file__).resolve().parents[1] / "configs" / "demo.yaml").read_text()
    )
    return root


def seeds(target: str) -> list[bytes]:
    root = fixtures()
    files = {
        "recordio": ["pack/train.rec", "pack/train.idx"],
        "pairs": ["lfw/pairs.txt", "lfw/pairsDevTrain.txt", "lfw/people.txt"],
        "vggface2": [
            "vgg/meta/identity_meta.csv",
            "vgg/bb_landmark/loose_bb_train.csv",
            "vgg/bb_landmark/loose_landmark_train.csv",
            "vgg/test_posetemp_imglist.txt",
        ],
        "combine": ["combine.csv"],
        "property": ["pack/property"],
        "mat": ["tiny/Testing_Set/probe_img_ID_pairs.mat"],
        "config": ["config.yaml"],
        "request": [],
    }[target]
    out = [(root / f).read_bytes() for f in files]
    if target == "recordio":  # a record's bytes (IRHeader + payload) as well
        from vlrface.data.recordio import IndexedRecordReader

        out.append(IndexedRecordReader(root / "pack" / "train.rec").read(0))
    if target == "request":
        out = [next((root / "lfw").rglob("*.jpg")).read_bytes()]
    return out


def _mutate(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    data = bytearray(seed)
    for kind, pos, blob in edits:
        at = pos % (len(data) + 1)
        if kind == 0 and data:  # flip bits
            data[at % len(data)] ^= blob[0] or 1
        elif kind == 1:  # truncate
            del data[at:]
        elif kind == 2:  # insert
            data[at:at] = blob
        elif kind == 3:  # delete a span
            del data[at : at + len(blob)]
        elif kind == 4:  # duplicate a span
            data[at:at] = data[at : at + 4 * len(blob)]
        elif kind == 5:  # overwrite
            data[at : at + len(blob)] = blob
    return bytes(data)


def inputs(target: str):
    """Mutated valid files, or raw bytes."""
    blob = st.one_of(st.sampled_from(SPICE), st.binary(min_size=1, max_size=8))
    edits = st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 1 << 20), blob), min_size=1, max_size=8
    )
    valid = seeds(target)
    if not valid:
        return st.binary(max_size=512)
    mutated = st.builds(_mutate, st.sampled_from(valid), edits)
    return st.one_of(mutated, mutated, mutated, st.binary(max_size=512))


# --- the targets: fuzzed bytes -> the real parser ------------------------------------------------


def t_recordio(data: bytes, tmp: Path) -> None:
    from vlrface.data import recordio

    src = fixtures() / "pack"
    mode = len(data) % 3
    if mode == 2:  # one record: IRHeader, label(s), payload
        recordio.unpack(data, "fuzz")
        return
    rec, idx = tmp / "train.rec", tmp / "train.idx"
    rec.write_bytes(data if mode == 0 else (src / "train.rec").read_bytes())
    idx.write_bytes((src / "train.idx").read_bytes() if mode == 0 else data)
    reader = recordio.IndexedRecordReader(rec)
    for key in list(reader.keys)[:8]:
        recordio.unpack(reader.read(int(key)), f"{rec}#{key}")


def t_pairs(data: bytes, tmp: Path) -> None:
    from vlrface.data import lfw

    path = tmp / "pairs.txt"
    path.write_bytes(data)
    if len(data) % 2:  # the two list formats, each its own parser
        lfw.read_people(path)
    else:
        lfw.read_pairs(fixtures() / "lfw", pairs=path)


def t_vggface2(data: bytes, tmp: Path) -> None:
    from vlrface.data import vggface2

    path = tmp / "x.csv"
    path.write_bytes(data)
    parser = len(data) % 4
    if parser == 0:
        vggface2.read_identity_meta(path)
    elif parser == 1:
        vggface2.read_point_csv(path, 4)
    elif parser == 2:
        vggface2.read_point_csv(path, 10)
    else:
        vggface2.read_pose_templates(path)


def t_combine(data: bytes, tmp: Path) -> None:
    from vlrface.data import combine

    path = tmp / "mapping.csv"
    path.write_bytes(data)
    combine.read_mapping(path, {"casia:1", "lfw:Ann", "casia:2"})


def t_property(data: bytes, tmp: Path) -> None:
    from vlrface.data import insightface

    path = tmp / "property"
    path.write_bytes(data)
    insightface.read_property(path)


def t_mat(data: bytes, tmp: Path) -> None:
    from vlrface.data import tinyface

    path = tmp / "probe_img_ID_pairs.mat"
    path.write_bytes(data)
    tinyface.read_id_pairs(path, "probe_set", "probe_ids")


def t_config(data: bytes, tmp: Path) -> None:
    from vlrface.config.common import load_file
    from vlrface.config.keras import PipelineConfig

    path = tmp / "config.yaml"
    path.write_bytes(data)
    load_file(path, PipelineConfig)


def t_request(data: bytes, tmp: Path) -> None:
    import pandas as pd

    from vlrface.serving import FaceDescriptor

    model = FaceDescriptor()
    model.config = {"input_size": 112, "flip": False, "threshold": None}
    model.preprocessing = None
    mode = len(data) % 4
    image = base64.b64encode(data).decode() if mode != 1 else data.decode("latin-1")
    frame = {"image": [image]}
    if mode == 2:
        frame["landmarks"] = [[float(b) for b in data[:10]]]
    if mode == 3:
        frame["landmarks"] = [data[:10].decode("latin-1")]
    model.parse_request(pd.DataFrame(frame))


TARGETS = {
    "recordio": t_recordio,
    "pairs": t_pairs,
    "vggface2": t_vggface2,
    "combine": t_combine,
    "property": t_property,
    "mat": t_mat,
    "config": t_config,
    "request": t_request,
}


def run_case(target: str, data: bytes) -> tuple[str, str | None]:
    """``(outcome, detail)``: ``ok``, ``refused`` or ``foreign`` with the exception."""
    tmp = Path(tempfile.mkdtemp(prefix="vlrface-case-"))
    try:
        TARGETS[target](data, tmp)
        return "ok", None
    except VlrfaceError:
        return "refused", None
    except Exception as exc:  # noqa: BLE001 - what the fuzzer is looking for
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        return "foreign", f"{type(exc).__name__} at {where}: {str(exc)[:160]}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fuzz(target: str, cases: int, seed: int = 0) -> dict:
    """``cases`` hypothesis-generated inputs against one target; the outcome counts."""
    counts = {"ok": 0, "refused": 0, "foreign": 0}
    foreign: dict[str, int] = {}
    start = time.monotonic()

    @settings(
        max_examples=cases,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(inputs(target))
    def run(data):
        outcome, detail = run_case(target, data)
        counts[outcome] += 1
        if detail:
            foreign[detail] = foreign.get(detail, 0) + 1

    import random

    random.seed(seed)
    run()
    return {
        "target": target,
        "cases": sum(counts.values()),
        **counts,
        "seconds": round(time.monotonic() - start, 1),
        "foreign_examples": dict(sorted(foreign.items(), key=lambda kv: -kv[1])[:10]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=sorted(TARGETS), action="append")
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(fuzz(args.target[0], args.cases)))
        return 0
    rows, bad = [], 0
    for target in args.target or list(TARGETS):
        # one child process a target: a crash (a signal) is counted, not fatal to the run
        done = subprocess.run(
            [sys.executable, "-m", "tests.fuzz", "--child", "--target", target]
            + ["--cases", str(args.cases)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            row = {"target": target, "crash": done.returncode, "stderr": done.stderr[-400:]}
        else:
            row = {**json.loads(done.stdout.strip().splitlines()[-1]), "crash": 0}
        bad += bool(row["crash"]) + row.get("foreign", 0)
        rows.append(row)
        print(json.dumps(row), flush=True)
    total = sum(r.get("cases", 0) for r in rows)
    foreign = sum(r.get("foreign", 0) for r in rows)
    crashes = sum(1 for r in rows if r["crash"])
    print(f"fuzz: {total} cases, {foreign} foreign exceptions, {crashes} crashes")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
