"""styleface: remove identities from video and photos, and swap faces, with the StyleFace generator."""

__version__ = "0.1.0"
