#!/usr/bin/env python3
"""Time to accuracy in PyTorch + timm: the recipe of our `cargo bench --bench time_to_accuracy`.

Trains the small Fashion-MNIST ViT and prints the wall time at which the test accuracy first
reaches each level, in the same tables as ours. The same recipe, piece by piece:

  model      timm VisionTransformer(img_size=28, patch_size=4, in_chans=1, embed_dim=64, depth=4,
             num_heads=4, mlp_ratio=2, num_classes=10, drop_path_rate=0.1): class token, exact
             GELU, LayerNorm eps 1e-6, stochastic depth linear over depth (as ours)
  optimizer  AdamW(betas 0.9/0.999, eps 1e-8), weight decay 0.05 except on biases, norms,
             pos_embed and cls_token; gradient clipping at global norm 1
  schedule   per step: linear warmup over half an epoch, lr(s) = 2e-3 (s + 1) / warmup, then
             cosine from 2e-3 to 1e-5 over the remaining steps (our LrSchedule's formula)
  loss       cross-entropy with label smoothing 0.1; batch 64, the last partial batch dropped
  data       Fashion-MNIST IDX files; per image: random crop of the zero-padded (2 px) image,
             horizontal flip with probability 1/2, then (x / 255 - 0.2860) / 0.3530
  evaluation the whole test set after every epoch, model.eval(), inference_mode
  data order a new permutation each epoch; augmentation on the main thread, batched in torch
             (crop offsets and flips drawn per image), as cheap as ours is off the step

Times are from the start of the measurement (after `import torch, timm`, whose time is printed
separately) to the end of each epoch's evaluation. Nothing is saved (ours writes checkpoints,
inside its time). Prints figures, asserts nothing.

Set-up: see benches/peers/README.md (a virtual environment outside the repository, VENV):
  VENV/bin/python benches/peers/pytorch_time_to_accuracy.py --epochs 3 --threads 2
"""
import argparse
import gzip
import math
import os
import struct
import time

T_START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

T_IMPORTED = time.perf_counter()

MEAN, STD = 0.2860, 0.3530
SYSTEM_COPY = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    """An IDX file (gzipped or not) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(data_dir, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no {stem}[.gz] in {data_dir}")


def load(data_dir, split):
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(find(data_dir, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find(data_dir, f"{prefix}-labels-idx1-ubyte"))
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def augment(batch_u8, gen, pad=2):
    """Random crop of the zero-padded image and horizontal flip, per image; then normalise."""
    b, c, h, w = batch_u8.shape
    padded = F.pad(batch_u8.float() / 255.0, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(b, c, h, w + 2 * pad)
    cropped = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(b, c, h, w)
    cropped = cropped.gather(3, cols)
    flip = torch.rand(b, generator=gen) < 0.5
    cropped[flip] = cropped[flip].flip(-1)
    return (cropped - MEAN) / STD


def lr_at(step, base, low, warmup, total):
    if step < warmup:
        return base * (step + 1) / warmup
    x = min((step - warmup) / max(total - warmup, 1), 1.0)
    return low + (base - low) * 0.5 * (1.0 + math.cos(math.pi * x))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--levels", default="0.75,0.80,0.85")
    ap.add_argument("--data-dir", default=None, help="default: data/ if it has the files, else " + SYSTEM_COPY)
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    levels = [float(x) for x in args.levels.split(",")]

    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    data_dir = args.data_dir
    if data_dir is None:
        data_dir = "data" if os.path.exists("data/train-images-idx3-ubyte.gz") else SYSTEM_COPY
    x_train, y_train = load(data_dir, "train")
    x_test, y_test = load(data_dir, "test")
    if args.train_subset:
        x_train, y_train = x_train[: args.train_subset], y_train[: args.train_subset]
    x_test_f = (x_test.float() / 255.0 - MEAN) / STD

    model = VisionTransformer(
        img_size=28, patch_size=4, in_chans=1, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0,
        num_classes=10, drop_path_rate=0.1,
    )
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name in ("pos_embed", "cls_token") else decay).append(p)
    base_lr, min_lr, batch = 2e-3, 1e-5, 64
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=base_lr, betas=(0.9, 0.999), eps=1e-8,
    )
    steps_per_epoch = len(x_train) // batch
    warmup, total = round(0.5 * steps_per_epoch), args.epochs * steps_per_epoch
    print(
        f"pytorch_time_to_accuracy: torch {torch.__version__}, {args.threads} thread(s), {args.epochs} epochs, "
        f"{sum(p.numel() for p in model.parameters())} parameters; import {T_IMPORTED - T_START:.1f} s (not counted)"
    )
    print(f"setup (data loading, model): {time.perf_counter() - t0:.1f} s")

    step, at, rows = 0, [], []
    for epoch in range(args.epochs):
        model.train()
        t_epoch = time.perf_counter()
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            xb, yb = augment(x_train[idx], gen), y_train[idx]
            for g in opt.param_groups:
                g["lr"] = lr_at(step, base_lr, min_lr, warmup, total)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=0.1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
        train_secs = time.perf_counter() - t_epoch
        model.eval()
        correct = 0
        with torch.inference_mode():
            for i in range(0, len(x_test_f), batch):
                correct += (model(x_test_f[i : i + batch]).argmax(1) == y_test[i : i + batch]).sum().item()
        acc = correct / len(x_test_f)
        wall = time.perf_counter() - t0
        at.append((wall, acc))
        rows.append((epoch + 1, wall, acc, steps_per_epoch * batch / train_secs))
        print(f"epoch {epoch + 1}/{args.epochs}  test acc {100 * acc:.2f}%  {rows[-1][3]:.0f} img/s  at {wall:.1f} s")

    print()
    print("| epoch | wall time at its evaluation (s) | test accuracy | training images/s |")
    print("|---:|---:|---:|---:|")
    for e, wall, acc, ips in rows:
        print(f"| {e} | {wall:.1f} | {100 * acc:.2f}% | {ips:.0f} |")
    print()
    print("| test accuracy reached | wall time (s) | epoch |")
    print("|---:|---:|---:|")
    for level in levels:
        hit = next((e for e, (_, acc) in enumerate(at) if acc >= level), None)
        if hit is None:
            print(f"| {100 * level:.0f}% | not reached in {args.epochs} epochs | - |")
        else:
            print(f"| {100 * level:.0f}% | {at[hit][0]:.1f} | {hit + 1} |")
    print(f"total wall time: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
