"""Clients of ternd's unix-socket protocol (docs/protocol.md).

`Client` is blocking: one call at a time, or pipelined with `send` and
`receive`. `AsyncClient` is for asyncio: any number of concurrent calls on
one connection, matched to their answers by request id (answers may come
back in any order).

Inputs are given as a dict from input name to rows of values: a list of
lists, a flat list (one row), a `array.array('f')` with `rows=`, or a numpy
array of shape [rows, features] or [features] (one row) when numpy is
installed: float or integer, e.g. int16 audio samples, sent as float32. Outputs come back
as `Tensor` objects.

Language models stream: `generate` returns a `Generation` (an async one on
`AsyncClient`), an iterable of `Chunk` objects (a token, its text, its
log-probability) with the `summary` once it has ended; leaving the loop
early cancels the call. `generate_text` waits for the whole text.

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
from typing import (Any, AsyncIterator, Dict, Iterable, Iterator, List, Mapping,
                    Optional, Sequence, Tuple)

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


@dataclass
class Chunk:
    """One piece of a generation: a token and the text it completes.

    `text` may be empty (a character split over tokens, or text held back
    because it may begin a stop string). The last piece of a generation may
    carry only text (`token` None): what was held back. `logprob` is set
    when the call asked for `logprobs=True`.
    """

    token: Optional[int]
    text: str
    logprob: Optional[float] = None


def make_generate_request(prompt: Optional[str] = None,
                          tokens: Optional[Iterable[int]] = None,
                          max_tokens: int = 0, temperature: float = 0.0,
                          top_k: int = 0, top_p: float = 0.0, min_p: float = 0.0,
                          repetition_penalty: float = 0.0, repeat_last_n: int = 0,
                          seed: Optional[int] = None, stop: Iterable[str] = (),
                          stop_tokens: Iterable[int] = (), logprobs: bool = False,
                          deadline_us: int = 0, literal_special: bool = False,
                          special_text: bool = False,
                          session: str = "") -> pb.GenerateRequest:
    """A GenerateRequest; give exactly one of `prompt` (text) and `tokens`."""
    if isinstance(stop, str):
        stop = [stop]
    r = pb.GenerateRequest(
        max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        min_p=min_p, repetition_penalty=repetition_penalty,
        repeat_last_n=repeat_last_n, logprobs=logprobs, deadline_us=deadline_us,
        literal_special=literal_special, special_text=special_text,
        session=session)
    if prompt is not None:
        r.prompt = prompt
    if tokens is not None:
        r.prompt_tokens.extend(int(t) for t in tokens)
    if seed is not None:
        r.seed = seed
    r.stop.extend(stop)
    r.stop_tokens.extend(int(t) for t in stop_tokens)
    return r


class _GenerationState:
    """What the blocking and the asyncio generation share: the frames of one
    Generate call turned into chunks, the text so far and the summary."""

    def __init__(self, request_id: int):
        self.id = request_id
        self.tokens: List[int] = []
        self.text = ""
        self.summary: Optional[pb.GenerateSummary] = None
        self.done = False
        self._cancel_id = 0      # the Cancel request's id, once sent
        self._cancel_answered = False

    @property
    def stop_reason(self) -> Optional[str]:
        """The summary's stop_reason; None while the generation runs."""
        return self.summary.stop_reason if self.summary is not None else None

    def _chunk(self, response: pb.Response) -> Optional[Chunk]:
        """The chunk a frame of this call carries (None: none to pass on);
        raises TerndError for an error frame. Marks the end."""
        if response.final:
            self.done = True
        _check(response)
        g = response.generate
        if response.final:
            self.summary = g.summary
        if self._cancel_id or not (g.tokens or g.text):
            return None  # after a cancel the rest is read, not passed on
        token = g.tokens[0] if g.tokens else None
        self.tokens.extend(g.tokens)
        self.text += g.text
        return Chunk(token, g.text, g.logprobs[0] if g.logprobs else None)

    def __repr__(self) -> str:
        state = f"stop_reason={self.stop_reason!r}" if self.done else "running"
        return (f"<{type(self).__name__} id={self.id} {state} "
                f"tokens={len(self.tokens)} text={self.text[:40]!r}>")


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
        # Integer samples (int16 audio, uint8 pixels, ...) travel as their
        # values in float32, which holds every int16/uint16 exactly.
        if value.dtype.kind not in "fiu" or value.dtype.itemsize > 8:
            raise TypeError(f"input '{name}': numpy dtype {value.dtype} is not a real number "
                            "type (int16, float32, ...)")
        if value.ndim not in (1, 2):
            raise ValueError(f"input '{name}': numpy array of shape {value.shape}; expected "
                             "[features] (one row) or [rows, features]")
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


class Generation(_GenerationState):
    """A streaming Generate call on a blocking `Client` (`Client.generate`).

    Iterate it for `Chunk` objects as the daemon produces them; when the
    loop ends, `summary` (a GenerateSummary: stop_reason, counts, timings),
    `text` and `tokens` hold the whole generation. Leaving the loop early
    (`break`, an exception) cancels the call: a CancelRequest goes out and
    the rest of the stream is read, so the connection stays usable; then
    `summary.stop_reason` is "cancelled". `cancel()` or `close()` does the
    same explicitly, and `with` closes it on exit. An error from the daemon
    raises TerndError from the loop.
    """

    def __init__(self, client: "Client", request_id: int):
        super().__init__(request_id)
        self._client = client

    def __iter__(self) -> Iterator[Chunk]:
        try:
            while True:
                chunk = self._next_chunk()
                if chunk is None:
                    return
                yield chunk
        finally:
            if not self.done:  # left early: cancel so the connection stays usable
                try:
                    self.cancel()
                except TerndError:
                    pass  # the connection is gone; its next call will say so

    def __next__(self) -> Chunk:
        chunk = self._next_chunk()
        if chunk is None:
            raise StopIteration
        return chunk

    def __enter__(self) -> "Generation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_chunk(self) -> Optional[Chunk]:
        c = self._client
        while not self.done or (self._cancel_id and not self._cancel_answered):
            try:
                response = c.receive()
            except TerndError:
                self._abandon()
                raise
            if response.id == 0:  # connection-level error
                self._abandon()
                _check(response)
            if response.id == self._cancel_id:
                self._cancel_answered = True
                continue
            if response.id != self.id or self.done:
                continue  # someone else's pipelined answer
            try:
                chunk = self._chunk(response)
            finally:
                if self.done and c._generation is self:
                    c._generation = None
            if chunk is not None:
                return chunk
        return None

    def _abandon(self) -> None:
        self.done = True
        if self._client._generation is self:
            self._client._generation = None

    def cancel(self) -> None:
        """Stops the generation (CancelRequest) and reads its stream to the
        end. `summary.stop_reason` is then "cancelled", or how it ended if
        it had ended already. Nothing happens when it has ended."""
        if self.done:
            return
        if not self._cancel_id:
            self._cancel_id = self._client.send(
                pb.Request(cancel=pb.CancelRequest(target=self.id)))
        while self._next_chunk() is not None:
            pass

    close = cancel


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
        self._generation: Optional[Generation] = None  # streaming, not read to its end

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
        self._finish_generation()
        rid = self.send(request)
        while True:
            response = self.receive()
            if response.id in (rid, 0):
                return _check(response)

    def infer(self, inputs: Mapping[str, Any], outputs: Iterable[str] = (),
              deadline_us: int = 0, rows: Optional[int] = None) -> Dict[str, Tensor]:
        request = pb.Request(infer=make_infer_request(inputs, outputs, deadline_us, rows))
        return _outputs(self.call(request).infer)

    def generate(self, prompt: Optional[str] = None, tokens: Optional[Iterable[int]] = None,
                 max_tokens: int = 0, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 0.0, min_p: float = 0.0, repetition_penalty: float = 0.0,
                 repeat_last_n: int = 0, seed: Optional[int] = None,
                 stop: Iterable[str] = (), stop_tokens: Iterable[int] = (),
                 logprobs: bool = False, deadline_us: int = 0,
                 literal_special: bool = False, special_text: bool = False,
                 session: str = "") -> Generation:
        """Starts generating from `prompt` (text) or `tokens` (ids): exactly one.

        Returns a `Generation` to iterate for `Chunk` objects; its `summary`
        is set once the loop has ended (docs/python-client.md). The request
        goes out now; an error from the daemon raises from the loop. A call
        made on this client while a generation is still streaming cancels
        that generation first (one call at a time).
        """
        self._finish_generation()
        request = pb.Request(generate=make_generate_request(
            prompt, tokens, max_tokens, temperature, top_k, top_p, min_p,
            repetition_penalty, repeat_last_n, seed, stop, stop_tokens, logprobs,
            deadline_us, literal_special, special_text, session))
        self._generation = Generation(self, self.send(request))
        return self._generation

    def generate_text(self, *args, **kwargs) -> Tuple[str, pb.GenerateSummary]:
        """`generate` (same arguments) read to its end: (text, summary)."""
        g = self.generate(*args, **kwargs)
        for _ in g:
            pass
        return g.text, g.summary

    def _finish_generation(self) -> None:
        if self._generation is not None:
            self._generation.cancel()
            self._generation = None

    def model_info(self) -> pb.ModelInfoResponse:
        return self.call(pb.Request(model_info=pb.ModelInfoRequest())).model_info

    def health(self) -> pb.HealthResponse:
        return self.call(pb.Request(health=pb.HealthRequest())).health

    def stats(self) -> pb.StatsResponse:
        return self.call(pb.Request(stats=pb.StatsRequest())).stats


class AsyncGeneration(_GenerationState):
    """A streaming Generate call on an `AsyncClient` (`AsyncClient.generate`).

    `async for chunk in g` gives `Chunk` objects; when the loop ends,
    `summary`, `text` and `tokens` hold the whole generation. `await
    g.cancel()` (or `aclose()`, or leaving `async with g:`) sends a
    CancelRequest and reads the rest of the stream; `summary.stop_reason`
    is then "cancelled". Leaving an `async for` early cancels too, as soon
    as the loop finalizes the abandoned iterator; use `async with` (or
    `await g.cancel()`) to have it cancelled before the next statement.
    Other calls on the connection go on meanwhile.
    """

    def __init__(self, client: "AsyncClient", request_id: int,
                 queue: "asyncio.Queue", timeout: Optional[float]):
        super().__init__(request_id)
        self._client = client
        self._queue = queue
        self._timeout = timeout
        # One reader of the queue at a time: a cancel from `async with` and
        # one from the finalized loop may drain at once.
        self._reading = asyncio.Lock()

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        try:
            while True:
                chunk = await self._next_chunk()
                if chunk is None:
                    return
                yield chunk
        finally:
            if not self.done:  # left early: cancel it
                try:
                    await self.cancel()
                except TerndError:
                    pass

    async def __anext__(self) -> Chunk:
        chunk = await self._next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def __aenter__(self) -> "AsyncGeneration":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.cancel()

    async def _next_chunk(self) -> Optional[Chunk]:
        async with self._reading:
            while not self.done:
                try:
                    item = await asyncio.wait_for(self._queue.get(), self._timeout)
                except asyncio.TimeoutError as e:
                    self._abandon()
                    raise TerndError(4, "no answer from ternd in time", self.id) from e
                if isinstance(item, TerndError):  # the connection failed
                    self.done = True
                    raise item
                chunk = self._chunk(item)
                if chunk is not None:
                    return chunk
            return None

    def _abandon(self) -> None:
        """Stops waiting for this call; the daemon is told to stop it."""
        self.done = True
        self._client._streams.pop(self.id, None)
        if not self._client._error and not self._client._writer.is_closing():
            self._client._writer.write(_frame(pb.Request(
                id=next(self._client._ids), cancel=pb.CancelRequest(target=self.id))))

    async def cancel(self) -> None:
        """Stops the generation (CancelRequest) and reads its stream to the
        end. `summary.stop_reason` is then "cancelled", or how it ended if
        it had ended already. Nothing happens when it has ended."""
        if self.done:
            return
        if self._client._writer.is_closing():  # the client was closed
            self.done = True
            return
        if not self._cancel_id:
            self._cancel_id = -1  # from now on chunks are read, not passed on
            request = pb.Request(cancel=pb.CancelRequest(target=self.id))
            await self._client.call(request, self._timeout)
            self._cancel_id = request.id
        while await self._next_chunk() is not None:
            pass

    aclose = cancel


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
        self._streams: Dict[int, asyncio.Queue] = {}  # Generate calls, by id
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
        for queue in self._streams.values():
            queue.put_nowait(TerndError(14, "the connection was closed"))
        self._streams.clear()
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
                    stream = self._streams.get(response.id)
                    if stream is not None:  # a Generate call: every frame to its queue
                        stream.put_nowait(response)
                        if response.final:
                            del self._streams[response.id]
                        continue
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
            for queue in self._streams.values():
                queue.put_nowait(self._error)
            self._streams.clear()

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

    async def generate(self, prompt: Optional[str] = None,
                       tokens: Optional[Iterable[int]] = None, max_tokens: int = 0,
                       temperature: float = 0.0, top_k: int = 0, top_p: float = 0.0,
                       min_p: float = 0.0, repetition_penalty: float = 0.0,
                       repeat_last_n: int = 0, seed: Optional[int] = None,
                       stop: Iterable[str] = (), stop_tokens: Iterable[int] = (),
                       logprobs: bool = False, deadline_us: int = 0,
                       literal_special: bool = False, special_text: bool = False,
                       session: str = "",
                       timeout: Optional[float] = 30.0) -> AsyncGeneration:
        """Starts generating from `prompt` (text) or `tokens` (ids): exactly one.

        Returns an `AsyncGeneration` to `async for` over once the request
        has been written; an error from the daemon raises from the loop.
        `timeout` (seconds, None: forever) bounds the wait for each frame.
        """
        if self._error:
            raise self._error
        request = pb.Request(id=next(self._ids), generate=make_generate_request(
            prompt, tokens, max_tokens, temperature, top_k, top_p, min_p,
            repetition_penalty, repeat_last_n, seed, stop, stop_tokens, logprobs,
            deadline_us, literal_special, special_text, session))
        queue: asyncio.Queue = asyncio.Queue()
        self._streams[request.id] = queue
        self._writer.write(_frame(request))
        await self._writer.drain()
        return AsyncGeneration(self, request.id, queue, timeout)

    async def generate_text(self, *args, **kwargs) -> Tuple[str, pb.GenerateSummary]:
        """`generate` (same arguments) read to its end: (text, summary)."""
        g = await self.generate(*args, **kwargs)
        async for _ in g:
            pass
        return g.text, g.summary

    async def model_info(self) -> pb.ModelInfoResponse:
        return (await self.call(pb.Request(model_info=pb.ModelInfoRequest()))).model_info

    async def health(self) -> pb.HealthResponse:
        return (await self.call(pb.Request(health=pb.HealthRequest()))).health

    async def stats(self) -> pb.StatsResponse:
        return (await self.call(pb.Request(stats=pb.StatsRequest()))).stats
