"""``styleface verify``: audit anonymised outputs against their originals (faces and metadata).

Exit code 0 when every pair passes, ``VERIFY_FAILED`` (8) when any face is untouched or recognisable, any
identifying metadata remains, a pair cannot be compared (with several pairs), or (``--fail-on-reid``)
re-identification beats chance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from styleface_cli.config import VerifyConfig
from styleface_cli.console import DatasetProgress, Reporter
from styleface_cli.errors import ConfigError, ExitCode, StylefaceError
from styleface_cli.verify.audit import load_tools, verify_pair
from styleface_cli.verify.pairing import Pair, pairs_from_paths, pairs_from_report
from styleface_cli.verify.records import PairReport
from styleface_cli.verify.sheet import RiskiestFaces

_IN, _SAMPLE, _DET, _FIND, _OUT = "Inputs", "Sampling", "Detection", "Findings", "Output"
D = VerifyConfig()


def build_verify_config(*, every: int = D.every, det_size: int = D.det_size, upsample: int = D.upsample,
                        min_confidence: float = D.min_confidence, detector_models: tuple[Path, ...] = (),
                        noise_factor: float = D.noise_factor, min_change: float = D.min_change,
                        same_person: float = D.same_person, fail_on_reid: bool = D.fail_on_reid,
                        reid_p: float = D.reid_p, allowed_tags: tuple[str, ...] = (), scene_cut: float = D.scene_cut_threshold,
                        sheet: Path | None = None, sheet_faces: int = D.sheet_faces, workers: int = D.workers) -> VerifyConfig:
    if every < 0 or det_size < 0 or upsample < 0 or workers < 0 or sheet_faces < 1:
        raise ConfigError("--every, --det-size, --upsample and --workers must be 0 or more, --sheet-faces at least 1")
    if noise_factor <= 0 or min_change < 0 or not 0 < same_person < 2 or not 0 < reid_p < 1:
        raise ConfigError("--noise-factor and --same-person must be positive (same-person below 2), "
                          "--min-change 0 or more, --reid-p in (0, 1)")
    if sheet is not None and sheet.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise ConfigError(f"--sheet {sheet}: write the contact sheet as .png (or .jpg/.webp)")
    return VerifyConfig(every=every, det_size=det_size, upsample=upsample, min_confidence=min_confidence,
                        detector_models=tuple(detector_models), noise_factor=noise_factor, min_change=min_change,
                        same_person=same_person, fail_on_reid=fail_on_reid, reid_p=reid_p,
                        allowed_tags=tuple(allowed_tags), scene_cut_threshold=scene_cut, sheet=sheet,
                        sheet_faces=sheet_faces, workers=workers)


def run_verify(pairs: list[Pair], *, cfg: VerifyConfig, reporter: Reporter) -> list[PairReport]:
    """Audit every pair (models loaded once); with one pair its errors propagate, with several they are
    recorded in that pair's report. Writes the contact sheet when configured."""
    if cfg.sheet is not None and any(cfg.sheet.resolve() in (pair.original.resolve(), pair.anonymized.resolve())
                                     for pair in pairs):
        raise ConfigError(f"--sheet {cfg.sheet}: that is one of the files being verified (verify never modifies them)")
    tools = load_tools(cfg)
    try:
        return _run_pairs(pairs, cfg=cfg, reporter=reporter, tools=tools)
    finally:
        tools.close()


def _run_pairs(pairs: list[Pair], *, cfg: VerifyConfig, reporter: Reporter, tools) -> list[PairReport]:
    riskiest = RiskiestFaces(cfg.sheet_faces if cfg.sheet is not None else 0)
    reports = []
    with DatasetProgress(len(pairs), reporter.shows_progress) as progress:
        for pair in pairs:
            progress.started(pair)
            try:
                report = verify_pair(pair.original, pair.anonymized, cfg=cfg, tools=tools, riskiest=riskiest,
                                     on_frame=lambda frames, faces, pair=pair: progress.advanced(pair, frames, faces))
            except StylefaceError as error:
                if len(pairs) == 1:
                    raise
                report = PairReport(original=pair.original, anonymized=pair.anonymized,
                                    detectors=tools.detector.names, error=str(error))
            progress.finished(pair, {"faces": len(report.faces)})
            reports.append(report)
            if reporter.json_output:
                reporter.result(report.to_json())
            else:
                reporter.summary(summary(report, cfg))
    if cfg.sheet is not None:
        tiles = riskiest.write(cfg.sheet)
        reporter.info(f"contact sheet: {cfg.sheet} ({tiles} faces)")
    return reports


def summary(report: PairReport, cfg: VerifyConfig) -> str:
    """A few lines a person reads: verdict, what was checked, each finding."""
    verdict = "ERROR" if report.error else ("PASS" if report.passed else "FAIL")
    lines = [f"{verdict}  {report.anonymized}  (original: {report.original})"]
    if report.error:
        return "\n".join(lines + [f"  {report.error}"])
    distances = [face.distance for face in report.faces]
    closest = f", closest descriptor distance {min(distances):.2f}" if distances else ""
    lines.append(f"  {report.kind}, {report.frames} frames, {report.frames_checked} checked ({report.sampling}); "
                 f"detectors: {', '.join(report.detectors)}")
    lines.append(f"  faces checked: {len(report.faces)}; untouched: {sum(f.untouched for f in report.faces)}; "
                 f"recognisable (< {cfg.same_person}): {sum(f.recognisable for f in report.faces)}{closest}")
    if report.reid is not None and report.reid.faces:
        reid = report.reid
        lines.append(f"  re-identification: own original ranked first for {reid.rank1}/{reid.faces} faces "
                     f"({reid.rate:.1%}; chance {reid.chance:.1%}, p={reid.p_value:.2g})")
    lines.append(f"  metadata: {len(report.metadata)} identifying item(s)")
    lines.extend(f"  note: {note}" for note in report.notes)
    lines.extend(f"  - {reason}" for reason in report.failures())
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command(no_args_is_help=True)
    def verify(
        original: Annotated[Optional[Path], typer.Argument(help="The original video/photo, or a folder of them.")] = None,
        anonymized: Annotated[Optional[Path], typer.Argument(help="Its anonymised output, or the folder of outputs (paired by relative path).")] = None,
        report: Annotated[Optional[Path], typer.Option("--report", help="Audit every 'ok' pair of a dataset run's JSONL report.", rich_help_panel=_IN)] = None,
        every: Annotated[int, typer.Option("--every", help="Check every K-th frame (0 = every frame up to 60 frames, else one a second); frames after scene cuts always.", rich_help_panel=_SAMPLE)] = D.every,
        scene_cut: Annotated[float, typer.Option("--scene-cut", help="Scene-cut sensitivity (0 = off).", rich_help_panel=_SAMPLE)] = D.scene_cut_threshold,
        det_size: Annotated[int, typer.Option("--det-size", help="Longest side (px) dlib's CNN detector sees; frames are scaled to it (0 = as they are).", rich_help_panel=_DET)] = D.det_size,
        upsample: Annotated[int, typer.Option("--upsample", help="dlib's extra 2x upsampling steps for small faces (each costs 4x).", rich_help_panel=_DET)] = D.upsample,
        min_confidence: Annotated[float, typer.Option("--min-confidence", help="dlib CNN score a detection needs.", rich_help_panel=_DET)] = D.min_confidence,
        workers: Annotated[int, typer.Option("--workers", help="Processes running dlib's CNN detector (0 = one per CPU core, at most 4).", rich_help_panel=_DET)] = D.workers,
        detector_model: Annotated[list[Path], typer.Option("--detector-model", help="An extra ONNX detector (YuNet or SCRFD file), run beside dlib's (repeatable).", rich_help_panel=_DET)] = [],
        noise_factor: Annotated[float, typer.Option("--noise-factor", help="A face that changed less than this times the frame's codec noise is untouched.", rich_help_panel=_FIND)] = D.noise_factor,
        min_change: Annotated[float, typer.Option("--min-change", help="... or less than this many grey levels.", rich_help_panel=_FIND)] = D.min_change,
        same_person: Annotated[float, typer.Option("--same-person", help="dlib descriptor distance below which a hidden face is still recognisable.", rich_help_panel=_FIND)] = D.same_person,
        fail_on_reid: Annotated[bool, typer.Option("--fail-on-reid", help="Also fail when re-identification beats chance (binomial test at --reid-p).", rich_help_panel=_FIND)] = D.fail_on_reid,
        reid_p: Annotated[float, typer.Option("--reid-p", help="Significance level of the re-identification test.", rich_help_panel=_FIND)] = D.reid_p,
        allow_tag: Annotated[list[str], typer.Option("--allow-tag", help="A metadata key accepted in outputs (repeatable), e.g. creation_time.", rich_help_panel=_FIND)] = [],
        sheet: Annotated[Optional[Path], typer.Option("--sheet", help="Write a contact sheet of the riskiest faces (PNG).", rich_help_panel=_OUT)] = None,
        sheet_faces: Annotated[int, typer.Option("--sheet-faces", help="Faces on the contact sheet.", rich_help_panel=_OUT)] = D.sheet_faces,
        json_output: Annotated[bool, typer.Option("--json", help="One JSON object per pair on stdout.", rich_help_panel=_OUT)] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or messages on stderr.", rich_help_panel=_OUT)] = False,
    ) -> None:
        """Audit anonymised outputs: faces found by an independent detector in the original must be hidden and
        unrecognisable in the output, and no identifying metadata may remain. Never modifies either file."""
        if report is not None and (original is not None or anonymized is not None):
            raise ConfigError("give either ORIGINAL ANONYMIZED or --report run.jsonl, not both")
        if report is None and (original is None or anonymized is None):
            raise ConfigError("give ORIGINAL and ANONYMIZED (two files or two folders), or --report run.jsonl")
        cfg = build_verify_config(
            every=every, det_size=det_size, upsample=upsample, min_confidence=min_confidence,
            detector_models=tuple(detector_model), noise_factor=noise_factor, min_change=min_change,
            same_person=same_person, fail_on_reid=fail_on_reid, reid_p=reid_p, allowed_tags=tuple(allow_tag),
            scene_cut=scene_cut, sheet=sheet, sheet_faces=sheet_faces, workers=workers)
        pairs = pairs_from_report(report) if report is not None else pairs_from_paths(original, anonymized)
        reporter = Reporter(quiet=quiet, json_output=json_output)
        reports = run_verify(pairs, cfg=cfg, reporter=reporter)
        failed = [r for r in reports if not r.passed]
        if len(reports) > 1:
            reporter.summary(f"verify: {len(reports)} pairs, {len(reports) - len(failed)} passed, {len(failed)} failed")
        if failed:  # a verdict, not an error: the results are on stdout; the code is for CI and make
            reporter.info(f"styleface verify: {len(failed)} of {len(reports)} pair(s) failed the privacy audit")
            raise typer.Exit(int(ExitCode.VERIFY_FAILED))
