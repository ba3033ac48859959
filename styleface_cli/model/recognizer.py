"""The face recognizer that gives StyleFace its identity prior: IResNet (ArcFace / CurricularFace backbones).

``IResNet`` has the layout and attribute names of insightface ``recognition/arcface_torch/backbones/
iresnet.py`` (``conv1, bn1, prelu, layer1..layer4`` of ``IBasicBlock`` with ``bn1, conv1, bn2, prelu,
conv2, bn3, downsample``, then ``bn2, dropout, fc, features``), so the public arcface_torch checkpoints
(``backbone.pth``) load by key name. Its ``forward`` returns both the last convolutional feature map
(what the identity projector reads, as the StyleFace appendix asks) and the 512-d embedding.

CurricularFace checkpoints (the recognizer of the StyleFace paper) come in the TFace / face.evoLVe
``Backbone`` layout (``input_layer.*``, ``body.N.shortcut_layer.*``, ``body.N.res_layer.*``,
``output_layer.*``). It differs from IResNet in three places, all of which map onto IResNet exactly:

* ``layer1``'s first block: IResNet downsamples its shortcut with a 1x1 conv + BN; the IR backbone with a
  parameter-free ``MaxPool2d(1, 2)`` (keep every second pixel). Mapped to an identity 1x1 conv + an
  identity BN.
* the residual branch: TFace's ``BasicBlockIR`` has IResNet's ``BN-conv-BN-PReLU-conv-BN``; the
  CurricularFace repository and face.evoLVe (``bottleneck_IR``) lack the middle BN. Mapped to an identity
  ``bn2``.
* the final ``BatchNorm1d`` is ``affine=False`` (CurricularFace, TFace): mapped to weight 1, bias 0.

An identity BN here has weight 1, bias 0, running mean 0 and running variance ``1 - eps``, so it is exact
up to float rounding (~1e-7 relative). ``weights.load_recognizer_weights`` reads a checkpoint file,
detects the layout from the key names and loads it strictly.

Inputs are RGB ``[N, 3, 112, 112]`` in ``[-1, 1]`` (arcface_torch's ``(x / 255 - 0.5) / 0.5``), aligned with
the ArcFace 5-point template. arcface_torch trains on RGB; the channel order of a CurricularFace / TFace
checkpoint depends on the pipeline that trained it (OpenCV readers give BGR) -- check it, and flip the
channels (``x.flip(1)``) before the recognizer if it is BGR.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from styleface_cli.errors import ConfigError, WeightsError

__all__ = [
    "RECOGNIZER_ARCHS",
    "IBasicBlock",
    "IResNet",
    "build_recognizer",
    "convert_ir_backbone_state_dict",
]

# name -> (blocks per stage, channels per stage). 'tiny' is for tests: same layout, ~2M parameters.
RECOGNIZER_ARCHS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "tiny": ((1, 1, 1, 1), (8, 16, 32, 64)),
    "iresnet50": ((3, 4, 14, 3), (64, 128, 256, 512)),
    "iresnet100": ((3, 13, 30, 3), (64, 128, 256, 512)),
}
BN_EPS = 1e-5


class IBasicBlock(nn.Module):
    """Pre-activation residual block of IResNet: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN + shortcut."""

    def __init__(
        self,
        inplanes: int,  # input channels
        planes: int,  # output channels
        stride: int = 1,  # stride of the second convolution (and of the shortcut)
        downsample: nn.Module | None = None,  # shortcut projection (1x1 conv + BN), None = identity
    ):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=BN_EPS)
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return out + shortcut


class IResNet(nn.Module):
    """IResNet backbone (arcface_torch layout) returning the last conv feature map and the embedding."""

    input_size = 112  # the 7x7 fc input below assumes 112x112 crops

    def __init__(
        self,
        layers: Sequence[int],  # residual blocks per stage, e.g. (3, 13, 30, 3) for IR-100
        widths: Sequence[int] = (64, 128, 256, 512),  # channels per stage; widths[0] is also the stem
        num_features: int = 512,  # embedding dimensionality
        dropout: float = 0.0,  # dropout before the fc (training only)
    ):
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ConfigError("IResNet needs four stages")
        self.layers = tuple(layers)
        self.widths = tuple(widths)
        self.num_features = num_features
        self.feature_channels = widths[-1]
        self.feature_size = self.input_size // 16  # four stride-2 stages: 112 -> 7
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=BN_EPS)
        self.prelu = nn.PReLU(widths[0])
        self.layer1 = self._make_layer(widths[0], layers[0], stride=2)
        self.layer2 = self._make_layer(widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(widths[3], layers[3], stride=2)
        self.bn2 = nn.BatchNorm2d(widths[3], eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(widths[3] * self.feature_size**2, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=BN_EPS)
        # Random weights are a placeholder until pretrained ones load, but they must give finite,
        # input-dependent outputs in eval mode (arcface_torch's N(0, 0.1) init overflows to NaN there):
        # variance-preserving convs, residual branches scaled down by their last BN.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.25, mode="fan_in", nonlinearity="leaky_relu")
            elif isinstance(m, IBasicBlock):
                nn.init.constant_(m.bn3.weight, 0.1)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes, eps=BN_EPS),
            )
        stage = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        stage += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [N, 3, 112, 112]`` RGB in [-1, 1] -> ``(feature_map [N, C, 7, 7], embedding [N, 512])``.

        ``feature_map`` is the output of the last residual stage, before ``bn2`` (CurricularFace's
        ``conv_out``); ``embedding`` is not normalized (``F.normalize`` it for cosine similarity).
        """
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != self.input_size or x.shape[3] != self.input_size:
            raise ValueError(f"IResNet: expected [N, 3, {self.input_size}, {self.input_size}], got {list(x.shape)}")
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        feature_map = x  # [N, C, 7, 7]
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        embedding = self.features(self.fc(x))  # [N, num_features]
        return feature_map, embedding

    def extra_repr(self) -> str:
        return f"layers={self.layers}, widths={self.widths}, num_features={self.num_features}"


def build_recognizer(arch: str) -> IResNet:
    """An IResNet of a named architecture ('tiny' | 'iresnet50' | 'iresnet100'), randomly initialised."""
    if arch not in RECOGNIZER_ARCHS:
        raise ConfigError(f"unknown recognizer {arch!r}; expected one of {', '.join(RECOGNIZER_ARCHS)}")
    layers, widths = RECOGNIZER_ARCHS[arch]
    return IResNet(layers, widths)


# ----------------------------------------------------------------------------------------------------
# Third-party checkpoints (file reading and strict loading live in ``weights.load_recognizer_weights``).


def _identity_bn(prefix: str, channels: int) -> dict[str, torch.Tensor]:
    """BatchNorm tensors that pass their input through (up to rounding: var + eps == 1)."""
    return {
        f"{prefix}.weight": torch.ones(channels),
        f"{prefix}.bias": torch.zeros(channels),
        f"{prefix}.running_mean": torch.zeros(channels),
        f"{prefix}.running_var": torch.full([channels], 1.0 - BN_EPS),
        f"{prefix}.num_batches_tracked": torch.zeros([], dtype=torch.long),
    }


def convert_ir_backbone_state_dict(state: Mapping[str, torch.Tensor], layers: Sequence[int]) -> dict[str, torch.Tensor]:
    """Map a TFace / CurricularFace / face.evoLVe IR backbone state dict onto IResNet's keys.

    Args:
        state: ``input_layer.*``, ``body.N.*``, ``output_layer.*`` tensors (IR-50 or IR-101 layout).
        layers: IResNet blocks per stage, e.g. (3, 4, 14, 3); ``sum(layers)`` must equal the body length.

    Returns:
        An IResNet state dict for a strict load. Source keys it does not use are passed through under
        their own names, so the strict load reports them as unexpected instead of dropping them.
    """
    body = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
    if len(body) != sum(layers):
        raise WeightsError(f"the IR backbone has {len(body)} body blocks, the recognizer expects {sum(layers)}")
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def copy(dst: str, src: str) -> None:
        if src not in state:
            raise WeightsError(f"IR backbone weights lack {src}")
        out[dst] = state[src]
        used.add(src)

    def copy_bn(dst: str, src: str) -> None:
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            if f"{src}.{name}" in state:  # weight/bias absent when affine=False; num_batches_tracked when old
                copy(f"{dst}.{name}", f"{src}.{name}")

    copy("conv1.weight", "input_layer.0.weight")
    copy_bn("bn1", "input_layer.1")
    copy("prelu.weight", "input_layer.2.weight")
    index = 0
    for stage, blocks in enumerate(layers, start=1):
        for j in range(blocks):
            src, dst = f"body.{index}", f"layer{stage}.{j}"
            index += 1
            copy_bn(f"{dst}.bn1", f"{src}.res_layer.0")
            copy(f"{dst}.conv1.weight", f"{src}.res_layer.1.weight")
            if f"{src}.res_layer.2.running_mean" in state:  # TFace BasicBlockIR: BN-conv-BN-PReLU-conv-BN
                copy_bn(f"{dst}.bn2", f"{src}.res_layer.2")
                copy(f"{dst}.prelu.weight", f"{src}.res_layer.3.weight")
                copy(f"{dst}.conv2.weight", f"{src}.res_layer.4.weight")
                copy_bn(f"{dst}.bn3", f"{src}.res_layer.5")
            else:  # CurricularFace repository / face.evoLVe bottleneck_IR: BN-conv-PReLU-conv-BN
                out.update(_identity_bn(f"{dst}.bn2", out[f"{dst}.conv1.weight"].shape[0]))
                copy(f"{dst}.prelu.weight", f"{src}.res_layer.2.weight")
                copy(f"{dst}.conv2.weight", f"{src}.res_layer.3.weight")
                copy_bn(f"{dst}.bn3", f"{src}.res_layer.4")
            if f"{src}.shortcut_layer.0.weight" in state:
                copy(f"{dst}.downsample.0.weight", f"{src}.shortcut_layer.0.weight")
                copy_bn(f"{dst}.downsample.1", f"{src}.shortcut_layer.1")
            elif j == 0:  # MaxPool2d(1, 2) keeps every second pixel == identity 1x1 conv with stride 2
                channels = out[f"{dst}.conv1.weight"].shape[1]
                out[f"{dst}.downsample.0.weight"] = torch.eye(channels).reshape(channels, channels, 1, 1)
                out.update(_identity_bn(f"{dst}.downsample.1", channels))
    copy_bn("bn2", "output_layer.0")
    copy("fc.weight", "output_layer.3.weight")
    copy("fc.bias", "output_layer.3.bias")
    copy_bn("features", "output_layer.4")
    if "output_layer.4.weight" not in state:  # BatchNorm1d(affine=False)
        out["features.weight"] = torch.ones(out["fc.weight"].shape[0])
        out["features.bias"] = torch.zeros(out["fc.weight"].shape[0])
    out.update({key: value for key, value in state.items() if key not in used})
    return out
