"""Malformed command lines against the ``mcip`` CLI: every one must end with a message (exit status 2, or
argparse's usage error), never a Python traceback.

    python tools/probe_bad_inputs.py [--model MODEL_DIR] [--jobs 2]

Builds its own small inputs in a temporary folder (a tiny index, manifests in odd encodings, broken
images, key files that are too short, not UTF-8 or readable by others); without ``--model`` the cases that
need a model use the tiny test architecture registered here (random weights: the answers do not matter,
only that the command fails cleanly). Prints one line per case (``ok`` / ``TRACEBACK`` / ``exit 0``) and
ends with ``RESULT cli_bad_input_tracebacks N target <=0``.

The test suite imports it (``tests/index/test_bad_input_probe.py``): :func:`cases` of the index, search
and serve commands run in-process in the quick loop, every case in subprocesses under ``-m slow``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def _private(path: Path) -> Path:
    path.chmod(0o600)  # a key file others may read is refused before its content is looked at
    return path


def make_inputs(root: Path) -> dict[str, Path]:
    imgs = root / "imgs"
    for i in range(4):
        _write(imgs / "a" / f"{i}.png", b"")
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(imgs / "a" / f"{i}.png")
    p = {"imgs": imgs}
    p["latin1"] = _write(root / "latin1.csv", "path,label\nimgs/a/0.png,caf\xe9\n".encode("latin-1"))
    p["utf16"] = _write(root / "utf16.csv", "path,label\nimgs/a/0.png,x\n".encode("utf-16"))
    p["nolabel"] = _write(root / "nolabel.csv", "path,label\nimgs/a/0.png,\n")
    p["nullabel"] = _write(root / "null.jsonl", '{"path": "imgs/a/0.png", "label": null}\n')
    p["listlabel"] = _write(root / "list.jsonl", '{"path": "imgs/a/0.png", "label": ["a"]}\n')
    p["nopath"] = _write(root / "nopath.csv", "file_name,label\nx.png,a\n")
    p["dup"] = _write(root / "dup.csv", "path,label\nimgs/a/0.png,a\nimgs/a/0.png,a\n")
    p["allbad"] = _write(root / "allbad.csv", "path,label\nmissing1.png,a\nmissing2.png,b\n")
    p["empty"] = _write(root / "empty.csv", "")
    p["garbage"] = _write(root / "garbage.jsonl", "{not json\n")
    p["corrupt"] = _write(root / "corrupt.png", b"\x89PNG\r\n\x1a\nnot really")
    p["thin"] = root / "thin.png"
    Image.new("RGB", (1, 20_000)).save(p["thin"])
    p["yaml_bad"] = _write(root / "bad.yaml", "stage: gpr\nmodel: [unclosed\n")
    p["yaml_unknown"] = _write(
        root / "unknown.yaml", "stage: gpr\nout: x\nmodel: {spec: x}\ndata: {train: x}\nbogus: 1\n"
    )
    p["captions_latin1"] = _write(
        root / "caps.jsonl", '{"id": "a/0.png", "captions": ["caf\xe9"]}\n'.encode("latin-1")
    )
    p["keys_short"] = _private(_write(root / "keys.txt", "short\n"))
    p["keys_latin1"] = _private(
        _write(root / "keys-latin1.txt", "k3y-0123456789abcd\xe9f\n".encode("latin-1"))
    )
    p["keys_shared"] = _write(root / "keys-shared.txt", "k3y-0123456789abcdef\n")
    p["keys_shared"].chmod(0o644)
    p["notindex"] = root / "notindex"
    p["notindex"].mkdir()
    _write(p["notindex"] / "file.txt", "x")
    p["ids"] = _write(root / "ids.txt", "nope.png\n")
    return p


def cases(model: str, index: Path, p: dict[str, Path]) -> list[list[str]]:
    out = str(p["imgs"].parent / "out")
    m = ["--model", model]
    return [
        ["info", "no-such-backend:x"],
        ["info", "/definitely/not/a/model"],
        ["info", "openclip:NoSuchArch/none"],
        ["save", "/definitely/not/a/model", "--out", out],
        ["encode", *m, "--images", str(p["notindex"])],
        ["encode", *m, "--images", "/nope"],
        ["train", str(p["yaml_bad"])],
        ["train", str(p["yaml_unknown"])],
        ["train", "no-such-config"],
        ["train", "--set", "stage=gpr", "--set", "loop.epochs=zero"],
        ["train", "--set", "stage=nope"],
        [
            "train",
            "--set",
            "pipeline=2sft",
            "--set",
            f"model.spec={model}",
            "--set",
            f"data.train={p['latin1']}",
            "--set",
            f"out={out}",
            "--set",
            "data.encoding=no-such-codec",
        ],
        [
            "train",
            "--set",
            "stage=gpr",
            "--set",
            f"model.spec={model}",
            "--set",
            f"data.train={p['allbad']}",
            "--set",
            f"out={out}",
            "--set",
            "data.batch_size=4",
        ],
        [
            "train",
            "--set",
            "stage=gpr",
            "--set",
            f"model.spec={model}",
            "--set",
            f"data.train={p['nullabel']}",
            "--set",
            f"out={out}",
        ],
        [
            "train",
            "--set",
            "stage=gpr",
            "--set",
            f"model.spec={model}",
            "--set",
            f"data.train={p['listlabel']}",
            "--set",
            f"out={out}",
        ],
        [
            "train",
            "--set",
            "stage=mcip",
            "--set",
            f"model.spec={model}",
            "--set",
            f"data.train={p['nolabel']}",
            "--set",
            f"out={out}",
        ],
        ["index", "build", *m, "--images", str(p["utf16"]), "--out", out + "1", "--encoding", "ascii"],
        ["index", "build", *m, "--images", str(p["nopath"]), "--out", out + "2"],
        ["index", "build", *m, "--images", str(p["dup"]), "--out", out + "3"],
        ["index", "build", *m, "--images", str(p["allbad"]), "--out", out + "4"],
        ["index", "build", *m, "--images", str(p["empty"]), "--out", out + "5"],
        ["index", "build", *m, "--images", str(p["garbage"]), "--out", out + "6"],
        ["index", "build", *m, "--images", str(p["imgs"]), "--out", str(p["notindex"])],
        ["index", "build", *m, "--images", str(p["imgs"]), "--out", out + "7", "--factory", "IVF9999,Flat"],
        ["index", "build", *m, "--images", str(p["imgs"]), "--out", out + "8", "--factory", "Nonsense"],
        ["index", "build", *m, "--images", str(p["imgs"]), "--out", out + "9", "--dim", "100000"],
        ["index", "build", *m, "--images", str(p["imgs"]), "--out", out + "a", "--batch-size", "0"],
        ["index", "add", "--index", str(p["notindex"]), "--images", str(p["imgs"])],
        ["index", "check", "--index", str(index), "--captions", str(p["captions_latin1"])],
        ["index", "info", "--index", "/nope"],
        ["index", "remove", "--index", str(index), "--ids", str(p["ids"])],
        ["index", "remove", "--index", str(index), "--where", "price<<"],
        ["index", "remove", "--index", str(index)],
        ["index", "rebuild", "--index", str(index), "--model", "/nope"],
        ["search", "--index", str(index), "--text", ""],
        ["search", "--index", str(index), "--text", "x" * 5000],
        ["search", "--index", str(index), "--image", str(p["corrupt"])],
        ["search", "--index", str(index), "--image", str(p["thin"])],
        ["search", "--index", str(index), "--id", "no/such.png"],
        ["search", "--index", str(index), "--text", "a", "--k", "0"],
        ["search", "--index", str(index), "--text", "a", "--alpha", "2"],
        ["search", "--index", str(index), "--text", "a", "--where", "=x"],
        ["index", "remove", "--index", str(index), "--ids", str(p["notindex"])],
        ["index", "remove", "--index", str(index), "--where", "price<"],
        ["search", "--index", str(index), "--text", "a", "--where", "price>=abc"],
        ["serve", "--index", str(index), "--api-key-file", str(p["keys_short"]), "--port", "0"],
        ["serve", "--index", str(index), "--api-key-file", str(p["keys_latin1"]), "--port", "0"],
        ["serve", "--index", str(index), "--api-key-file", str(p["keys_shared"]), "--port", "0"],
        ["serve", "--index", str(index), "--max-upload-mb", "nan", "--port", "0"],
        ["serve", "--index", str(index), "--max-upload-mb", "inf", "--port", "0"],
        ["serve", "--index", str(index), "--header-timeout", "inf", "--port", "0"],
        ["serve", "--index", str(index), "--max-connections", "0", "--port", "0"],
        ["serve", "--index", "/nope", "--port", "0"],
        ["eval", model, "--benchmarks", "no_such_benchmark", "--data-root", out],
        ["eval", model, "--benchmarks", f"manifest_i2i:manifest={p['garbage']}", "--data-root", out],
        [
            "captions",
            "retrieve",
            *m,
            "--images",
            str(p["imgs"]),
            "--pool",
            str(p["empty"]),
            "--out",
            out + ".jsonl",
        ],
        ["fit", "--data", str(p["nolabel"]), *m, "--out", out + "f", "--dry-run", "--no-warmup"],
        ["fit", "--data", str(p["latin1"]), *m, "--out", out + "g", "--wise-grid", "a,b", "--dry-run"],
        ["merge", model, "/nope", "--alpha", "0.5", "--out", out + "m"],
        ["merge", model, model, "--alpha", "2", "--out", out + "n"],
    ]


def run_case(args: list[str], env: dict) -> tuple[str, int, bool]:
    done = subprocess.run(
        [sys.executable, "-m", "mcip.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )
    return (
        " ".join(a if len(a) < 60 else a[:57] + "..." for a in args),
        done.returncode,
        "Traceback" in done.stderr,
    )


def tiny_model(root: Path) -> str:
    """A tiny random-weight open_clip model saved under ``root`` (its folder, for ``--model``)."""
    import open_clip
    import torch

    import mcip

    cfg = root / "mcip-probe-tiny.json"
    cfg.write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }))  # fmt: skip
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    return str(mcip.save_model(mcip.load_model("openclip:mcip-probe-tiny"), root / "model"))


def prepare(root: Path, model: str | None = None) -> tuple[str, Path, dict[str, Path]]:
    """The inputs under ``root``, the model (``model`` or :func:`tiny_model`) and a tiny index of it."""
    from mcip.index import build_index

    p = make_inputs(root)
    model = model or tiny_model(root)
    index = root / "index"
    build_index(model, p["imgs"], index, progress=False)
    return model, index, p


def run_all(jobs: int = 2, model: str | None = None) -> list[tuple[str, int, bool]]:
    """Every case in its own ``python -m mcip.cli`` process: ``(shown, exit status, traceback?)``."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, index, p = prepare(root, model)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONWARNINGS": "ignore"}
        os.chdir(root)
        try:
            with ThreadPoolExecutor(jobs) as pool:
                return list(pool.map(lambda a: run_case(a, env), cases(model, index, p)))
        finally:
            os.chdir(cwd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="an mcip model folder (default: a tiny random open_clip model)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    results = run_all(args.jobs, args.model)
    tracebacks = 0
    for shown, code, traceback in results:
        status = "TRACEBACK" if traceback else ("exit 0" if code == 0 else "ok")
        tracebacks += traceback
        print(f"{status:>9}  exit {code:>3}  mcip {shown}")
    print(f"{len(results)} bad inputs, {tracebacks} with a traceback, "
          f"{sum(code == 0 for _, code, _ in results)} that exited 0")  # fmt: skip
    print(f"RESULT cli_bad_input_tracebacks {tracebacks} target <=0")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
