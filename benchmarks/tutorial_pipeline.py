"""The classic tutorial's pipeline, verbatim: what the trainer is measured against.

    train_loader, test_loader = tutorial_loaders(root, 0.1307, 0.3081, n_train=60000, n_test=10000)
    figures = tutorial_epoch(train_loader, test_loader, torch.device("cpu"), seed=1)

torchvision's MNIST dataset with `Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])`,
`DataLoader(batch_size=100, shuffle=True)`, `nn.Linear(784, 10)` whose forward applies softmax,
`nn.CrossEntropyLoss`, `torch.optim.SGD(lr=0.1)`, then the test pass through a
`DataLoader(batch_size=100)`.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from softmaxreg.data import DataSplits
from softmaxreg.device import synchronize

BATCH_SIZE = 100
LR = 0.1


class TutorialNet(nn.Module):
    """The tutorial's model, verbatim: softmax in forward (CrossEntropyLoss applies another)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x.view(-1, 784)), dim=1)


def tutorial_loaders(
    root: str, mean: float, std: float, n_train: int, n_test: int
) -> tuple[DataLoader, DataLoader]:
    """The tutorial's datasets and loaders over the MNIST raw files under `root`.

    Only when the suite works on a slice of the data (quick mode) does the tutorial read the same
    number of images, through a `Subset`; otherwise its datasets are used whole, as written.
    """
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    train_set = datasets.MNIST(root, train=True, transform=transform, download=False)
    test_set = datasets.MNIST(root, train=False, transform=transform, download=False)
    if n_train < len(train_set):
        train_set = Subset(train_set, range(n_train))
    if n_test < len(test_set):
        test_set = Subset(test_set, range(n_test))
    train_loader = DataLoader(train_set, batch_size=BATCH_SIZE, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=BATCH_SIZE, shuffle=False)
    return train_loader, test_loader


def loaders_over(root: str, data: DataSplits) -> tuple[DataLoader, DataLoader]:
    """The tutorial's loaders over as many images as the suite's `data` holds: its training and
    validation splits (the tutorial trains on both) and its test split."""
    return tutorial_loaders(
        root,
        data.mean,
        data.std,
        n_train=data.train_x.shape[0] + data.val_x.shape[0],
        n_test=data.test_x.shape[0],
    )


def tutorial_epoch(
    train_loader: DataLoader, test_loader: DataLoader, device: torch.device, seed: int
) -> dict[str, float]:
    """One training epoch and one test pass exactly as the tutorial writes them, timed."""
    with torch.random.fork_rng(devices=[]):  # the tutorial seeds globally; keep ours untouched
        torch.manual_seed(seed)
        model = TutorialNet().to(device)
        criterion = nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)

        synchronize(device)
        start = time.perf_counter()
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            outputs = model(images)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
        synchronize(device)
        train_seconds = time.perf_counter() - start

        start = time.perf_counter()
        correct = total = 0
        with torch.no_grad():
            for images, labels in test_loader:
                images, labels = images.to(device), labels.to(device)
                outputs = model(images)
                _, predicted = torch.max(outputs.data, 1)
                total += labels.size(0)
                correct += (predicted == labels).sum().item()
        synchronize(device)
        eval_seconds = time.perf_counter() - start
    return {
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "train_samples": len(train_loader.dataset),
        "eval_samples": total,
        "test_accuracy": correct / total,
    }
