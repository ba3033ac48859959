"""Media I/O: read videos as ``Frame`` streams, write them back with their audio, read/write photos.

``decode`` (``open_video``, ``probe``), ``encode`` (``VideoWriter`` and the pure option builders),
``images`` (``read_image``, ``write_image``). Outputs are written through ``styleface_cli.atomic``.
"""
