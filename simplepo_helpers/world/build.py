"""`make data`: write data/ (JSONL files and the data card), byte-identically; `make reference`: build a
reference model into the cache (never over the shipped one); `--ship` (maintainers) then replaces the shipped
model with that build.

python -m simplepo_helpers.world.build [--out DIR]                 # data files only
python -m simplepo_helpers.world.build --reference [--seed N] [--ship]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .card import render_card
from .dataset import WorldConfig, build_world, checkout_data_dir, to_jsonl


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
    parser.add_argument("--out", type=Path, default=checkout_data_dir(), help="where to write the data files")
    parser.add_argument("--reference", action="store_true", help="build a reference model into the cache")
    parser.add_argument("--seed", type=int, default=0, help="the reference build's seed (init and order)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if the cache has the build")
    parser.add_argument("--ship", action="store_true", help="copy the build over the shipped reference")
    args = parser.parse_args(argv)
    if not args.reference:
        start = time.perf_counter()
        for name, content in write_world(args.out).items():
            print(f"wrote {args.out / name} ({len(content)} bytes)")
        print(f"data written in {time.perf_counter() - start:.1f} s")
        return
    from .reference import ReferenceConfig, ensure_reference_model, ship_reference_model

    path = ensure_reference_model(ReferenceConfig(seed=args.seed), rebuild=args.rebuild)
    print(f"reference build (seed {args.seed}): {path}")
    if args.ship:
        print(f"shipped: {ship_reference_model(path)}")


if __name__ == "__main__":
    main()
