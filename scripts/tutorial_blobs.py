"""The make_blobs NeuralNet tutorial as a plain PyTorch script: the baseline scripts/benchmark.py times
deepbasics against. Same recipe as experiment=blobs_mlp: 4 blobs, NeuralNet(2, 5), SGD lr 0.03, 2000
full-batch epochs, BCE; prints the cost every 100 epochs, the test accuracy, and saves model.pt."""

import argparse

import numpy as np
import torch
from sklearn.datasets import make_blobs
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=2000)
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--out", default="model.pt")
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(42)

centers = [[1, 1], [-1, -1], [1, -1], [-1, 1]]
x_train, y_train = make_blobs(n_samples=80, n_features=2, centers=centers, shuffle=True, cluster_std=0.3)
x_test, y_test = make_blobs(n_samples=20, n_features=2, centers=centers, shuffle=True, cluster_std=0.3)


def label_map(y_, from_, to_):
    y = np.copy(y_)
    for f in from_:
        y[y_ == f] = to_
    return y


y_train = label_map(label_map(y_train, [0, 1], 0), [2, 3], 1)
y_test = label_map(label_map(y_test, [0, 1], 0), [2, 3], 1)
x_train, x_test = torch.FloatTensor(x_train), torch.FloatTensor(x_test)
y_train, y_test = torch.FloatTensor(y_train).unsqueeze(1), torch.FloatTensor(y_test).unsqueeze(1)


class NeuralNet(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.linear_1 = nn.Linear(input_size, hidden_size)
        self.relu = nn.ReLU()
        self.linear_2 = nn.Linear(hidden_size, 1)

    def forward(self, x):
        return self.linear_2(self.relu(self.linear_1(x)))


model = NeuralNet(2, 5)
criterion = nn.BCEWithLogitsLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.03)
for epoch in range(args.epochs):
    optimizer.zero_grad()
    cost = criterion(model(x_train), y_train)
    if epoch % 100 == 0:
        print(f"Epoch {epoch:4d}/{args.epochs} Cost: {cost.item():.6f}")
    cost.backward()
    optimizer.step()

with torch.no_grad():
    accuracy = ((torch.sigmoid(model(x_test)) > 0.5).float() == y_test).float().mean().item()
print(f"test accuracy {accuracy:.4f}")
torch.save(model.state_dict(), args.out)
