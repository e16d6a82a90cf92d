"""`python3 -m ternd inspect FILE`: print a .tern file's header and tensors."""

import argparse
import sys

from . import model_pb2
from .tern_format import TernaryTensor, TernFormatError, read_tern


def _inspect(path: str) -> int:
    try:
        tf = read_tern(path)
    except (OSError, TernFormatError) as e:
        print(f"ternd: {e}", file=sys.stderr)
        return 1
    h = tf.header
    print(f"model     {h.name} version {h.version} ({tf.file_size} bytes)")
    for v in h.graph.inputs:
        print(f"input     {v.name} {model_pb2.DType.Name(v.dtype)} {list(v.shape)}")
    for v in h.graph.outputs:
        print(f"output    {v.name} {model_pb2.DType.Name(v.dtype)} {list(v.shape)}")
    for name, t in tf.tensors.items():
        if isinstance(t, TernaryTensor):
            kind = f"TERNARY2 {list(t.weights.shape)} scales={len(t.scales)}"
        else:
            kind = f"{t.dtype} {list(t.shape)}"
        print(f"tensor    {name} {kind}")
    for i, op in enumerate(h.graph.ops):
        print(f"op {i:<6} {model_pb2.OpType.Name(op.type)} {', '.join(op.inputs)} -> {op.output}")
    for k in sorted(h.metadata):
        print(f"meta      {k}: {h.metadata[k]}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m ternd")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("inspect", help="print a .tern file's header").add_argument("file")
    args = p.parse_args(argv)
    return _inspect(args.file)


if __name__ == "__main__":
    sys.exit(main())
