"""Per-face stages: detect, track, align, identity, smooth, blend, obfuscate."""
