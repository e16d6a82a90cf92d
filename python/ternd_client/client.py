"""Clients of ternd's unix-socket protocol (docs/protocol.md).

`Client` is blocking: one call at a time, or pipelined with `send` and
`receive`. `AsyncClient` is for asyncio: any number of concurrent calls on
one connection, matched to their answers by request id (answers may come
back in any order).

Inputs are given as a dict from input name to rows of values: a list of
lists, a flat list (one row), a `array.array('f')` with `rows=`, or a numpy
array of shape [rows, features] when numpy is installed. Outputs come back
as `Tensor` objects.

Only the Python standard library and python3-protobuf are needed.
"""

from __future__ import annotations

import array
import asyncio
import itertools
import os
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from . import protocol_pb2 as pb

SYSTEM_SOCKET = "/run/ternd/ternd.sock"
LOCAL_SOCKET = "ternd.sock"
_HEADER = struct.Struct("<I")

# Canonical status codes (the wire carries numbers).
STATUS_NAMES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND", 6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
    10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL",
    14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}

if sys.byteorder != "little":  # pragma: no cover - every supported target is LE
    raise ImportError("ternd_client assumes a little-endian host")


class TerndError(Exception):
    """A non-OK status from the daemon, or a broken connection."""

    def __init__(self, code: int, message: str, request_id: int = 0):
        self.code = code
        self.code_name = STATUS_NAMES.get(code, str(code))
        self.message = message
        self.request_id = request_id
        super().__init__(f"{self.code_name}: {message}")


@dataclass
class Tensor:
    """One output: `values` row-major (floats, or ints for I32)."""

    name: str
    dtype: str  # "F32" or "I32"
    shape: List[int]
    values: Sequence[float]

    def rows(self) -> List[List[float]]:
        width = self.shape[1] if len(self.shape) > 1 else len(self.values)
        return [list(self.values[i:i + width]) for i in range(0, len(self.values), width)]

    def numpy(self):
        import numpy as np
        dtype = np.int32 if self.dtype == "I32" else np.float32
        return np.asarray(self.values, dtype=dtype).reshape(self.shape)


def default_socket() -> str:
    """$TERND_SOCKET, else the system socket if it exists, else ./ternd.sock."""
    env = os.environ.get("TERND_SOCKET")
    if env:
        return env
    return SYSTEM_SOCKET if os.path.exists(SYSTEM_SOCKET) else LOCAL_SOCKET


def _tensor_proto(name: str, value: Any, rows: Optional[int]) -> pb.Tensor:
    t = pb.Tensor(name=name, dtype=pb.F32)
    if hasattr(value, "dtype") and hasattr(value, "tobytes"):  # numpy
        import numpy as np
        a = np.ascontiguousarray(value, dtype=np.float32)
        if a.ndim == 1:
            a = a.reshape(1, -1)
        t.shape.extend(int(d) for d in a.shape)
        t.data = a.tobytes()
        return t
    if isinstance(value, array.array):
        if value.typecode != "f":
            value = array.array("f", value)
        if rows:
            t.shape.extend([rows, len(value) // rows])
        t.data = value.tobytes()
        return t
    value = list(value)
    if value and isinstance(value[0], (list, tuple)):
        flat = array.array("f", itertools.chain.from_iterable(value))
        t.shape.extend([len(value), len(value[0])])
    else:
        flat = array.array("f", value)
        t.shape.extend([1, len(flat)])
    t.data = flat.tobytes()
    return t


def make_infer_request(inputs: Mapping[str, Any], outputs: Iterable[str] = (),
                       deadline_us: int = 0, rows: Optional[int] = None) -> pb.InferRequest:
    r = pb.InferRequest(deadline_us=deadline_us)
    for name, value in inputs.items():
        r.inputs.append(_tensor_proto(name, value, rows))
    r.outputs.extend(outputs)
    return r


def _outputs(r: pb.InferResponse) -> Dict[str, Tensor]:
    out = {}
    for t in r.outputs:
        code = "i" if t.dtype == pb.I32 else "f"
        values = array.array(code)
        values.frombytes(t.data)
        out[t.name] = Tensor(t.name, "I32" if t.dtype == pb.I32 else "F32",
                             list(t.shape), values)
    return out


def _check(response: pb.Response) -> pb.Response:
    if response.status.code != 0:
        raise TerndError(response.status.code, response.status.message, response.id)
    return response


def _frame(request: pb.Request) -> bytes:
    payload = request.SerializeToString()
    return _HEADER.pack(len(payload)) + payload


class _Decoder:
    """Splits a byte stream into frames; refuses lengths over the limit."""

    def __init__(self, max_frame_bytes: int):
        self.max = max_frame_bytes
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next(self) -> Optional[bytes]:
        if len(self.buffer) < 4:
            return None
        (length,) = _HEADER.unpack_from(self.buffer)
        if length > self.max:
            raise TerndError(8, f"ternd sent a frame of {length} bytes, over the "
                                f"client's limit of {self.max}")
        if len(self.buffer) < 4 + length:
            return None
        payload = bytes(self.buffer[4:4 + length])
        del self.buffer[:4 + length]
        return payload


class Client:
    """A blocking connection to ternd.

    >>> with Client() as c:
    ...     out = c.infer({"x": [0.1] * 16})
    ...     print(out["class"].values[0])
    """

    def __init__(self, path: Optional[str] = None, timeout: Optional[float] = 30.0,
                 max_frame_bytes: int = 64 << 20):
        self.path = path or default_socket()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(self.path)
        except OSError as e:
            self._sock.close()
            raise TerndError(14, f"cannot connect to ternd at {self.path}: {e}") from e
        self._decoder = _Decoder(max_frame_bytes)
        self._ids = itertools.count(1)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Pipelining: send several requests, then receive their answers.
    def send(self, request: pb.Request) -> int:
        """Sends a request; assigns the next id when it has none. Returns the id."""
        if request.id == 0:
            request.id = next(self._ids)
        self._sock.sendall(_frame(request))
        return request.id

    def receive(self) -> pb.Response:
        """The next response frame, whatever its id (no status check)."""
        while True:
            payload = self._decoder.next()
            if payload is not None:
                response = pb.Response()
                response.ParseFromString(payload)
                return response
            try:
                data = self._sock.recv(65536)
            except socket.timeout as e:
                raise TerndError(4, "no answer from ternd in time") from e
            if not data:
                raise TerndError(14, "ternd closed the connection")
            self._decoder.feed(data)

    def call(self, request: pb.Request) -> pb.Response:
        rid = self.send(request)
        while True:
            response = self.receive()
            if response.id in (rid, 0):
                return _check(response)

    def infer(self, inputs: Mapping[str, Any], outputs: Iterable[str] = (),
              deadline_us: int = 0, rows: Optional[int] = None) -> Dict[str, Tensor]:
        request = pb.Request(infer=make_infer_request(inputs, outputs, deadline_us, rows))
        return _outputs(self.call(request).infer)

    def model_info(self) -> pb.ModelInfoResponse:
        return self.call(pb.Request(model_info=pb.ModelInfoRequest())).model_info

    def health(self) -> pb.HealthResponse:
        return self.call(pb.Request(health=pb.HealthRequest())).health

    def stats(self) -> pb.StatsResponse:
        return self.call(pb.Request(stats=pb.StatsRequest())).stats


class AsyncClient:
    """An asyncio connection to ternd; calls may run concurrently.

    >>> async def main():
    ...     async with await AsyncClient.connect() as c:
    ...         outs = await asyncio.gather(*(c.infer({"x": row}) for row in rows))
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_frame_bytes: int):
        self._reader = reader
        self._writer = writer
        self._decoder = _Decoder(max_frame_bytes)
        self._ids = itertools.count(1)
        self._pending: Dict[int, asyncio.Future] = {}
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())
        self._error: Optional[TerndError] = None

    @classmethod
    async def connect(cls, path: Optional[str] = None,
                      max_frame_bytes: int = 64 << 20) -> "AsyncClient":
        path = path or default_socket()
        try:
            reader, writer = await asyncio.open_unix_connection(path)
        except OSError as e:
            raise TerndError(14, f"cannot connect to ternd at {path}: {e}") from e
        return cls(reader, writer, max_frame_bytes)

    async def close(self) -> None:
        self._reader_task.cancel()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    raise TerndError(14, "ternd closed the connection")
                self._decoder.feed(data)
                while (payload := self._decoder.next()) is not None:
                    response = pb.Response()
                    response.ParseFromString(payload)
                    if response.id == 0:  # connection-level error: fails everyone
                        raise TerndError(response.status.code, response.status.message)
                    future = self._pending.pop(response.id, None)
                    if future is not None and not future.done():
                        future.set_result(response)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - delivered to every caller
            self._error = e if isinstance(e, TerndError) else TerndError(14, str(e))
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(self._error)
            self._pending.clear()

    async def call(self, request: pb.Request, timeout: Optional[float] = 30.0) -> pb.Response:
        if self._error:
            raise self._error
        request.id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request.id] = future
        self._writer.write(_frame(request))
        await self._writer.drain()
        try:
            response = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError as e:
            self._pending.pop(request.id, None)
            raise TerndError(4, "no answer from ternd in time", request.id) from e
        return _check(response)

    async def infer(self, inputs: Mapping[str, Any], outputs: Iterable[str] = (),
                    deadline_us: int = 0, rows: Optional[int] = None) -> Dict[str, Tensor]:
        request = pb.Request(infer=make_infer_request(inputs, outputs, deadline_us, rows))
        return _outputs((await self.call(request)).infer)

    async def model_info(self) -> pb.ModelInfoResponse:
        return (await self.call(pb.Request(model_info=pb.ModelInfoRequest()))).model_info

    async def health(self) -> pb.HealthResponse:
        return (await self.call(pb.Request(health=pb.HealthRequest()))).health

    async def stats(self) -> pb.StatsResponse:
        return (await self.call(pb.Request(stats=pb.StatsRequest()))).stats
