"""Python client of the ternd inference daemon (unix socket, docs/protocol.md).

    from ternd_client import Client
    with Client() as c:                      # $TERND_SOCKET, /run/ternd/ternd.sock or ./ternd.sock
        out = c.infer({"x": [0.0] * 16})
        print(out["probs"].values, out["class"].values[0])

    with Client() as c:                      # a daemon serving a language model
        for chunk in c.generate("Hello", max_tokens=32):
            print(chunk.text, end="", flush=True)

Pure Python plus python3-protobuf; numpy is used only when given numpy
arrays or asked for them (Tensor.numpy()).
"""

from .client import (AsyncClient, AsyncGeneration, Chunk, Client, Generation,
                     STATUS_NAMES, Tensor, TerndError, default_socket,
                     make_generate_request, make_infer_request)
from . import protocol_pb2

__all__ = ["AsyncClient", "AsyncGeneration", "Chunk", "Client", "Generation",
           "STATUS_NAMES", "Tensor", "TerndError", "default_socket",
           "make_generate_request", "make_infer_request", "protocol_pb2"]
