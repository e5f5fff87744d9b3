"""What JPEG draft decoding saves, end to end, and what it changes (docs/runtime.md, "Decoding").

Pillow can decode a JPEG at 1/2, 1/4 or 1/8 of its size by scaling the DCT (``Image.draft``), which skips most of
the decoding work for photographs far larger than the network input. The toolkit's preprocessing does it only when
asked (``Preprocessor(config, jpeg_draft=True)``), because the pixels differ from a full decode: a path and the
same photo as a decoded PIL image would otherwise give different logits.

Real photographs (the package's five) are upscaled to camera sizes (12 MP: 4032x3024; 2 MP: 1920x1080) and saved
as JPEG at quality 90; then, interleaved, for each size: preprocessing alone with and without draft, and a
Classifier's predict(path) on an export's model.onnx (ONNX Runtime) with and without draft. Also the logits'
agreement between the two (cosine, top-1) on those photos.

    python docs/benchmarks/jpeg_draft.py EXPORT_DIR --json docs/benchmarks/jpeg-draft-tiny.json
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

from PIL import Image

from smlp_deploy import Classifier
from smlp_deploy.bench.timing import measure_interleaved
from smlp_deploy.environment import capture
from smlp_deploy.export.parity import compare
from smlp_deploy.fileio import write_json_atomic
from smlp_deploy.progress import format_table
from smlp_deploy.samples import sample_images

SIZES = {"12 MP": (4032, 3024), "2 MP": (1920, 1080)}


def camera_photos(folder: Path, size: tuple[int, int]) -> list[Path]:
    paths = []
    for photo in sample_images():
        path = folder / f"{photo.stem}-{size[0]}x{size[1]}.jpg"
        Image.open(photo).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of timed calls per way (default: 4)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights
        full = Classifier(args.export_dir / "model.onnx")
        draft = Classifier(args.export_dir / "model.onnx", jpeg_draft=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, size in SIZES.items():
            photos = [str(p) for p in camera_photos(Path(tmp), size)]
            calls = {"preprocess, full decode": lambda photos=photos: [full.preprocess(p) for p in photos],
                     "preprocess, draft": lambda photos=photos: [draft.preprocess(p) for p in photos],
                     "predict(path), full decode": lambda photos=photos: [full.predict(p) for p in photos],
                     "predict(path), draft": lambda photos=photos: [draft.predict(p) for p in photos]}
            timed = measure_interleaved(calls, duration_s=args.duration, warmup=1)
            per_image = {name: t.summary().p50 / len(photos) for name, t in timed.items()}
            report = compare(full.logits(photos), draft.logits(photos))
            results[label] = {"ms_per_image": per_image, "draft_speedup_preprocess":
                              per_image["preprocess, full decode"] / per_image["preprocess, draft"],
                              "draft_speedup_end_to_end":
                              per_image["predict(path), full decode"] / per_image["predict(path), draft"],
                              "logits_cosine_min": report.cosine, "top1_agreement": report.top1_agreement}
    full.close()
    draft.close()
    rows = [[label, *(f"{r['ms_per_image'][k]:.1f}" for k in ("preprocess, full decode", "preprocess, draft",
                                                               "predict(path), full decode", "predict(path), draft")),
             f"{r['draft_speedup_end_to_end']:.2f}x", f"{r['logits_cosine_min']:.6f}", f"{r['top1_agreement']:.0%}"]
            for label, r in results.items()]
    print(format_table(["photo", "preprocess ms", "with draft", "predict(path) ms", "with draft",
                        "draft end to end", "logits cosine", "top-1 agree"], rows))
    if args.json:
        write_json_atomic(args.json, {"command": "python docs/benchmarks/jpeg_draft.py " + str(args.export_dir),
                                      "machine": capture(), "results": results})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
