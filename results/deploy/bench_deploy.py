"""The teacher, the 2.6G-budget student and the latency-target student on every runtime that runs here,
in float32 and int8: measured latency, speed-up, error to PyTorch float32, file size.

Regenerate ``deploy.md`` / ``deploy.csv`` next to this file (on a quiet 2-core CPU; the
latency-target student needs the torch-cpu latency table of the teacher, 10-20 min once, cached)::

    python results/deploy/bench_deploy.py

Smoke test (an ngf 16 teacher at 64x64, a few minutes; writes only to --out and --cache)::

    python results/deploy/bench_deploy.py --tiny --threads 1 --out /tmp/dep --cache /tmp/dep/cache --allow-busy

Teacher: the 9-block ngf 64 CAT inception teacher of results/search (random weights, |gamma| ~ U(0, 1),
seed 0; no trained teacher is available here), input 1x3x256x256. Models:

* ``teacher``;
* ``2.6G``: ``search --target-macs 2.6G --convention paper`` (exact threshold + fill);
* ``latency target``: ``search --target-macs 2.6G --convention paper --target-latency T --round-to auto
  --runtime torch-cpu`` with T = the teacher's torch-cpu latency / 10.5 (the goal: a student within
  the 2.6G budget >= 10x faster on every runtime; results/latency has the 15x targets); when the
  search cannot meet it the row is missing and the
  reason is printed under the table.

Runtimes, each model exported as ``nas-prune export`` writes it and timed from the written file:
``torch-cpu`` (eager), ``onnxruntime`` (``--format onnx``), ``openvino``, ``ncnn``, ``executorch``
(XNNPACK), ``tflite`` (LiteRT; only where litert-torch is installed), ``onnxruntime-int8``, ``tflite-int8``
(``--format onnx --quantize int8``), ``executorch-int8``. A runtime whose extra is missing is listed
under the table with the reason. Per runtime, every model's passes are interleaved round-robin
(``--repeats`` rounds after warm-up, each timed pass after 50 ms of untimed passes of the same model,
:func:`nas_prune.timing.round_robin`): median / min / max ms. ``error`` is max |Δ| to PyTorch float32
for float32 files (the export's own check) and PSNR (dB) to float32 PyTorch for int8 files, on
held-out calibration photos. ``deploy.md`` records the load average at the start and at the end and
the cores other processes kept busy: numbers measured on a busy machine say so.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "results" / "search"))

from bench_search import load_note, make_teacher, quiet_start, write_csv  # noqa: E402

from nas_prune.apply import build_student  # noqa: E402
from nas_prune.deploy import export_generator  # noqa: E402
from nas_prune.errors import NasPruneError  # noqa: E402
from nas_prune.macs import count_macs, format_macs  # noqa: E402
from nas_prune.search import search  # noqa: E402
from nas_prune.quantize import time_pair  # noqa: E402

TARGET_MACS = "2.6G"
SPEEDUP_TARGET = 10.5
RUNTIMES = ("torch-cpu", "onnxruntime", "openvino", "ncnn", "executorch", "tflite", "onnxruntime-int8",
            "executorch-int8", "tflite-int8")
FORMAT = {"onnxruntime": ("onnx", None), "openvino": ("openvino", None), "ncnn": ("ncnn", None),
          "executorch": ("executorch", None), "tflite": ("tflite", None), "onnxruntime-int8": ("onnx", "int8"),
          "executorch-int8": ("executorch", "int8"), "tflite-int8": ("tflite", "int8")}


def runner_of(res, threads: int):
    """A callable ``x -> numpy`` running the written file in its runtime."""
    from nas_prune.onnx_io import run_onnx as _run_onnx
    from nas_prune.deploy_formats import converter

    if res.format == "onnx":
        return _run_onnx(res.path)
    return converter(res.format).runner(res.files, threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds per runtime")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--cache", type=Path, default=None, help="latency-table cache (default: the user cache)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--allow-busy", action="store_true", help="build the latency table on a busy machine")
    parser.add_argument("--no-latency-target", action="store_true", help="skip the latency-target student")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke test: an ngf 16 teacher at 64x64, 5 rounds, a third of its MACs as the budget, "
                             "a 3x speed-up as the latency target")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    speedup = SPEEDUP_TARGET
    if args.tiny:
        args.size, args.repeats, speedup = 64, 5, 3.0
    torch.set_num_threads(args.threads)
    size = (args.size, args.size)
    teacher = make_teacher(ngf=16) if args.tiny else make_teacher()
    budget = count_macs(teacher.arch, input_size=size, convention="paper") // 3 if args.tiny else TARGET_MACS
    label = format_macs(budget).replace(".000", "") if args.tiny else TARGET_MACS
    load_start = quiet_start(60.0 if args.tiny else 300.0)
    rows, missed = [], []
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        teacher_file = tmp / f"ngf{teacher.arch.stem[0]}_seed0_G.pth"
        torch.save(teacher.state_dict, teacher_file)
        nets = {"teacher": teacher.build().eval()}
        macs_only = search(teacher=teacher_file, target_macs=budget, convention="paper", input_size=args.size,
                           write=False)
        nets[label] = build_student(macs_only.plan, teacher.state_dict)
        if not args.no_latency_target:
            from nas_prune.latency.runtime import measure_latency

            t_ms = measure_latency(nets["teacher"], input_size=size, runtime="torch-cpu", threads=args.threads,
                                   repeats=5).median_ms
            target = t_ms / speedup
            try:
                lat = search(teacher=teacher_file, target_macs=budget, convention="paper", round_to="auto",
                             target_latency=f"{target:.2f}ms", runtime="torch-cpu", threads=args.threads,
                             input_size=args.size, write=False, latency_cache=args.cache, allow_busy=args.allow_busy)
                nets[f"latency target {target:.1f} ms + {label}"] = build_student(lat.plan, teacher.state_dict)
                print(lat.latency.summary(), flush=True)
            except NasPruneError as err:  # reported under the table, not hidden
                missed.append(f"latency-target student (--target-latency {target:.1f}ms on torch-cpu): {err}")
                print(missed[-1], flush=True)
        for name in args.runtimes.split(","):
            runs, results = {}, {}
            for key, net in nets.items():
                if name == "torch-cpu":
                    runs[key] = (lambda n: (lambda xi: n(xi)))(net)
                    results[key] = None
                    continue
                fmt, quant = FORMAT[name]
                out = tmp / name / key.replace(" ", "_").replace("/", "-")
                try:
                    res = export_generator(net, out=out, format=fmt, input_size=size, quantize=quant,
                                           dynamic=False, atol=1e-3)
                except NasPruneError as err:  # a missing extra, or an export that fails its check
                    missed.append(f"{name}, {key}: {err}")
                    print(missed[-1], flush=True)
                    if "extra" in str(err):
                        break
                    continue
                results[key] = res
                runs[key] = runner_of(res, args.threads)
            if not runs:
                continue
            with torch.inference_mode():
                times, _ = time_pair(runs, x, repeats=args.repeats)
            teacher_ms = times["teacher"][0] if "teacher" in times else None
            for key, net in nets.items():
                if key not in runs:
                    continue
                res = results[key]
                med, lo, hi = times[key]
                err = (None if res is None else
                       f"PSNR {res.quantized['psnr_db_to_fp32']:.1f} dB" if res.quantized else f"{res.max_abs_diff:.1e}")
                rows.append({"runtime": name, "model": key,
                             "macs_paper": count_macs(net.arch, input_size=size, convention="paper"),
                             "median_ms": round(med, 2), "min_ms": round(lo, 2), "max_ms": round(hi, 2),
                             "speedup": None if teacher_ms is None else round(teacher_ms / med, 2),
                             "error_to_fp32": err or "(reference)",
                             "file_kib": None if res is None else round(res.file_bytes / 1024, 1),
                             "int8_speedup_at_export": None if res is None or not res.quantized
                             else res.quantized["speedup"]})
                print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "deploy.csv", rows)
    write_md(args, rows, missed, load_start, label)


def write_md(args, rows, missed, load_start, label) -> None:
    lines = [
        "<!-- python results/deploy/bench_deploy.py " + " ".join(sys.argv[1:]) + " -->",
        f"# Deployment runtimes: teacher, {label} student, latency-target student",
        "",
        f"Input 1x3x{args.size}x{args.size}, {args.threads} threads, torch {torch.__version__}; "
        f"{args.repeats} interleaved rounds per runtime (median / min / max ms). "
        "`error`: max |Δ| to PyTorch float32 (float32 files), PSNR to PyTorch float32 (int8 files).",
        "",
        load_note(load_start),
        "",
        "| runtime | model | MACs (paper) | ms median / min / max | speed-up vs teacher | error to fp32 | file KiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['runtime']} | {r['model']} | {format_macs(r['macs_paper'])} | "
                     f"{r['median_ms']} / {r['min_ms']} / {r['max_ms']} | "
                     f"{'no teacher row' if r['speedup'] is None else str(r['speedup']) + 'x'} | {r['error_to_fp32']} | "
                     f"{'' if r['file_kib'] is None else r['file_kib']} |")
    int8 = [(r, f) for r in rows for f in rows
            if r["runtime"].endswith("-int8") and f["runtime"] == r["runtime"][:-5] and f["model"] == r["model"]]
    if int8:
        lines += ["", "int8 against float32 on the same runtime (each runtime was timed in its own "
                      "round-robin block, one after the other: compare with care):", "",
                  "| runtime | model | float32 ms | int8 ms | int8 speed-up |", "|---|---|---|---|---|"]
        for r, f in int8:
            lines.append(f"| {f['runtime']} | {r['model']} | {f['median_ms']} | {r['median_ms']} | "
                         f"{f['median_ms'] / r['median_ms']:.2f}x |")
    if missed:
        lines += ["", "Not measured:", ""] + [f"- {m}" for m in missed]
    (args.out / "deploy.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
