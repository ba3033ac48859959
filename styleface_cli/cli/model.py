"""``styleface model info`` and ``styleface model init``: inspect and create StyleFace checkpoints.

``info`` loads a checkpoint strictly (so it also validates it) and prints its config and parameter
counts per part; ``--json`` prints one JSON object on stdout instead. ``init`` writes a randomly
initialised network (reproducible by ``--seed``), optionally with pretrained recognizer weights and with
mapping and synthesis networks from a pretrained StyleGAN2 (``--init-stylegan``, see
``model/stylegan_import.py``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from styleface_cli.errors import ConfigError, OutputError

PRESETS = ("paper", "tiny")


def build_config(
    *,
    preset: str,
    resolution: int,
    channel_base: int | None = None,
    channel_max: int | None = None,
    z_dim: int | None = None,
    w_dim: int | None = None,
    mapping_layers: int | None = None,
    attr_resolution: int | None = None,
    recognizer: str | None = None,
):
    """The one place of precedence: options given on the command line override the preset's values."""
    from styleface_cli.model.styleface import StyleFaceConfig

    if preset not in PRESETS:
        raise ConfigError(f"unknown --preset {preset!r}; expected one of {', '.join(PRESETS)}")
    # Validate the resolution before the preset uses it (the preset derives attr_resolution from it).
    base = StyleFaceConfig.tiny(resolution) if preset == "tiny" else StyleFaceConfig.preset(resolution)
    overrides = {
        "channel_base": channel_base, "channel_max": channel_max, "z_dim": z_dim, "w_dim": w_dim,
        "mapping_layers": mapping_layers, "attr_resolution": attr_resolution, "recognizer": recognizer,
    }
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def build_stylegan_config(
    *,
    stylegan: Path,
    preset: str,
    resolution: int | None,
    attr_resolution: int | None = None,
    recognizer: str | None = None,
    **generator_sizes: int | None,
):
    """``--init-stylegan``: the file decides the generator (z/w dims, mapping depth, channels, clamp; its
    resolution unless ``resolution`` asks for a lower one), the preset and ``--recognizer`` /
    ``--attr-resolution`` the new parts. Returns ``(config, weights cropped to the resolution)``."""
    from styleface_cli.model.stylegan_import import crop_to, read_stylegan, styleface_config_for

    given = sorted(f"--{k.replace('_', '-')}" for k, v in generator_sizes.items() if v is not None)
    if given:
        raise ConfigError(f"{', '.join(given)} cannot be combined with --init-stylegan: the StyleGAN2 file "
                          "decides the generator's size")
    weights = read_stylegan(stylegan)
    weights = crop_to(weights, resolution or weights.arch.resolution)
    base = build_config(preset=preset, resolution=weights.arch.resolution, attr_resolution=attr_resolution,
                        recognizer=recognizer)
    return styleface_config_for(weights.arch, base), weights


def new_model_config(
    *,
    init_stylegan: Path | None,
    preset: str,
    resolution: int | None,
    attr_resolution: int | None = None,
    recognizer: str | None = None,
    **generator_sizes: int | None,
):
    """The config of a new network, ``(config, StyleGAN2 weights or None)``: from ``--init-stylegan``'s file
    (``build_stylegan_config``), else from the preset and the options (``build_config``, 256 px by default)."""
    if init_stylegan is not None:
        return build_stylegan_config(stylegan=init_stylegan, preset=preset, resolution=resolution,
                                     attr_resolution=attr_resolution, recognizer=recognizer, **generator_sizes)
    config = build_config(preset=preset, resolution=resolution or 256, attr_resolution=attr_resolution,
                          recognizer=recognizer, **generator_sizes)
    return config, None


def info_record(path: Path) -> dict[str, Any]:
    """What ``model info`` reports: path, format version, config, W+ rows, parameters per part."""
    from styleface_cli.model.weights import FORMAT_VERSION, load_checkpoint

    model = load_checkpoint(path)
    return {
        "path": str(path),
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "num_ws": model.num_ws,
        "parameters": model.parameter_counts(),
        "bytes": path.stat().st_size,
    }


def _print_info(record: dict[str, Any]) -> None:
    lines = [f"{record['path']}  (StyleFace checkpoint, format {record['format_version']}, "
             f"{record['bytes'] / 2**20:.1f} MiB)", "config:"]
    lines += [f"  {key:<16} {value}" for key, value in record["config"].items()]
    lines += [f"  {'num_ws':<16} {record['num_ws']}", "parameters:"]
    lines += [f"  {part:<16} {count:>14,}" for part, count in record["parameters"].items()]
    typer.echo("\n".join(lines))


def register(app: typer.Typer) -> None:
    model_app = typer.Typer(name="model", help="Inspect and create StyleFace checkpoints.", no_args_is_help=True)
    app.add_typer(model_app, name="model")

    @model_app.command("info", no_args_is_help=True)
    def info(
        checkpoint: Annotated[Path, typer.Argument(help="A StyleFace .safetensors checkpoint.")],
        json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    ) -> None:
        """Validate a checkpoint and print its config and parameter counts per part."""
        record = info_record(checkpoint)
        if json_output:
            typer.echo(json.dumps(record))
        else:
            _print_info(record)

    @model_app.command("init", no_args_is_help=True)
    def init(
        output: Annotated[Path, typer.Argument(help="The .safetensors checkpoint to write.")],
        preset: Annotated[str, typer.Option("--preset", help="paper (StyleGAN2 config F, IR-100) | tiny (tests).")] = "paper",
        resolution: Annotated[Optional[int], typer.Option("--resolution", help="Output resolution, a power of two 8..1024 (default 256; with --init-stylegan the file's, or lower).")] = None,
        channel_base: Annotated[Optional[int], typer.Option("--channel-base", help="Generator channels = min(base // res, max).")] = None,
        channel_max: Annotated[Optional[int], typer.Option("--channel-max", help="Maximum generator channels.")] = None,
        z_dim: Annotated[Optional[int], typer.Option("--z-dim", help="Z dimensionality per identity level.")] = None,
        w_dim: Annotated[Optional[int], typer.Option("--w-dim", help="W dimensionality.")] = None,
        mapping_layers: Annotated[Optional[int], typer.Option("--mapping-layers", help="Layers of the mapping network.")] = None,
        attr_resolution: Annotated[Optional[int], typer.Option("--attr-resolution", help="Input resolution of the attribute U-Net.")] = None,
        recognizer: Annotated[Optional[str], typer.Option("--recognizer", help="tiny | iresnet50 | iresnet100.")] = None,
        recognizer_weights: Annotated[Optional[Path], typer.Option("--recognizer-weights", help="Pretrained recognizer: arcface_torch / CurricularFace (.pth/.safetensors) or an insightface ONNX pack file.")] = None,
        init_stylegan: Annotated[Optional[Path], typer.Option("--init-stylegan", help="Start mapping and synthesis from a StyleGAN2 config-F file: NVlabs network pickle (.pkl) or rosinality checkpoint (.pt).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the random initialisation.")] = 0,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
        json_output: Annotated[bool, typer.Option("--json", help="Print the new checkpoint's info as JSON on stdout.")] = False,
    ) -> None:
        """Write a randomly initialised StyleFace checkpoint (or one started from a pretrained StyleGAN2)."""
        config, stylegan = new_model_config(
            init_stylegan=init_stylegan, preset=preset, resolution=resolution, attr_resolution=attr_resolution,
            recognizer=recognizer, channel_base=channel_base, channel_max=channel_max, z_dim=z_dim, w_dim=w_dim,
            mapping_layers=mapping_layers)
        write_initial_checkpoint(output=output, config=config, seed=seed, overwrite=overwrite,
                                 recognizer_weights=recognizer_weights, stylegan=stylegan)
        record = info_record(output)
        if json_output:
            typer.echo(json.dumps(record))
        else:
            typer.echo(f"wrote {output}: {record['parameters']['total']:,} parameters, "
                       f"{record['config']['resolution']} px, recognizer {record['config']['recognizer']}")


def write_initial_checkpoint(*, output: Path, config, seed: int, overwrite: bool,
                             recognizer_weights: Path | None = None, stylegan=None) -> None:
    """Core of ``model init``: refuse to overwrite, then ``weights.init_checkpoint``."""
    from styleface_cli.model.weights import init_checkpoint

    if output.is_dir():
        raise OutputError(f"{output}: is a folder; give a file name for the checkpoint")
    if output.exists() and not overwrite:
        raise OutputError(f"{output}: already exists (use --overwrite to replace it)")
    if not output.parent.is_dir():
        raise OutputError(f"{output}: the folder {output.parent} does not exist")
    init_checkpoint(config, output, seed, recognizer_weights=recognizer_weights, stylegan=stylegan)
