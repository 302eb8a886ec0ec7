#!/usr/bin/env python3
"""PyTorch CPU anchor for small ViTs (timm VisionTransformer), float32.

Measures, per (model, mode, threads), in a fresh subprocess each:
  train : full step = zero_grad + forward + cross-entropy + backward + AdamW.step
  infer : forward only under torch.inference_mode(), model.eval()
images/s = batch / median step time over --steps timed steps after --warmup warm-up steps;
img_per_cpu_s = batch / the median CPU time of the process per step (all threads): on one thread,
what a step costs even when other jobs share the cores.
Peak RSS = getrusage(RUSAGE_SELF).ru_maxrss of that subprocess over the timed steps (read
before the FLOP-counting pass; includes the Python+torch+timm import baseline, which is
reported separately as rss_after_import_mib).
Inputs are one fixed synthetic batch (torch.randn images, random labels): no data loading.

The models and the measurement are those of our own `cargo bench --bench train_bench`
(vit_tiny_cifar = its vit-ti4, vit_fmnist = its fmnist): run the two one after the other.

Set-up (a virtual environment anywhere outside the repository, once; see benches/peers/README.md):
  python3 -m venv VENV && VENV/bin/pip install numpy torch timm

Usage (from the repository root):
  VENV/bin/python benches/peers/pytorch_vit_bench.py              # everything, threads 2 then 1
  VENV/bin/python benches/peers/pytorch_vit_bench.py --threads 2 --configs vit_tiny_cifar:train
  VENV/bin/python benches/peers/pytorch_vit_bench.py --out pytorch_vit.tsv
Configs: vit_tiny_cifar:train, vit_tiny_cifar:infer, vit_fmnist:train, vit_fmnist:infer
Env TIMM_FUSED_ATTN=0 makes timm use the explicit (unfused) q@k^T softmax @v attention.

Options for fair comparisons on other hardware:
  --isa avx2        cap PyTorch's CPU kernels (ATen, MKL, oneDNN) at AVX2, as on most laptops,
                    when the machine itself has AVX-512; compare with our own forced-AVX2 run
  --device cuda     the same step on the GPU (synchronised wall-clock timing, peak device memory); try --batch 512
  --compile         torch.compile the model first (inductor), a stronger peer than eager
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODELS = {
    # ViT-Tiny for CIFAR-10 (65 tokens: 8x8 patches + cls)
    "vit_tiny_cifar": dict(
        img_size=32, patch_size=4, in_chans=3, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0, num_classes=10
    ),
    # small ViT for Fashion-MNIST (50 tokens: 7x7 patches + cls)
    "vit_fmnist": dict(
        img_size=28, patch_size=4, in_chans=1, embed_dim=128, depth=6, num_heads=4, mlp_ratio=2.0, num_classes=10
    ),
}
DEFAULT_CONFIGS = ["vit_tiny_cifar:train", "vit_tiny_cifar:infer", "vit_fmnist:train", "vit_fmnist:infer"]


def child(args):
    import resource

    import torch
    import torch.nn.functional as F
    import timm
    from timm.models.vision_transformer import VisionTransformer

    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()
    model_name, mode = args.child.split(":")
    cfg = MODELS[model_name]
    model = VisionTransformer(**cfg).to(dev)
    nparams = sum(p.numel() for p in model.parameters())
    B = args.batch
    x = torch.randn(B, cfg["in_chans"], cfg["img_size"], cfg["img_size"], device=dev)
    y = torch.randint(0, cfg["num_classes"], (B,), device=dev)
    fused = bool(getattr(model.blocks[0].attn, "fused_attn", False))
    run = torch.compile(model) if args.compile else model

    rss_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    times, cpu, t_fwd, t_bwd, t_opt = [], [], [], [], []
    if mode == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        for i in range(args.warmup + args.steps):
            t0, c0 = time.perf_counter(), time.process_time()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(run(x), y)
            sync()
            t1 = time.perf_counter()
            loss.backward()
            sync()
            t2 = time.perf_counter()
            opt.step()
            sync()
            t3, c3 = time.perf_counter(), time.process_time()
            if i >= args.warmup:
                times.append(t3 - t0)
                cpu.append(c3 - c0)
                t_fwd.append(t1 - t0)
                t_bwd.append(t2 - t1)
                t_opt.append(t3 - t2)
        final_loss = float(loss)
    else:
        model.eval()
        with torch.inference_mode():
            for i in range(args.warmup + args.steps):
                t0, c0 = time.perf_counter(), time.process_time()
                out = run(x)
                sync()
                t1, c1 = time.perf_counter(), time.process_time()
                if i >= args.warmup:
                    times.append(t1 - t0)
                    cpu.append(c1 - c0)
        final_loss = float(F.cross_entropy(out, y))
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    peak_dev = torch.cuda.max_memory_allocated() / 2**20 if cuda else None

    # FLOP count (matmul-like ops only, torch's FlopCounterMode), outside the timed region
    flops = None
    try:
        from torch.utils.flop_counter import FlopCounterMode

        fc = FlopCounterMode(display=False)
        if mode == "train":
            with fc:
                loss = F.cross_entropy(model(x), y)
                loss.backward()
            model.zero_grad(set_to_none=True)
        else:
            with fc, torch.no_grad():
                model(x)
        flops = fc.get_total_flops()
    except Exception as e:  # noqa: BLE001
        print(f"flop counter failed: {e}", file=sys.stderr)

    med = statistics.median(times)
    res = dict(
        model=model_name,
        mode=mode,
        threads=args.threads,
        batch=B,
        steps=args.steps,
        warmup=args.warmup,
        params=nparams,
        fused_attn=fused,
        img_per_s_median=B / med,
        img_per_s_min=B / max(times),
        img_per_s_max=B / min(times),
        step_ms_median=med * 1e3,
        step_ms_min=min(times) * 1e3,
        step_ms_max=max(times) * 1e3,
        cpu_ms_median=statistics.median(cpu) * 1e3,
        img_per_cpu_s=B / statistics.median(cpu),
        fwd_ms_median=statistics.median(t_fwd) * 1e3 if t_fwd else None,
        bwd_ms_median=statistics.median(t_bwd) * 1e3 if t_bwd else None,
        opt_ms_median=statistics.median(t_opt) * 1e3 if t_opt else None,
        gflop_per_step=flops / 1e9 if flops else None,
        gflops_effective=flops / med / 1e9 if flops else None,
        rss_after_import_mib=rss_import,
        rss_after_setup_mib=rss_setup,
        peak_rss_mib=peak_rss,
        peak_device_mib=peak_dev,
        device=args.device,
        compiled=bool(args.compile),
        loss=final_loss,
        torch=torch.__version__,
        timm=timm.__version__,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        isa_cap=os.environ.get("ATEN_CPU_CAPABILITY", ""),
    )
    print("RESULT " + json.dumps(res), flush=True)


COLS = [
    "model", "mode", "threads", "batch", "fused_attn", "img_per_s_median", "img_per_s_min", "img_per_s_max",
    "step_ms_median", "cpu_ms_median", "img_per_cpu_s", "fwd_ms_median", "bwd_ms_median", "opt_ms_median", "gflop_per_step", "gflops_effective",
    "rss_after_import_mib", "peak_rss_mib", "peak_device_mib", "device", "compiled", "cpu_capability",
    "params", "torch", "timm",
]


def fmt(v):
    if isinstance(v, float):
        return f"{v:.1f}"
    return "" if v is None else str(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="2,1", help="comma list, run in this order")
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default=None, help="TSV file to write (also printed)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--isa", default=None, choices=["avx2"], help="cap PyTorch's CPU kernels at this ISA")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.threads = int(args.threads)
        return child(args)

    rows = []
    for t in [int(s) for s in args.threads.split(",")]:
        for c in args.configs.split(","):
            env = dict(os.environ, OMP_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t))
            if args.isa == "avx2":
                env.update(ATEN_CPU_CAPABILITY="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2", ONEDNN_MAX_CPU_ISA="AVX2")
            cmd = [sys.executable, os.path.abspath(__file__), "--child", c, "--threads", str(t),
                   "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--device", args.device] + (["--compile"] if args.compile else [])
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            if p.returncode != 0 or not line:
                print(f"FAILED {c} threads={t}:\n{p.stdout}\n{p.stderr}", file=sys.stderr)
                continue
            r = json.loads(line[-1][7:])
            rows.append(r)
            print("\t".join(fmt(r[k]) for k in COLS), flush=True) if len(rows) > 1 else print(
                "\t".join(COLS) + "\n" + "\t".join(fmt(r[k]) for k in COLS), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\t".join(COLS) + "\n")
            for r in rows:
                f.write("\t".join(fmt(r[k]) for k in COLS) + "\n")
        with open(os.path.splitext(args.out)[0] + ".jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
