"""The IResNet recognizer loads the public checkpoint layouts by key name and reproduces their outputs.

The reference networks below restate the public definitions (module names, order and shapes):
insightface ``recognition/arcface_torch/backbones/iresnet.py`` and the IR backbones of TFace
(``recognition/torchkit/backbone/model_irse.py``, ``BasicBlockIR``), the CurricularFace repository and
face.evoLVe (``backbone/model_irse.py``, ``bottleneck_IR``). Their random weights are written with
``torch.save`` as those projects do, and read back through ``load_recognizer_weights``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from styleface_cli.errors import WeightsError
from styleface_cli.model.recognizer import RECOGNIZER_ARCHS, IResNet, build_recognizer, convert_ir_backbone_state_dict
from styleface_cli.model.weights import load_recognizer_weights
from tests.test_model_layers import single_threaded_torch  # noqa: F401  (autouse fixture)

IR50 = (3, 4, 14, 3)
IR18 = (2, 2, 2, 2)  # arcface_torch's iresnet18 / TFace's IR_18: the same layout, fewer blocks (faster tests)


# --- arcface_torch layout ----------------------------------------------------------------------------


class ArcfaceBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class ArcfaceIResNet(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1])
        self.layer3 = self._make_layer(256, layers[2])
        self.layer4 = self._make_layer(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=0, inplace=True)
        self.fc = nn.Linear(512 * 7 * 7, 512)
        self.features = nn.BatchNorm1d(512, eps=1e-05)

    def _make_layer(self, planes, blocks):
        downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, 2, bias=False), nn.BatchNorm2d(planes, eps=1e-05))
        stage = [ArcfaceBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        return nn.Sequential(*stage, *[ArcfaceBlock(planes, planes) for _ in range(1, blocks)])

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.prelu(self.bn1(self.conv1(x)))))))
        return x, self.features(self.fc(self.dropout(torch.flatten(self.bn2(x), 1))))


# --- TFace / CurricularFace / face.evoLVe layout -------------------------------------------------------


class IRUnit(nn.Module):
    def __init__(self, in_channel, depth, stride, mid_bn):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False),
                                                nn.BatchNorm2d(depth))
        branch = [nn.BatchNorm2d(in_channel), nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False)]
        branch += [nn.BatchNorm2d(depth)] if mid_bn else []  # TFace BasicBlockIR has it, bottleneck_IR not
        branch += [nn.PReLU(depth), nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False), nn.BatchNorm2d(depth)]
        self.res_layer = nn.Sequential(*branch)

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class IRBackbone(nn.Module):
    def __init__(self, units, mid_bn, affine_features):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(0.4), nn.Flatten(), nn.Linear(512 * 7 * 7, 512),
                                          nn.BatchNorm1d(512, affine=affine_features))
        modules, in_channel = [], 64
        for depth, n in zip((64, 128, 256, 512), units):
            modules += [IRUnit(in_channel, depth, 2, mid_bn)] + [IRUnit(depth, depth, 1, mid_bn) for _ in range(n - 1)]
            in_channel = depth
        self.body = nn.Sequential(*modules)

    def forward(self, x):
        conv_out = self.body(self.input_layer(x))
        return conv_out, self.output_layer(conv_out)


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics that keep the activations finite; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.num_batches_tracked.fill_(1000)
                if m.affine:
                    m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.2 + 0.1)
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return module.eval()


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    return torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 2 - 1


def check_same_outputs(reference: nn.Module, path, crops, layers) -> None:
    recognizer = IResNet(layers).eval()
    load_recognizer_weights(recognizer, path)
    with torch.no_grad():
        want_map, want_embedding = reference(crops)
        got_map, got_embedding = recognizer(crops)
    assert got_map.shape == (1, 512, 7, 7) and got_embedding.shape == (1, 512)
    torch.testing.assert_close(got_map, want_map, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_embedding, want_embedding, rtol=1e-4, atol=1e-4)


def test_arcface_torch_checkpoint_loads_by_key_name(tmp_path, crops):
    reference = randomize(ArcfaceIResNet(IR18), seed=1)  # arcface_torch's iresnet18
    path = tmp_path / "backbone.pth"
    torch.save(reference.state_dict(), path)
    check_same_outputs(reference, path, crops, layers=IR18)


@pytest.mark.parametrize("arch", ["iresnet50", "iresnet100"])
def test_arcface_torch_key_layout_of_the_named_recognizers(arch):
    shapes = lambda module: {k: tuple(v.shape) for k, v in module.state_dict().items()}  # noqa: E731
    with torch.device("meta"):  # shapes only: no memory, no init time
        assert shapes(build_recognizer(arch)) == shapes(ArcfaceIResNet(RECOGNIZER_ARCHS[arch][0]))


@pytest.mark.parametrize("mid_bn, affine_features", [(True, False), (False, False), (False, True)],
                         ids=["tface", "curricularface", "evolve"])
def test_ir_backbone_checkpoints_map_onto_iresnet(tmp_path, crops, mid_bn, affine_features):
    reference = randomize(IRBackbone(IR18, mid_bn, affine_features), seed=2)
    path = tmp_path / "CurricularFace_Backbone.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)  # DataParallel
    check_same_outputs(reference, path, crops, layers=IR18)


def test_ir101_keys_map_onto_iresnet100():
    with torch.device("meta"):  # shapes only: no memory, no init time
        state = IRBackbone(RECOGNIZER_ARCHS["iresnet100"][0], mid_bn=True, affine_features=False).state_dict()
        want = build_recognizer("iresnet100").state_dict()
    got = convert_ir_backbone_state_dict(state, RECOGNIZER_ARCHS["iresnet100"][0])
    assert {k: tuple(v.shape) for k, v in got.items()} == {k: tuple(v.shape) for k, v in want.items()}


def test_tiny_recognizer_shapes():
    recognizer = build_recognizer("tiny").eval()
    feature_map, embedding = recognizer(torch.rand(2, 3, 112, 112) * 2 - 1)
    assert feature_map.shape == (2, 64, 7, 7) and embedding.shape == (2, 512)
    assert feature_map.isfinite().all() and embedding.isfinite().all()
    with pytest.raises(ValueError, match="112"):
        recognizer(torch.rand(2, 3, 96, 96))


def test_mismatched_weights_are_named(tmp_path):
    recognizer = build_recognizer("tiny")
    state = recognizer.state_dict()
    state["head.weight"] = torch.zeros(3)
    del state["layer2.0.conv1.weight"]
    state["fc.bias"] = torch.zeros(7)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as error:
        load_recognizer_weights(recognizer, path)
    message = str(error.value)
    assert "1 missing key (layer2.0.conv1.weight)" in message
    assert "1 unexpected key (head.weight)" in message
    assert "fc.bias [7] != [512]" in message


def test_unreadable_weights(tmp_path):
    recognizer = build_recognizer("tiny")
    with pytest.raises(WeightsError, match="not found"):
        load_recognizer_weights(recognizer, tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        load_recognizer_weights(recognizer, garbage)
    with torch.device("meta"):
        ir50 = IRBackbone(IR50, mid_bn=True, affine_features=False).state_dict()
    with pytest.raises(WeightsError, match="24 body blocks"):
        convert_ir_backbone_state_dict(ir50, RECOGNIZER_ARCHS["iresnet100"][0])
