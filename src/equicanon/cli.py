"""The ``equicanon`` command."""

from __future__ import annotations

import argparse
import sys

from .errors import EquicanonError

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    config = DemoConfig(train_images=args.train_images, test_images=args.test_images, steps=args.steps,
                        batch=args.batch, seed=args.seed)
    run_demo(args.out, config, data_dir=args.data_dir, plots=not args.no_plots)
    return 0


_TRAINING = {"fit": "train a model from a YAML config (Lightning CLI: --config X.yaml, --trainer.*, --model.*, --data.*)",
             "validate": "validate a checkpoint (--config X.yaml --ckpt_path C.ckpt)",
             "test": "test a checkpoint (--config X.yaml --ckpt_path C.ckpt)"}


def _plot(args: argparse.Namespace) -> int:
    from .training.cli import _equicanon_cause
    from .training.plot import plot_checkpoint

    try:
        plot_checkpoint(args.config, args.ckpt_path, args.out, samples=args.samples, angles=args.angles,
                        overrides=args.overrides)
    except (ValueError, TypeError) as e:  # jsonargparse wraps equicanon's errors: show ours
        cause = None if isinstance(e, EquicanonError) else _equicanon_cause(e)  # ours already: as it is
        if cause is None:
            raise
        raise cause from e
    return 0


def _training(argv: list[str] | None) -> int:
    from .training.cli import main as training_main

    return training_main(argv)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``equicanon`` (subcommands: ``demo``; ``fit``/``validate``/``test`` are
    handed to :mod:`equicanon.training.cli` before this parser runs)."""
    from .demo import DemoConfig

    defaults = DemoConfig()
    parser = argparse.ArgumentParser(prog="equicanon", description="Equivariance by learned canonicalization.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="vanilla vs augmented vs canonicalized CNN on rotated Fashion-MNIST (minutes on a CPU)")
    demo.add_argument("--out", default="equicanon-demo", help="folder for metrics.json and the PNG plots")
    demo.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST *-ubyte.gz files")
    demo.add_argument("--steps", type=int, default=defaults.steps, help="optimisation steps per model")
    demo.add_argument("--batch", type=int, default=defaults.batch)
    demo.add_argument("--train-images", type=int, default=defaults.train_images)
    demo.add_argument("--test-images", type=int, default=defaults.test_images)
    demo.add_argument("--seed", type=int, default=defaults.seed)
    demo.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    demo.set_defaults(run=_demo)
    plot = sub.add_parser("plot", help="inputs beside canonical forms, and accuracy against rotation, for a checkpoint",
                          description="Draw a checkpoint's canonical forms and its metric against rotation angle. "
                                      "Further --key=value options override the config, as for `equicanon fit`.")
    plot.add_argument("--config", required=True, help="the YAML config the checkpoint was trained with")
    plot.add_argument("--ckpt_path", "--ckpt-path", required=True, help="a checkpoint written by `equicanon fit`")
    plot.add_argument("--out", default="equicanon-plots", help="folder for the PNGs and metric_by_angle.json")
    plot.add_argument("--samples", type=int, default=8, help="test inputs drawn beside their canonical forms (1-16)")
    plot.add_argument("--angles", type=int, default=24, help="angles of the accuracy sweep (0: no sweep)")
    plot.set_defaults(run=_plot)
    for name, text in _TRAINING.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; errors of equicanon print as one line and exit with status 2."""
    words = sys.argv[1:] if argv is None else list(argv)
    if words and words[0] in _TRAINING:
        try:  # argv=None lets Lightning read sys.argv itself (it warns when given both)
            return _training(None if argv is None else words)
        except EquicanonError as e:
            print(f"equicanon {words[0]}: error: {e}", file=sys.stderr)
            return 2
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "plot":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(args.run(args))
    except EquicanonError as e:
        print(f"equicanon {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
