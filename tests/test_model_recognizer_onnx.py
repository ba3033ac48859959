"""insightface ONNX recognizers (w600k_r50.onnx, glintr100.onnx) as IResNet weights.

The ONNX models here are made the way those packs were made: an arcface_torch-layout IResNet exported by
``torch.onnx.export`` (eval mode, constant folding: BatchNorms folded into the convolutions, generated
names, shared tensors behind Identity nodes). The mapped IResNet must give onnxruntime's embeddings.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from styleface_cli.errors import WeightsError
from styleface_cli.model.recognizer import IResNet, build_recognizer
from styleface_cli.model.weights import load_recognizer_weights


class _Embedding(nn.Module):
    def __init__(self, backbone: IResNet):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(x)[1]


def _randomise_batchnorms(model: nn.Module, seed: int) -> None:
    """Trained-looking BatchNorm statistics, so that folding them into the convolutions matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(0.25 + 0.05 * torch.randn(m.weight.shape, generator=g))


def _export(model: IResNet, path, *, fold: bool = True) -> None:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Embedding(model).eval(), torch.randn(1, 3, 112, 112), buffer, input_names=["input.1"],
                          output_names=["embedding"], opset_version=11,
                          dynamic_axes={"input.1": {0: "None"}, "embedding": {0: "None"}}, dynamo=False, do_constant_folding=fold,
                          training=torch.onnx.TrainingMode.EVAL)
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize("fold", [True, False])
def test_onnx_pack_maps_onto_iresnet_and_matches_onnxruntime(tmp_path, fold):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    source = build_recognizer("tiny").eval()
    _randomise_batchnorms(source, 1)
    path = tmp_path / "w600k_r50.onnx"
    _export(source, path, fold=fold)
    names = [init.name for init in onnx.load(str(path)).graph.initializer]
    if fold:  # what the real packs look like: generated names for the folded convolutions
        assert any(name.startswith("onnx::Conv_") for name in names) and "backbone.conv1.weight" not in names

    recognizer = build_recognizer("tiny").eval()
    load_recognizer_weights(recognizer, path)
    x = torch.rand(3, 3, 112, 112) * 2 - 1
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        _, embedding = recognizer(x)
    np.testing.assert_allclose(embedding.numpy(), expected, atol=1e-4, rtol=1e-4)


def test_onnx_of_another_depth_is_refused(tmp_path):
    path = tmp_path / "glintr100.onnx"
    _export(IResNet((1, 2, 1, 1), (8, 16, 32, 64)).eval(), path)
    with pytest.raises(WeightsError, match="5 residual blocks"):
        load_recognizer_weights(build_recognizer("tiny"), path)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(WeightsError, match="cannot read"):
        load_recognizer_weights(build_recognizer("tiny"), tmp_path / "junk.onnx")
