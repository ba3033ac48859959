"""The StyleFace networks (Luo et al., ECCV 2022) and their checkpoint format.

Public API (stable; the video pipeline and the training loop build on it). Images are float RGB in
``[-1, 1]``, NCHW; source crops are ArcFace-aligned ``[N, 3, 112, 112]``.

Model and config (``styleface.py``)::

    StyleFaceConfig(resolution=1024, channel_base=32768, channel_max=512, z_dim=512, w_dim=512,
                    mapping_layers=8, attr_resolution=512, recognizer='iresnet100', version=1,
                    channels=None, conv_clamp=256)  # frozen; channels: explicit per-block table
    config.block_channels -> {4: c4, ..., resolution: c}      # generator (and discriminator) channels
    StyleFaceConfig.preset(resolution) -> StyleFaceConfig       # paper scale, resolution 256 | 512 | 1024
    StyleFaceConfig.tiny(resolution=32) -> StyleFaceConfig      # tests and smoke runs
    config.num_ws; config.to_dict(); StyleFaceConfig.from_dict(d)

    model = StyleFace(config, *, freeze_recognizer=True)
    model.encode_identity(crops112, *, generator=None, use_mean=True, truncation_psi=1.0) -> IdentityCode
    model.identity_posterior(crops112) -> (mean, logvar)         # each [N, 3, z_dim]
    model.sample_identity(n, *, generator=None, truncation_psi=1.0) -> IdentityCode   # de-identification
    model(target [N,3,R,R], w_plus [N,num_ws,w_dim], noise_mode='const', fused_modconv=None) -> [N,3,R,R]
    model.embed(crops112) -> [N, 512]                            # L2-normalized recognizer embedding
    model.parameter_counts() -> {part: count, 'total': count}    # parts: PARTS
    model.recognizer / .projector / .projector.mapping / .attributes / .synthesis
    model.resolution, model.num_ws, model.z_dim, model.w_dim, model.config

Identity codes (``projector.py``)::

    IdentityCode(z [N, 3, z_dim], w_plus [N, num_ws, w_dim])    # frozen; code[i], code.to(...),
                                                                # code.detach(), IdentityCode.cat([...])
    mix_levels(low, mid, high) -> IdentityCode                  # levels (z and W+ rows) from 3 codes
    interpolate_z(target, source, lam, *, projector, truncation_psi=1.0) -> IdentityCode
    interpolate_w(target, source, lam) -> IdentityCode          # lam = proportion of the source
    ws_levels(num_ws) -> LongTensor [num_ws]                    # 0 low (4-16 px), 1 mid (32-128), 2 high
    model.projector.sample(mean, logvar, *, generator=None, use_mean=False, truncation_psi=1.0)

Checkpoints (``weights.py``; one ``.safetensors`` file, config in its metadata, strict)::

    save_checkpoint(path, model) -> Path                        # atomic
    load_checkpoint(path, device='cpu') -> StyleFace            # eval mode; WeightsError on any mismatch
    init_checkpoint(config, path, seed=0, *, recognizer_weights=None, stylegan=None) -> StyleFace
    read_checkpoint_config(path) -> StyleFaceConfig
    load_recognizer_weights(model.recognizer, path)             # arcface_torch, CurricularFace/TFace, or an
                                                                # insightface ONNX pack file (recognizer_onnx)
    load_state_dict_strict(module, state, *, what)              # e.g. for the discriminator

Pretrained StyleGAN2 (``stylegan_import.py``; NVlabs pickles through a restricted unpickler, rosinality .pt)::

    weights = read_stylegan(path)                               # StyleGANWeights(arch, generator, discriminator)
    weights = crop_to(weights, resolution)                      # keep blocks 4 ... resolution
    config = styleface_config_for(weights.arch, StyleFaceConfig.preset(weights.arch.resolution))
    init_checkpoint(config, out, stylegan=weights)              # mapping + synthesis from the file
    build_generator(weights), build_discriminator(weights)      # the plain networks with its weights

Training-only networks and building blocks::

    Discriminator(img_resolution, img_channels=3, channel_base=32768, channel_max=512, conv_clamp=256,
                  mbstd_group_size=4, channels=None)
    discriminator(img) -> logits [N, 1]; discriminator(img, return_features=True) -> (logits, features)
                                                                # features: highest resolution first
    Generator(z_dim, w_dim, img_resolution, ..., channels=None, conv_clamp=256)  # plain StyleGAN2 z -> image
    set_kernel_policy(module, 'auto' | 'compiled' | 'ref')      # custom-op policy of every layer

Errors: ``ConfigError`` for invalid sizes / options, ``WeightsError`` for bad checkpoints,
``OutputError`` when a checkpoint cannot be written.
"""

from styleface_cli.model.discriminator import Discriminator
from styleface_cli.model.generator import Generator, SynthesisNetwork
from styleface_cli.model.layers import MappingNetwork, set_kernel_policy
from styleface_cli.model.projector import (
    LEVELS,
    IdentityCode,
    IdentityProjector,
    interpolate_w,
    interpolate_z,
    mix_levels,
    ws_levels,
)
from styleface_cli.model.recognizer import IResNet, build_recognizer
from styleface_cli.model.styleface import PARTS, StyleFace, StyleFaceConfig
from styleface_cli.model.weights import (
    init_checkpoint,
    load_checkpoint,
    load_recognizer_weights,
    load_state_dict_strict,
    read_checkpoint_config,
    save_checkpoint,
)

__all__ = [
    "LEVELS",
    "PARTS",
    "Discriminator",
    "Generator",
    "IResNet",
    "IdentityCode",
    "IdentityProjector",
    "MappingNetwork",
    "StyleFace",
    "StyleFaceConfig",
    "SynthesisNetwork",
    "build_recognizer",
    "init_checkpoint",
    "interpolate_w",
    "interpolate_z",
    "load_checkpoint",
    "load_recognizer_weights",
    "load_state_dict_strict",
    "mix_levels",
    "read_checkpoint_config",
    "save_checkpoint",
    "set_kernel_policy",
    "ws_levels",
]
