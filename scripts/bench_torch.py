#!/usr/bin/env python3
"""The PyTorch side of `groupwise bench`: one GN-DGL training step written the reference way.

One process, real grouped convolutions (groups=G), stop-gradient auxiliary inputs, the diversity term, one
backward of the summed local losses and one SGD (Nesterov) step over every parameter, as in the reference
implementation: the clean PyTorch step that `groupwise bench` compares against.

Two ways to run it:
- `--serve --config K:G`: what `groupwise bench` runs, once per configuration and round. It builds the
  network, prints {"plan", "groups", "ready": true}, then for every line N read from its standard input
  runs N steps and prints {"times": [seconds of each step]}, until its input ends. groupwise times its
  own step and this one's alternately, one step each, so both sides see the machine at the same moments.
- on its own: times every `--config` in turn and prints one JSON line per configuration:
  {"plan", "groups", "median_s", "images_per_s"}.

Usage: python3 scripts/bench_torch.py --batch 128 --steps 20 --warmup 3 --threads 2 --config 1:1 --config 4:4
(`--config K:G` with K one of the ResNet-32 table's plans; default 1:1, 4:1, 4:2, 4:4, as `groupwise bench`).
Needs torch (pip install torch==2.11.0).
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

TABLE = {
    "1": [],
    "1A": [(3, 4)],
    "2": [(2, 1), (3, 4)],
    "4": [(1, 2), (2, 1), (3, 0), (3, 4)],
    "8": [(1, 0), (1, 2), (1, 4), (2, 1), (2, 3), (3, 0), (3, 2), (3, 4)],
}


def conv(cin, cout, k, stride, groups):
    c = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False, groups=groups)
    nn.init.normal_(c.weight, 0.0, math.sqrt(2.0 / (k * k * cout)))
    return c


class Block(nn.Module):
    def __init__(self, cin, cout, stride, g1, g2):
        super().__init__()
        self.conv1, self.bn1 = conv(cin, cout, 3, stride, g1), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv(cout, cout, 3, 1, g2), nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(conv(cin, cout, 1, stride, g1), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (self.short(x) if self.short is not None else x))


def classifier(cin, hidden, classes):
    return nn.Sequential(
        conv(cin, 2 * cin, 3, 2, 1), nn.BatchNorm2d(2 * cin), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2 * cin, hidden), nn.ReLU(), nn.Linear(hidden, classes))


class Net(nn.Module):
    def __init__(self, boundaries, G, n=5, widths=(16, 16, 32, 64), cin=3, classes=10):
        super().__init__()
        self.G = G
        positions = [(0, 0)] + [(s, b) for s in (1, 2, 3) for b in range(n)]
        cut = set(boundaries)
        self.layers = nn.ModuleList()
        c = widths[0]
        prev_boundary = False
        for (s, b) in positions:
            if s == 0:
                self.layers.append(nn.Sequential(conv(cin, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU()))
            else:
                w = widths[s]
                stride = 2 if s > 1 and b == 0 else 1
                g1 = 1 if prev_boundary else G
                self.layers.append(Block(c, w, stride, g1, G))
                c = w
            prev_boundary = (s, b) in cut
        self.cut = [i for i, p in enumerate(positions) if p in cut]
        hidden = 128 * widths[0] // 16
        self.aux = nn.ModuleList(
            nn.ModuleList(classifier(self.layers[i].bn2.num_features if i else widths[0], hidden, classes)
                          for _ in range(G)) for i in self.cut)
        self.head = classifier(c, hidden, classes)

    def loss(self, x, y, lam=0.5, T=3.0):
        total = 0.0
        k = 0
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.cut:
                slices = x.chunk(self.G, 1)
                logits = []
                for g, aux in enumerate(self.aux[k]):
                    inp = torch.cat([s if h == g else s.detach() for h, s in enumerate(slices)], 1)
                    logits.append(aux(inp))
                total = total + sum(F.cross_entropy(z, y) for z in logits) + lam * diversity(logits, y, T)
                x = x.detach()
                k += 1
        return total + F.cross_entropy(self.head(x), y)


def diversity(logits, y, T):
    G = len(logits)
    if G < 2:
        return torch.zeros(())
    ps = []
    for z in logits:
        p = F.softmax(z / T, 1) * (1 - F.one_hot(y, z.shape[1]))
        p = p / (p.sum(1, keepdim=True) + 1e-8)
        ps.append(p / torch.sqrt((p * p).sum(1, keepdim=True) + 1e-8))
    tot = sum((ps[g] * ps[h]).sum() for g in range(G) for h in range(G) if g != h)
    return tot / (y.shape[0] * G * (G - 1))


class Stepper:
    """One configuration's network, optimizer and fixed batch: `step()` trains once and returns its seconds."""

    def __init__(self, cfg, batch):
        plan, G = cfg.split(":")
        self.plan, self.groups = plan, int(G)
        torch.manual_seed(0)
        self.x = torch.randn(batch, 3, 32, 32)
        self.y = torch.randint(0, 10, (batch,))
        self.net = Net(TABLE[plan], self.groups)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                                   weight_decay=1e-4)

    def step(self):
        t = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        self.net.loss(self.x, self.y).backward()
        self.opt.step()
        return time.perf_counter() - t


def serve(cfg, batch):
    s = Stepper(cfg, batch)
    print(json.dumps({"plan": s.plan, "groups": s.groups, "ready": True}), flush=True)
    for line in sys.stdin:
        n = int(line)
        print(json.dumps({"times": [s.step() for _ in range(n)]}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--config", action="append", default=[])
    ap.add_argument("--serve", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.serve:
        if len(a.config) != 1:
            ap.error("--serve takes exactly one --config")
        serve(a.config[0], a.batch)
        return
    for cfg in a.config or ["1:1", "4:1", "4:2", "4:4"]:
        s = Stepper(cfg, a.batch)
        times = [s.step() for _ in range(a.warmup + a.steps)][a.warmup:]
        med = statistics.median(times)
        print(json.dumps({"plan": s.plan, "groups": s.groups, "median_s": med, "images_per_s": a.batch / med}),
              flush=True)


if __name__ == "__main__":
    main()
