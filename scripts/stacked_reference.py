"""The reference stacked sweeps (hydra/launcher=vectorized) are measured against: the work itself, written by hand as
one stacked loop. K jobs of experiment=blobs_mlp (NeuralNet(2, 5), BCE on logits, full-batch SGD) as one torch.baddbmm
computation on weights (K, in, out), each job with its own learning rate and seed (init and blobs draw), numbered as
the sweep 'model.optimizer.lr=0.01,0.03,0.1,0.3,1.0' 'seed=range(N)'. Writes <out>/<job>/model.pt (NeuralNet's
state_dict) and metrics.json. --check: job 0 against a plain nn.Module + torch.optim.SGD loop, to float32 rounding.

    python scripts/stacked_reference.py --jobs 100 --epochs 2000 --out /tmp/reference [--check]
"""

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

from deepbasics.data import BlobsDataModule
from deepbasics.models.nets import NeuralNet

LRS = [0.01, 0.03, 0.1, 0.3, 1.0]
NAMES = ["linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"]


def blobs_train(seed: int) -> tuple[torch.Tensor, torch.Tensor]:  # conf/data/blobs.yaml's: x (80, 2), y (80, 1)
    centers = [[1, 1], [-1, -1], [1, -1], [-1, 1]]
    data = BlobsDataModule(centers, 0.3, n_train=80, n_val=20, n_test=20, labels=[0, 0, 1, 1], seed=seed)
    data.setup()
    return data.splits["train"]


def net(seed: int) -> NeuralNet:
    torch.manual_seed(seed)  # as a run of its own: seed_everything(seed), then the net
    return NeuralNet(2, 5)


def logits_and_losses(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor):
    w1, b1, w2, b2 = params.values()
    out = torch.baddbmm(b2, torch.relu(torch.baddbmm(b1, x, w1)), w2)
    return out, F.binary_cross_entropy_with_logits(out, y, reduction="none").mean(dim=(1, 2))


def main() -> None:
    start = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--out", default="stacked_reference")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n_seeds = -(-args.jobs // len(LRS))  # the sweep's order: learning rate outer, seed inner
    lrs, seeds = [LRS[k // n_seeds] for k in range(args.jobs)], [k % n_seeds for k in range(args.jobs)]
    data = {seed: blobs_train(seed) for seed in set(seeds)}
    x, y = (torch.stack([data[seed][i] for seed in seeds]) for i in (0, 1))  # (K, 80, 2), (K, 80, 1)
    states = [net(seed).state_dict() for seed in seeds]  # nn.Linear keeps its weight as (out, in): transposed
    params = {n: torch.stack([s[n].T if "weight" in n else s[n][None] for s in states]) for n in NAMES}
    neg_lr = -torch.tensor(lrs).view(-1, 1, 1)
    loop_start = time.perf_counter()
    for p in params.values():
        p.requires_grad_(True)
    for _ in range(args.epochs):  # the sum of the jobs' mean losses gives each job its own gradient
        logits_and_losses(params, x, y)[1].sum().backward()
        with torch.no_grad():
            for p in params.values():
                p.addcmul_(p.grad, neg_lr)
                p.grad = None
    loop = time.perf_counter() - loop_start
    with torch.no_grad():  # p[k] of each stacked parameter: job k's
        out, losses = logits_and_losses(params, x, y)
        accuracies = ((out > 0).float() == y).float().mean(dim=(1, 2)).tolist()
        for k in range(args.jobs):
            state = {n: (p[k].T if "weight" in n else p[k][0]).contiguous().clone() for n, p in params.items()}
            os.makedirs(job_dir := os.path.join(args.out, str(k)), exist_ok=True)
            torch.save(state, os.path.join(job_dir, "model.pt"))
            record = {"lr": lrs[k], "seed": seeds[k], "train/loss": losses[k].item(), "train/accuracy": accuracies[k]}
            with open(os.path.join(job_dir, "metrics.json"), "w") as f:
                json.dump(record, f)
    print(f"{args.jobs} jobs, {args.epochs} epochs: loop {loop:.2f} s, all {time.perf_counter() - start:.2f} s")
    if args.check:  # job 0 again, alone, as a plain loop
        plain = net(seeds[0])
        optimizer = torch.optim.SGD(plain.parameters(), lr=lrs[0])
        for _ in range(args.epochs):
            optimizer.zero_grad()
            F.binary_cross_entropy_with_logits(plain(x[0]), y[0]).backward()
            optimizer.step()
        saved = torch.load(os.path.join(args.out, "0", "model.pt"))
        gap = max((saved[name] - value).abs().max().item() for name, value in plain.state_dict().items())
        print(f"check: job 0 stacked vs nn.Module + SGD, largest weight difference {gap:.1e}")
        assert gap < 1e-5, gap


if __name__ == "__main__":
    main()
