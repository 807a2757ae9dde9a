"""python -m hack.models: build, register, train and score the test models.

ensure [NAME...]   build what is missing, register (default: the default set)
build [NAME...]    build what is missing, register nothing (no stack needed)
train              retrain micro-shapes into hack/models/weights/micro-shapes
score [--seeds N]  micro-shapes' colour score per sampler and colour
bench [--register] build bench-sd15, report parameters and seconds per image
"""

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace

from hack.models.catalog import BY_NAME, DEFAULT, MICRO_SHAPES, definition
from hack.models.provision import local_model, register_model


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} models] {message}", file=sys.stderr, flush=True)


def build_command(names: Sequence[str], register: bool) -> None:
    for name in names:
        local = local_model(name)
        if definition(name).build is None:
            state = "committed"
        else:
            state = f"built in {local.seconds:.1f}s" if local.built_now else "cached"
        log(f"{name}: {state} at {local.path}")
        if register:
            registered = register_model(definition(name), local.path)
            size = registered.spec.size_bytes or 0
            log(
                f"{name}: ModelCache {registered.namespace}/{name} "
                f"sha256 {registered.digest[:12]} {size / 1e6:.1f} MB {registered.source}"
            )


def train_command(unet_steps: int | None, vae_steps: int | None) -> None:
    from hack.models import micro_shapes

    plan = micro_shapes.Plan()
    plan = replace(
        plan,
        unet_steps=unet_steps or plan.unet_steps,
        vae_steps=vae_steps or plan.vae_steps,
    )
    report = micro_shapes.train(MICRO_SHAPES, plan)
    log(
        f"micro-shapes trained into {MICRO_SHAPES} in {report.wall_seconds:.0f}s: "
        f"UNet {report.unet.wall_seconds:.0f}s ({report.unet.cpu_seconds:.0f}s CPU), "
        f"VAE {report.vae.wall_seconds:.0f}s ({report.vae.cpu_seconds:.0f}s CPU) beside it"
    )


def score_command(seeds: int) -> bool:
    from hack.models import colour_check

    scores = colour_check.score(MICRO_SHAPES, seeds=seeds)
    for score in scores:
        print(score.line())
    return all(score.hits >= 0.9 * score.seeds for score in scores)


def bench_command(register: bool, images: int) -> None:
    from hack.models import bench

    build_command(["bench-sd15"], register=False)
    local = local_model("bench-sd15")
    figures = bench.measure(local.path, images=images)
    log(
        f"bench-sd15: {figures.parameters / 1e6:.1f}M parameters, "
        f"{figures.seconds_per_image:.2f}s per {bench.BENCH_SIZE}x{bench.BENCH_SIZE} image "
        f"at {bench.BENCH_STEPS} steps ({figures.threads} threads, {figures.images} images)"
    )
    if register:
        registered = register_model(definition("bench-sd15"), local.path)
        log(f"bench-sd15: ModelCache {registered.namespace}/bench-sd15 at {registered.source}")


def set_torch_threads(threads: int) -> None:
    """Only where torch is loaded already or about to be: `ensure` of built models
    never imports it."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m hack.models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument(
        "--threads", type=int, default=1, help="torch threads for building and drawing (1)"
    )
    commands = root.add_subparsers(dest="command", required=True)
    for command in ("ensure", "build"):
        sub = commands.add_parser(command)
        sub.add_argument(
            "names", nargs="*", help=f"of {', '.join(BY_NAME)} (default: {', '.join(DEFAULT)})"
        )
    train = commands.add_parser("train")
    train.add_argument("--unet-steps", type=int, help="default: the Plan's")
    train.add_argument("--vae-steps", type=int, help="default: the Plan's")
    score = commands.add_parser("score")
    score.add_argument("--seeds", type=int, default=10)
    bench_parser = commands.add_parser("bench")
    bench_parser.add_argument("--register", action="store_true")
    bench_parser.add_argument("--images", type=int, default=3)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    set_torch_threads(arguments.threads)
    if arguments.command in ("ensure", "build"):
        build_command(arguments.names or list(DEFAULT), register=arguments.command == "ensure")
    elif arguments.command == "train":
        train_command(arguments.unet_steps, arguments.vae_steps)
    elif arguments.command == "score":
        return 0 if score_command(arguments.seeds) else 1
    elif arguments.command == "bench":
        bench_command(arguments.register, arguments.images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
