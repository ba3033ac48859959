"""``styleface verify``: an audit of an anonymised output against its original.

An independent detector (dlib's CNN, plus any ONNX detector the user names) finds the faces in sampled frames
of the ORIGINAL; each face is then checked in the output (untouched? recognisable? re-identifiable?), and the
output's metadata is searched for what identifies a person or a place. ``audit.verify_pair`` composes it all.

- ``pairing``: which files are compared (two files, two folders, a dataset run's JSONL report)
- ``sampling``: which frames are checked (every K-th, plus the frames right after scene cuts)
- ``detect``: the independent detectors and dlib's landmarks and descriptors
- ``findings``: per-face checks and the re-identification ranking
- ``metadata``: EXIF/XMP/IPTC/GPS/comments of photos, tags and side streams of videos
- ``sheet``: the contact sheet of the riskiest faces
"""
