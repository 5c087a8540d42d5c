"""`make data`: write data/ (JSONL files and the data card) and rebuild the cached reference model.

python -m simplepo_helpers.world.build [--out DIR] [--data-only] [--keep-cache]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .card import render_card
from .dataset import WorldConfig, build_world, data_dir, to_jsonl


def world_files(config: WorldConfig | None = None) -> dict[str, bytes]:
    """File name -> exact bytes of everything under data/ (JSONL files and README.md)."""
    config = config or WorldConfig()
    world = build_world(config)
    files = {f"{name}.jsonl": to_jsonl(rows) for name, rows in world.items()}
    files["README.md"] = render_card(world, config).encode()
    return files


def write_world(out: Path, config: WorldConfig | None = None) -> dict[str, bytes]:
    out.mkdir(parents=True, exist_ok=True)
    files = world_files(config)
    for name, content in files.items():
        (out / name).write_bytes(content)
    return files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=data_dir(), help="where to write the data files")
    parser.add_argument("--data-only", action="store_true", help="skip the reference model")
    parser.add_argument("--keep-cache", action="store_true", help="reuse a cached reference model if present")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    for name, content in write_world(args.out).items():
        print(f"wrote {args.out / name} ({len(content)} bytes)")
    print(f"data written in {time.perf_counter() - start:.1f} s")
    if not args.data_only:
        from .reference import ensure_reference_model

        ensure_reference_model(rebuild=not args.keep_cache)


if __name__ == "__main__":
    main()
