"""Media I/O: read videos as ``Frame`` streams, write them back with their audio, read/write pictures.

``decode`` (``open_video``, ``probe``), ``encode`` (``VideoWriter`` and the pure option builders),
``images`` (``read_picture``, ``write_picture``: photos and animations, kept as they were),
``media`` (``open_media``, ``media_writer`` and ``output_problem``, the rule for which output holds which
input). Outputs are written through ``styleface_cli.atomic`` (whole or not at all).
"""
