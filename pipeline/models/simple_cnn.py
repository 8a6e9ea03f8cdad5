"""A small CNN assembled from config: blocks of (conv, batch norm, activation) x n, then pooling; a head.

Readable end to end, for learning and for small images where ImageNet-sized models are wasteful.
"""

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def conv_block(in_ch: int, out_ch: int, convs: int, activation: str, pool: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            ACTIVATIONS[activation](),
        ]
    layers.append(POOLS[pool](2))
    return nn.Sequential(*layers)


class SimpleCNN(nn.Module):
    def __init__(
        self,
        num_classes: int,
        channels: tuple[int, ...] = (32, 64, 128),
        convs_per_block: int = 2,
        activation: str = "relu",
        pool: str = "max",
        hidden: int = 0,
        drop_rate: float = 0.0,
        in_chans: int = 3,
    ):
        super().__init__()
        if activation not in ACTIVATIONS or pool not in POOLS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)} and pool one of {list(POOLS)}")
        widths = [in_chans, *channels]
        self.features = nn.Sequential(
            *(
                conv_block(a, b, convs_per_block, activation, pool)
                for a, b in zip(widths, widths[1:], strict=False)
            )
        )
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop_rate)]
        if hidden:
            head += [nn.Linear(widths[-1], hidden), ACTIVATIONS[activation](), nn.Dropout(drop_rate)]
        head.append(nn.Linear(hidden or widths[-1], num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
