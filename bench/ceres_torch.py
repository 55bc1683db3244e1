"""The CERES network in PyTorch on the same weights and stacks as ceres_bench, timed the same way.

Usage: python3 bench/ceres_torch.py MODEL_DIR|- N DUMP_DIR THREADS [TRAIN_STEPS] [BATCH]

Reads the shape from MODEL_DIR/model.json (the default shape with "-"), the weights candle scored
with (DUMP_DIR/weights.safetensors, read here without the safetensors package), the stacks
(DUMP_DIR/inputs.f32) and candle's scores (DUMP_DIR/scores.f32). Checks that both give the same
scores (the same network), then prints inference stacks/s (batches of 256) and the speed of
training steps (forward, weighted BCE with logits, backward, AdamW) on batches of BATCH.
"""
import json
import struct
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def read_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {t['dtype']}, expected F32")
        a, b = t["data_offsets"]
        arr = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(t["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


class Ceres(nn.Module):
    """Stem conv, stages (a stride-2 conv entering each after the first), residual blocks
    conv-ReLU-conv plus identity, global mean, one logit: as ceres/src/model.rs."""

    def __init__(self, exposures, width, stages, blocks):
        super().__init__()
        self.convs = nn.ModuleDict()  # keys: candle's names with "." as "_"
        self.plan = []
        self.convs["stem"] = nn.Conv2d(exposures, width, 3, padding=1)
        c = width
        for s in range(stages):
            if s > 0:
                self.convs[f"stage{s}_down"] = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
                self.plan.append(("down", f"stage{s}_down"))
                c *= 2
            for b in range(blocks):
                k = f"stage{s}_block{b}"
                self.convs[f"{k}_conv1"] = nn.Conv2d(c, c, 3, padding=1)
                self.convs[f"{k}_conv2"] = nn.Conv2d(c, c, 3, padding=1)
                self.plan.append(("block", k))
        self.head = nn.Linear(c, 1)

    def load(self, tensors):
        with torch.no_grad():
            for key, conv in self.convs.items():
                name = key.replace("_", ".")
                conv.weight.copy_(tensors[f"{name}.weight"])
                conv.bias.copy_(tensors[f"{name}.bias"])
            self.head.weight.copy_(tensors["head.weight"])
            self.head.bias.copy_(tensors["head.bias"])

    def forward(self, x):
        h = torch.relu(self.convs["stem"](x))
        for what, k in self.plan:
            if what == "down":
                h = torch.relu(self.convs[k](h))
            else:
                r = self.convs[f"{k}_conv2"](torch.relu(self.convs[f"{k}_conv1"](h)))
                h = torch.relu(h + r)
        return self.head(h.mean(dim=(2, 3))).squeeze(1)


def main():
    model, n, dump, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    steps = int(sys.argv[5]) if len(sys.argv) > 5 else 20
    batch = int(sys.argv[6]) if len(sys.argv) > 6 else 64
    cfg = dict(exposures=4, cutout_px=32, width=8, stages=3, blocks_per_stage=1, context_px=64)
    if model != "-":
        cfg = json.load(open(f"{model}/model.json"))["config"]
    # One channel per exposure, two with context (cards from before context_px have none).
    channels = cfg["exposures"] * (2 if cfg.get("context_px", 0) else 1)
    torch.set_num_threads(threads)
    net = Ceres(channels, cfg["width"], cfg["stages"], cfg["blocks_per_stage"])
    net.load(read_safetensors(f"{dump}/weights.safetensors"))
    net.eval()
    s = cfg["cutout_px"]
    x = torch.from_numpy(np.fromfile(f"{dump}/inputs.f32", dtype="<f4").copy())
    x = x.reshape(n, channels, s, s)
    want = torch.from_numpy(np.fromfile(f"{dump}/scores.f32", dtype="<f4").copy())
    bs = 256
    with torch.no_grad():
        net(x[:bs])
        t0 = time.perf_counter()
        scores = torch.cat([torch.sigmoid(net(x[i:i + bs])) for i in range(0, n, bs)])
        secs = time.perf_counter() - t0
    diff = (scores - want).abs().max().item()
    print(f"pytorch {torch.__version__} inference ({threads} threads): {n} stacks in {secs:.3f} s "
          f"= {n / secs:.0f} stacks/s (largest score difference from candle {diff:.2e})")
    if diff > 1e-4:
        raise SystemExit(f"the PyTorch network's scores differ from candle's by {diff}: not the same network")
    if steps == 0:
        return
    net.train()
    b = min(batch, n)
    xb = x[:b].clone()
    y = torch.tensor([float(i % 2) for i in range(b)])
    w = torch.ones(b)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4, eps=1e-8)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = (F.binary_cross_entropy_with_logits(net(xb), y, reduction="none") * w).sum() / w.sum()
        loss.backward()
        opt.step()
        return loss.item()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        last = step()
    secs = time.perf_counter() - t0
    print(f"pytorch training: {steps} steps of {b} stacks ({threads} threads) in {secs:.3f} s "
          f"= {steps * b / secs:.0f} stacks/s, {secs * 1e3 / steps:.1f} ms/step (last loss {last:.4f})")


main()
