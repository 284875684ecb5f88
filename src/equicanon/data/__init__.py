"""Datasets read from local files; nothing is downloaded."""

from .mnist import FASHION_MNIST_CLASSES, CorruptDataError, DataNotFoundError, load_fashion_mnist

__all__ = ["FASHION_MNIST_CLASSES", "CorruptDataError", "DataNotFoundError", "load_fashion_mnist"]
