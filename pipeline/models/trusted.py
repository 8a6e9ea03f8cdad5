"""The network as validate, predict and serve see it: calibrated logits and an unknown score, in one module
that exports to ONNX with both outputs, so predict and serve stay torch-free.

The unknown score reads features, not logits: with two classes the logits are two numbers an image and carry
little of how unlike the training images an input is. A timm network gives the statistics (channel means and
spreads) of each stage's feature map besides the penultimate features: flat colours, noise and photos of other
subjects differ from the training images at the early stages too, where fine-tuning leaves the pretrained
features most intact (docs/reports/trust.md). Other networks give the penultimate features alone. A fine-tuned
network's pretrained original, where the calibrate stage kept one (pipeline.models.reference), adds its own
layers to the score.
"""

import copy

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.errors import PipelineError
from pipeline.models.factory import classifier_head
from pipeline.models.reference import rebuilt_reference


class FeatureSplit(nn.Module):
    """(logits, [features]): the network with its classifier head cut off, then the head on what it gives."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.body = copy.deepcopy(network)
        head = classifier_head(self.body)
        parent_name, _, name = next(n for n, m in self.body.named_modules() if m is head).rpartition(".")
        setattr(self.body.get_submodule(parent_name), name, nn.Identity())
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = self.body(x).flatten(1)
        return self.head(features), [features]


def channel_statistics(feature_map: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 2C): each channel's mean and spread over the image."""
    return torch.cat([feature_map.mean((2, 3)), feature_map.std((2, 3), correction=0)], 1)


class StagedSplit(nn.Module):
    """(logits, [per-stage statistics..., penultimate features]) of a timm network, through its own
    forward_intermediates and forward_head."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = copy.deepcopy(network)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        final, stages = self.network.forward_intermediates(x)
        statistics = [channel_statistics(s) for s in stages]
        penultimate = self.network.forward_head(final, pre_logits=True).flatten(1)
        return self.network.forward_head(final), [*statistics, penultimate]


class JointSplit(nn.Module):
    """(the trained network's logits, [its features..., the pretrained reference's features...])."""

    def __init__(self, trained: nn.Module, reference: nn.Module):
        super().__init__()
        self.trained, self.reference = trained, reference

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits, features = self.trained(x)
        return logits, [*features, *self.reference(x)[1]]


def split_network(network: nn.Module, image_size: int, reference: nn.Module | None = None) -> nn.Module:
    """The network split into logits and the features the unknown score reads (with the reference's after
    its own, when given)."""
    split = own_split(network, image_size)
    return split if reference is None else JointSplit(split, own_split(reference, image_size))


def own_split(network: nn.Module, image_size: int) -> nn.Module:
    """The network's split, checked to give its own logits: a network that does more after its head (none
    of timm's or this project's) is refused in one line."""
    x = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        expected = network.eval()(x)
        for kind in (
            (StagedSplit, FeatureSplit) if hasattr(network, "forward_intermediates") else (FeatureSplit,)
        ):
            split = kind(network).eval()  # copied outside inference mode: its weights stay ordinary tensors
            try:
                same = torch.allclose(split(x)[0], expected, atol=1e-4, rtol=1e-4)
            except (NotImplementedError, AssertionError, TypeError, ValueError):
                continue  # a timm network without working intermediates: its penultimate features
            if same:
                return split
    raise PipelineError(
        f"{type(network).__name__} does more after its classifier head: its features cannot be read "
        "(calibrate.unknown_method=energy needs none)"
    )


class LayerDistance(nn.Module):
    """Distance of one layer's L2-normalized features to the nearest class mean under one shared covariance
    (Lee et al., 2018); stores C x D means and a D x D precision matrix. Normalized, since flat and blank
    images give features of small norm, near the class means of raw features."""

    def __init__(self, means: torch.Tensor, precision: torch.Tensor):
        super().__init__()
        self.register_buffer("means", means.float())
        self.register_buffer("precision", precision.float())
        self.register_buffer("mean_terms", ((means.float() @ precision.float()) * means.float()).sum(1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = F.normalize(features, dim=1)
        projected = features @ self.precision
        # (f - m)' P (f - m) = f'Pf - 2 f'Pm + m'Pm for every class mean m at once
        squared = (projected * features).sum(1, keepdim=True) - 2 * projected @ self.means.T + self.mean_terms
        return squared.min(1).values.clamp(min=0).sqrt()


class Mahalanobis(nn.Module):
    """The mean over layers of each layer's distance in units of its training images' median distance, so
    that no layer outweighs the others by its dimension."""

    def __init__(self, layers: list[LayerDistance], scales: torch.Tensor):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.register_buffer("scales", scales.float())

    def forward(self, features: list[torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        distances = torch.stack([layer(f) for layer, f in zip(self.layers, features, strict=True)], 1)
        return (distances / self.scales).mean(1)


class NearestNeighbours(nn.Module):
    """Cosine distance of the penultimate features to the k-th nearest of a bank of normalized training ones
    (Sun et al., 2022); stores M x D features."""

    def __init__(self, bank: torch.Tensor, neighbours: int):
        super().__init__()
        self.register_buffer("bank", F.normalize(bank.float(), dim=1))
        self.neighbours = min(neighbours, len(bank))

    def forward(self, features: list[torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        similarity = F.normalize(features[-1], dim=1) @ self.bank.T
        return 1 - similarity.topk(self.neighbours, dim=1).values[:, -1]


class Energy(nn.Module):
    """-logsumexp of the network's own logits (Liu et al., 2020): no features stored."""

    def forward(self, features: list[torch.Tensor] | None, logits: torch.Tensor) -> torch.Tensor:
        return -torch.logsumexp(logits, dim=1)


def detector(unknown: dict) -> nn.Module:
    """The scoring module of a fitted unknown answer (pipeline.evaluation.unknown.fit_detector's tensors)."""
    tensors = unknown["tensors"]
    if unknown["method"] == "mahalanobis":
        if "scales" not in tensors:
            raise PipelineError(
                "the unknown answer was fitted by an older version: run stages=[calibrate] again"
            )
        count = len(tensors["scales"])
        layers = [LayerDistance(tensors[f"means.{i}"], tensors[f"precision.{i}"]) for i in range(count)]
        return Mahalanobis(layers, tensors["scales"])
    if unknown["method"] == "knn":
        return NearestNeighbours(tensors["bank"], int(unknown["neighbours"]))
    return Energy()


class TrustedNetwork(nn.Module):
    """(calibrated logits, unknown score), or the calibrated logits alone when no unknown answer is fitted."""

    def __init__(
        self,
        network: nn.Module,
        temperature: float | None,
        scorer: nn.Module | None,
        image_size: int,
        reference: nn.Module | None = None,
    ):
        super().__init__()
        self.reads_features = scorer is not None and not isinstance(scorer, Energy)
        self.network = split_network(network, image_size, reference) if self.reads_features else network
        self.temperature, self.scorer = temperature or 1.0, scorer

    def forward(self, x: torch.Tensor):
        logits, features = self.network(x) if self.reads_features else (self.network(x), None)
        calibrated = logits / self.temperature
        return calibrated if self.scorer is None else (calibrated, self.scorer(features, logits))


def trusted_network(network: nn.Module, trust: dict | None, image_size: int) -> TrustedNetwork:
    """The network with what the calibrate stage fitted (`trust`; None: nothing fitted)."""
    trust = trust or {}
    unknown = trust.get("unknown") or {}
    reference = rebuilt_reference(unknown["reference"]) if unknown.get("reference") else None
    scorer = detector(unknown) if unknown else None
    return TrustedNetwork(network, trust.get("temperature"), scorer, image_size, reference)
