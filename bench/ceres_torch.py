"""The CERES network in PyTorch, timed on the same random stacks as ceres_bench (stacks/s).

Usage: python3 bench/ceres_torch.py MODEL_DIR|- N. Reads MODEL_DIR/model.json for the shape
(the default shape with "-"); the weights do not change the speed, so they are left random.
"""
import json
import sys
import time

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


class Ceres(nn.Module):
    def __init__(self, exposures, width, stages, blocks):
        super().__init__()
        layers = [nn.Conv2d(exposures, width, 3, padding=1), nn.ReLU()]
        c = width
        for s in range(stages):
            if s > 0:
                layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU()]
                c *= 2
            layers += [Block(c) for _ in range(blocks)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, 1)

    def forward(self, x):
        return torch.sigmoid(self.head(self.body(x).mean(dim=(2, 3))).squeeze(1))


def main():
    model, n = sys.argv[1], int(sys.argv[2])
    cfg = dict(exposures=4, cutout_px=32, width=8, stages=3, blocks_per_stage=1)
    if model != "-":
        cfg = json.load(open(f"{model}/model.json"))["config"]
    torch.set_num_threads(2)
    net = Ceres(cfg["exposures"], cfg["width"], cfg["stages"], cfg["blocks_per_stage"]).eval()
    s = cfg["cutout_px"]
    x = torch.rand(n, cfg["exposures"], s, s) - 0.5
    with torch.no_grad():
        net(x[:256])
        t0 = time.perf_counter()
        for i in range(0, n, 256):
            net(x[i:i + 256])
        secs = time.perf_counter() - t0
    print(f"pytorch inference: {n} stacks in {secs:.3f} s = {n / secs:.0f} stacks/s")


main()
