#!/usr/bin/python3
"""Regenerates the kernel table of docs/performance.md from one run of
bench/ternary_kernels_bench: for each variant and BitNet b1.58 2B4T shape,
warm and cold GFLOPS at batch 1 and 8, each next to its ceiling measured in
the same run:

- cold batch 1: the weights streamed per second over the 2-bit roofline
  (4 weights per byte x the single-core read bandwidth, `of_2bit_roofline`);
- warm batch 8: the GFLOPS over the instruction peak of the variant's
  int8 dot product (`BM_VpdpbusdPeak` for the VNNI variants,
  `BM_VpmaddubswPeak` for AVX2 and SSSE3), each instruction counted at the
  weights x tokens it covers.

Usage:
    bench/kernel_table.py [BENCH_BINARY] [--variants avx512vnni,avx2,...]
                          [--repetitions N] [--min-time S]
Prints a Markdown table (medians of the repetitions) and the machine line.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

SHAPES = ["2560x2560", "640x2560", "6912x2560", "2560x6912"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("binary", nargs="?",
                    default=os.path.join(here, "..", "build", "bench",
                                         "ternary_kernels_bench"))
    ap.add_argument("--variants", default="avx512vnni,avx512vnni-1.6,avx2,"
                    "avx2-1.6,ssse3")
    ap.add_argument("--shapes", default=",".join(SHAPES),
                    help="N x K shapes, comma-separated (default: the four "
                    "2B4T shapes)")
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--min-time", default="0.3")
    a = ap.parse_args()
    variants = [v for v in a.variants.split(",") if v]
    shapes = [x for x in a.shapes.split(",") if x]
    alt = "|".join(v.replace(".", "\\.") for v in variants)
    flt = (f"BM_VpdpbusdPeak|BM_VpmaddubswPeak|BM_ReadBandwidth|"
           f"BM_TernaryGemm/({alt})/({'|'.join(shapes)})/batch:(1|8)/")
    out = subprocess.run(
        [a.binary, f"--benchmark_filter={flt}", "--benchmark_format=json",
         f"--benchmark_repetitions={a.repetitions}",
         f"--benchmark_min_time={a.min_time}"],
        check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    runs: dict[str, list[dict]] = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        runs.setdefault(b["run_name"], []).append(b)

    def med(name: str, counter: str) -> float | None:
        vals = [r[counter] for r in runs.get(name, []) if counter in r]
        return statistics.median(vals) if vals else None

    vnni_gops = med("BM_VpdpbusdPeak", "GOPS")
    madd_gops = med("BM_VpmaddubswPeak", "GOPS")
    ctx = data["context"]
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    print(f"machine: {cpu}, {ctx.get('num_cpus')} CPUs; vpdpbusd peak "
          f"{vnni_gops or 0:.0f} GOPS, vpmaddubsw peak {madd_gops or 0:.0f} "
          f"GOPS; medians of {a.repetitions}\n")
    print("| variant | shape N×K | warm b1 GFLOPS | cold b1 GFLOPS | cold b1 of "
          "2-bit roofline | warm b8 GFLOPS | warm b8 of instruction peak |")
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        peak = vnni_gops if "vnni" in v else madd_gops
        for s in shapes:
            base = f"BM_TernaryGemm/{v}/{s}"
            w1 = med(f"{base}/batch:1/warm", "GFLOPS")
            if w1 is None:
                continue
            c1 = med(f"{base}/batch:1/cold", "GFLOPS")
            roof = med(f"{base}/batch:1/cold", "of_2bit_roofline")
            w8 = med(f"{base}/batch:8/warm", "GFLOPS")
            f = lambda x, d=0: "-" if x is None else f"{x:.{d}f}"
            of_peak = (w8 / peak) if (w8 and peak) else None
            print(f"| {v} | {s.replace('x', '×')} | {f(w1)} | {f(c1)} | "
                  f"{f(roof, 2)} | {f(w8)} | {f(of_peak, 2)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
