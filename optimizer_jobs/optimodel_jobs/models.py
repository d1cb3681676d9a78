"""Small torch models made by our own code (never downloaded), used by tests, benchmarks and the demo.

Each ``build_*`` function is a factory a source spec can name (``optimodel_jobs.models:build_encoder``),
so that a distillation student is "the same factory with other arguments". The encoder's attention
and feed-forward blocks are plain ``nn.Linear`` layers with the head count as an attribute, which is
what lets :mod:`optimodel_jobs.prune` remove whole heads and neurons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def build_mlp(in_features: int = 64, hidden: Sequence[int] = (2048, 2048, 2048), classes: int = 10) -> nn.Module:
    """A plain MLP classifier (Linear -> ReLU)* -> Linear, as an nn.Sequential the pruner understands."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def build_cnn(
    in_channels: int = 1, channels: Sequence[int] = (32, 64, 128, 128), classes: int = 10
) -> nn.Module:
    """Conv-BN-ReLU blocks, pooling after every block but the first, global average pool, linear head."""
    layers: list[nn.Module] = []
    width = in_channels
    for index, size in enumerate(channels):
        layers += [nn.Conv2d(width, size, 3, padding=1), nn.BatchNorm2d(size), nn.ReLU()]
        if 0 < index < len(channels) - 1:
            layers.append(nn.MaxPool2d(2))
        width = size
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes)]
    return nn.Sequential(*layers)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections; ``heads`` may shrink when pruned."""

    def __init__(self, hidden: int, heads: int, head_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim or hidden // heads
        inner = self.heads * self.head_dim
        self.query = nn.Linear(hidden, inner)
        self.key = nn.Linear(hidden, inner)
        self.value = nn.Linear(hidden, inner)
        self.out = nn.Linear(inner, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        shape = (batch, seq, self.heads, self.head_dim)
        q = self.query(x).reshape(shape).transpose(1, 2)
        k = self.key(x).reshape(shape).transpose(1, 2)
        v = self.value(x).reshape(shape).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out(context.transpose(1, 2).reshape(batch, seq, self.heads * self.head_dim))


class FeedForward(nn.Module):
    """Linear -> GELU -> Linear; the inner width may shrink when pruned."""

    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.intermediate = nn.Linear(hidden, inner)
        self.output = nn.Linear(inner, hidden)
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.activation(self.intermediate(x)))


class EncoderLayer(nn.Module):
    """A post-norm BERT layer."""

    def __init__(self, hidden: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.attention = SelfAttention(hidden, heads)
        self.attention_norm = nn.LayerNorm(hidden)
        self.feed_forward = FeedForward(hidden, ffn)
        self.output_norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.attention(x))
        return self.output_norm(x + self.feed_forward(x))


class Encoder(nn.Module):
    """A BERT-like encoder classifier over token ids: embeddings, N layers, mean pooling, linear head."""

    def __init__(
        self, vocab: int, seq_len: int, hidden: int, layers: int, heads: int, ffn: int, classes: int
    ) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, hidden)
        self.position_embedding = nn.Parameter(torch.zeros(1, seq_len, hidden))
        self.embedding_norm = nn.LayerNorm(hidden)
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads, ffn) for _ in range(layers))
        self.classifier = nn.Linear(hidden, classes)
        nn.init.normal_(self.position_embedding, std=0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding_norm(self.token_embedding(input_ids) + self.position_embedding)
        for layer in self.layers:
            x = layer(x)
        return self.classifier(x.mean(dim=1))


def build_encoder(
    vocab: int = 1000,
    seq_len: int = 64,
    hidden: int = 256,
    layers: int = 4,
    heads: int = 4,
    ffn: int = 1024,
    classes: int = 4,
) -> nn.Module:
    return Encoder(vocab=vocab, seq_len=seq_len, hidden=hidden, layers=layers, heads=heads, ffn=ffn, classes=classes)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
