"""What an anonymised file still says about who, where, when and with what it was recorded.

Photos: any EXIF (GPS and the maker note named as such), XMP, IPTC / Photoshop resources and comments
(JPEG COM, PNG text chunks). Layout-only fields (JFIF density, ICC colour profile, Adobe transform) are
not reported. Videos: every container and stream tag except a short list of technical ones (brands,
muxer and encoder names, handler names, language, duration, rotation), so location and ISO6709 tags,
title, artist, comment, creation_time and encoder-specific user data (``com.apple.quicktime.*`` and the
like) are all reported; and every subtitle, data and attachment stream, and cover picture, by name.
"""

from __future__ import annotations

import re
from pathlib import Path

import av
from PIL import ExifTags, Image, IptcImagePlugin

from styleface_cli.errors import InputError
from styleface_cli.verify.records import MetadataFinding
from styleface_cli.video.images import is_image_path

# Tags that describe the file's technical make-up only (compared in upper case).
TECHNICAL_TAGS = frozenset({
    "MAJOR_BRAND", "MINOR_VERSION", "COMPATIBLE_BRANDS", "ENCODER", "HANDLER_NAME", "VENDOR_ID", "LANGUAGE",
    "DURATION", "ROTATE", "NUMBER_OF_FRAMES", "NUMBER_OF_BYTES", "BPS", "_STATISTICS_TAGS",
    "_STATISTICS_WRITING_APP", "_STATISTICS_WRITING_DATE_UTC", "ENCODER_OPTIONS", "ALPHA_MODE",
})
_IMAGE_INFO_KEYS = {"xmp": "XMP", "XML:com.adobe.xmp": "XMP", "comment": "comment", "photoshop": "IPTC/Photoshop"}
_GPS_IFD, _EXIF_IFD, _MAKER_NOTE = 0x8825, 0x8769, 0x927C
_SHOWN = 60  # characters of a value shown


def audit_metadata(path: Path, allowed: tuple[str, ...] = ()) -> list[MetadataFinding]:
    """Everything identifying left in ``path`` (a photo or a video), minus the ``allowed`` keys."""
    findings = audit_image(path) if is_image_path(path) else audit_video(path)
    allowed_keys = {key.upper() for key in allowed}
    return [item for item in findings if _base_key(item.key) not in allowed_keys and item.where.upper() not in allowed_keys]


def _base_key(key: str) -> str:
    """The key in upper case, without the language suffix MP4 adds (``location-eng`` -> ``LOCATION``)."""
    return re.sub(r"-[A-Z]{3}$", "", key.upper())


def _short(value: object) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def audit_image(path: Path) -> list[MetadataFinding]:
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            info = dict(image.info)
            text = dict(getattr(image, "text", {}) or {})
            iptc = IptcImagePlugin.getiptcinfo(image) if image.format in ("JPEG", "TIFF") else None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path}: not an image file this tool can read ({error})") from None
    findings = []
    for tag, value in exif.items():
        if tag in (_GPS_IFD, _EXIF_IFD):
            continue
        findings.append(MetadataFinding("EXIF", ExifTags.TAGS.get(tag, hex(tag)), _short(value)))
    gps = exif.get_ifd(_GPS_IFD)
    if gps:
        fields = ", ".join(ExifTags.GPSTAGS.get(tag, hex(tag)) for tag in gps)
        findings.append(MetadataFinding("GPS", "position", _short(fields)))
    for tag, value in exif.get_ifd(_EXIF_IFD).items():
        where = "maker note" if tag == _MAKER_NOTE else "EXIF"
        findings.append(MetadataFinding(where, ExifTags.TAGS.get(tag, hex(tag)), _short(value)))
    for key, where in _IMAGE_INFO_KEYS.items():
        if info.get(key):
            findings.append(MetadataFinding(where, key, _short(info[key])))
    if iptc:
        findings.append(MetadataFinding("IPTC", "records", _short(", ".join(f"{k[0]}:{k[1]}" for k in iptc))))
    for key, value in text.items():
        if key not in ("XML:com.adobe.xmp", "comment"):
            findings.append(MetadataFinding("text chunk", key, _short(value)))
    return findings


def audit_video(path: Path) -> list[MetadataFinding]:
    try:
        container = av.open(str(path), metadata_errors="replace")
    except av.error.FFmpegError as error:
        raise InputError(f"{path}: not a readable video file ({error})") from None
    with container:
        findings = [MetadataFinding("container", key, _short(value))
                    for key, value in container.metadata.items() if key.upper() not in TECHNICAL_TAGS]
        for stream in container.streams:
            where = f"stream {stream.index} ({stream.type})"
            findings.extend(MetadataFinding(where, key, _short(value))
                            for key, value in stream.metadata.items() if key.upper() not in TECHNICAL_TAGS)
            name = stream.metadata.get("filename") or stream.metadata.get("title") or stream.metadata.get("handler_name") or ""
            codec = stream.codec_context.name if stream.codec_context is not None else ""
            described = _short(f"{codec} {name}".strip() or "unnamed")
            if stream.type in ("subtitle", "data", "attachment"):
                findings.append(MetadataFinding(where, f"{stream.type} stream", described))
            elif stream.type == "video" and stream.disposition & av.stream.Disposition.attached_pic:
                findings.append(MetadataFinding(where, "cover picture", described))
    return findings
