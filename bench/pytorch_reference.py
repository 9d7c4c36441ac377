#!/usr/bin/env python3
"""The report's GANs and training step in plain PyTorch, timed as `runner bench` times ours.

Same shapes, same init (DCGAN: conv N(0, 0.02), BatchNorm N(1, 0.02) / 0), same optimizer
(Adam 2e-4, betas (0.5, 0.999), eps 1e-8), same step (G step, then D step on the detached fake
batch), synthetic images in [-1, 1]. Prints one JSON object per model, as `runner bench
--format json` does. Needs `pip install torch` (optional: `make bench` skips it without torch).
"""
import argparse
import json
import statistics
import time

import torch
from torch import nn


class MlpG(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.ModuleList([nn.Linear(100, 32), nn.Linear(32, 64), nn.Linear(64, 128), nn.Linear(128, 784)])
        self.dropout = nn.Dropout(0.3)

    def forward(self, z):
        x = z
        for layer in self.fc[:-1]:
            x = self.dropout(nn.functional.leaky_relu(layer(x)))
        return torch.tanh(self.fc[-1](x)).view(-1, 1, 28, 28)


class MlpD(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.ModuleList([nn.Linear(784, 128), nn.Linear(128, 64), nn.Linear(64, 32), nn.Linear(32, 1)])
        self.dropout = nn.Dropout(0.3)

    def forward(self, img):
        x = img.view(-1, 784)
        for layer in self.fc[:-1]:
            x = self.dropout(nn.functional.leaky_relu(layer(x)))
        return self.fc[-1](x)


class DcganG(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Sequential(nn.Linear(100, 128 * 8 * 8))
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(128),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 128, 3, stride=1, padding=1),
            nn.BatchNorm2d(128, 0.8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 64, 3, stride=1, padding=1),
            nn.BatchNorm2d(64, 0.8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, 1, 3, stride=1, padding=1),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.conv_blocks(self.l1(z).view(-1, 128, 8, 8))


class DcganD(nn.Module):
    def __init__(self):
        super().__init__()

        def block(cin, cout, bn=True):
            layers = [nn.Conv2d(cin, cout, 3, 2, 1), nn.LeakyReLU(0.2, inplace=True), nn.Dropout2d(0.25)]
            if bn:
                layers.append(nn.BatchNorm2d(cout, 0.8))
            return layers

        self.model = nn.Sequential(*block(1, 16, bn=False), *block(16, 32), *block(32, 64), *block(64, 128))
        self.adv_layer = nn.Sequential(nn.Linear(128 * 2 * 2, 1), nn.Sigmoid())

    def forward(self, img):
        return self.adv_layer(self.model(img).view(img.shape[0], -1))


class ClassicG(nn.Module):
    """Radford et al.'s generator, as `dcgan-classic`: ConvT 1->4->8->16->32, BN + ReLU."""

    def __init__(self):
        super().__init__()

        def up(cin, cout, first=False):
            return nn.ConvTranspose2d(cin, cout, 4, 1 if first else 2, 0 if first else 1, bias=False)

        self.net = nn.Sequential(
            up(100, 256, first=True), nn.BatchNorm2d(256), nn.ReLU(True),
            up(256, 128), nn.BatchNorm2d(128), nn.ReLU(True),
            up(128, 64), nn.BatchNorm2d(64), nn.ReLU(True),
            up(64, 1), nn.Tanh(),
        )

    def forward(self, z):
        return self.net(z.view(-1, 100, 1, 1))


class ClassicD(nn.Module):
    """Radford et al.'s discriminator, as `dcgan-classic`: Conv 32->16->8->4->1, BN + LeakyReLU."""

    def __init__(self):
        super().__init__()

        def down(cin, cout, last=False):
            return nn.Conv2d(cin, cout, 4, 1 if last else 2, 0 if last else 1, bias=False)

        self.net = nn.Sequential(
            down(1, 64), nn.LeakyReLU(0.2, True),
            down(64, 128), nn.BatchNorm2d(128), nn.LeakyReLU(0.2, True),
            down(128, 256), nn.BatchNorm2d(256), nn.LeakyReLU(0.2, True),
            down(256, 1, last=True),
        )

    def forward(self, img):
        return self.net(img).view(-1, 1)


def weights_init_normal(m):
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        torch.nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif name.find("BatchNorm2d") != -1:
        torch.nn.init.normal_(m.weight.data, 1.0, 0.02)
        torch.nn.init.constant_(m.bias.data, 0.0)


def bench(model, batch, warmup, steps, device="cpu"):
    torch.manual_seed(0)
    if model == "gan":
        g, d, loss, side = MlpG(), MlpD(), nn.BCEWithLogitsLoss(), 28
    else:
        if model == "dcgan":
            g, d, loss = DcganG(), DcganD(), nn.BCELoss()
        else:
            g, d, loss = ClassicG(), ClassicD(), nn.BCEWithLogitsLoss()
        side = 32
        g.apply(weights_init_normal)
        d.apply(weights_init_normal)
    g, d = g.to(device), d.to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999), eps=1e-8)
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999), eps=1e-8)
    real = torch.rand(batch, 1, side, side, device=device) * 2 - 1
    valid = torch.ones(batch, 1, device=device)
    fake_label = torch.zeros(batch, 1, device=device)

    def step():
        opt_g.zero_grad()
        gen = g(torch.randn(batch, 100, device=device))
        g_loss = loss(d(gen), valid)
        g_loss.backward()
        opt_g.step()
        opt_d.zero_grad()
        d_loss = (loss(d(real), valid) + loss(d(gen.detach()), fake_label)) / 2
        d_loss.backward()
        opt_d.step()
        return d_loss.item(), g_loss.item()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()  # .item() waits for the GPU
        times.append((time.perf_counter() - start) * 1000)
    median = statistics.median(times)
    return {
        "model": model,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "device": device,
        "steps": steps,
        "median_ms": median,
        "min_ms": min(times),
        "max_ms": max(times),
        "images_per_s": batch * 1000 / median,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=["gan", "dcgan", "dcgan-classic"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for model in args.model or ["gan", "dcgan"]:
        print(json.dumps(bench(model, args.batch, args.warmup, args.steps, args.device)), flush=True)


if __name__ == "__main__":
    main()
