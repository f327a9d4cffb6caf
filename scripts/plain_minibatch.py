"""The plain PyTorch script that `scripts/benchmark.py --minibatch` times deepbasics against: a numeric CSV
(last column the 0/1 label) loaded with numpy, logistic regression from zero, shuffled mini-batches drawn
with randperm, SGD. Prints the training loop's seconds.

    python scripts/plain_minibatch.py data.csv [--batch-size 1024] [--epochs 3] [--lr 0.1]
"""

import argparse
import time

import numpy as np
import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("path")
parser.add_argument("--batch-size", type=int, default=1024)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--lr", type=float, default=0.1)
args = parser.parse_args()

torch.set_num_threads(1)
table = torch.from_numpy(np.loadtxt(args.path, delimiter=",", dtype=np.float32))
x, y = table[:, :-1].contiguous(), table[:, -1:].contiguous()
model = nn.Linear(x.shape[1], 1)
nn.init.zeros_(model.weight)
nn.init.zeros_(model.bias)
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
criterion = nn.BCEWithLogitsLoss()
start = time.perf_counter()
for _ in range(args.epochs):
    order = torch.randperm(len(x))
    for i in range(0, len(x), args.batch_size):
        rows = order[i : i + args.batch_size]
        cost = criterion(model(x[rows]), y[rows])
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
print(f"{time.perf_counter() - start:.4f}")
