"""Command line: ``saemi analyze | train | evaluate | serve``."""

import argparse
import sys


def _train(args):
    from .train import train

    card = train(args.data, args.out, epochs=args.epochs, crop=args.size, batch_size=args.batch_size,
                 lr=args.lr, device=args.device, val_fraction=args.val_fraction, seed=args.seed,
                 minutes=args.minutes, val_every=args.val_every, checkpoint_dir=args.checkpoint_dir,
                 resume=args.resume, limit_images=args.limit_images)
    print("validation (training scale):", card.get("validation_at_training_scale"))
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="saemi", description="Size analysis of electron-microscopy images.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train the U-Net from scratch on EMPS-style data")
    t.add_argument("--data", required=True, help="folder with images/*.png and segmaps/*.png")
    t.add_argument("--out", default="model_weights", help="where the weights, card and split go")
    t.add_argument("--epochs", type=int, default=60, help="epochs of len(train)/batch-size random crops")
    t.add_argument("--size", type=int, default=192, help="crop side in pixels at the network's scale")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the one-cycle schedule")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--val-fraction", type=float, default=0.15)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--minutes", type=float, default=None, help="wall-clock budget; the schedule ends by then")
    t.add_argument("--val-every", type=int, default=4, help="validate every N epochs")
    t.add_argument("--checkpoint-dir", default="checkpoints")
    t.add_argument("--resume", action="store_true", help="continue from checkpoints/train_state.pt")
    t.add_argument("--limit-images", type=int, default=None, help="use only the first N images (quick tests)")
    t.set_defaults(func=_train)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
