"""The floor: what Python and grpcio can do on this machine, for the same requests.

    python -m bench.floor --grpc-port 0 --output PROBABILITY:FP32:1

A ``grpc.aio`` server on Osprey's own generated stubs and event loop that answers
``ModelInfer`` and ``ModelStreamInfer`` for any model name: it reads each request
(grpcio parses the protobuf, as it does for Osprey), takes the row count from the
first input's shape and returns a response prebuilt for that row count — the
outputs named by ``--output NAME:DATATYPE:WIDTH``, each ``[rows, WIDTH]`` of zeros
in ``raw_output_contents`` — with the request's ``id`` echoed. No batching, no
model, no audit: the cost of the transport and the event loop alone, which the
performance issue measures Osprey's server CPU per request against.

It prints the same ready line as ``osprey serve`` (``bench.server_process`` waits
for it) and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from server.protocol.inference import grpc_service_pb2 as pb
from server.protocol.inference import grpc_service_pb2_grpc as pb_grpc

ITEM_BYTES = {"FP32": 4, "FP64": 8, "INT64": 8, "INT32": 4, "FP16": 2, "BOOL": 1}


@dataclass(frozen=True)
class OutputSpec:
    name: str
    datatype: str
    width: int


def parse_output(text: str) -> OutputSpec:
    """``NAME:DATATYPE:WIDTH``, e.g. ``PROBABILITY:FP32:1``."""
    try:
        name, datatype, width = text.split(":")
        spec = OutputSpec(name, datatype, int(width))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--output {text!r}: expected NAME:DATATYPE:WIDTH, e.g. PROBABILITY:FP32:1"
        ) from None
    if spec.datatype not in ITEM_BYTES or spec.width < 1:
        raise argparse.ArgumentTypeError(
            f"--output {text!r}: DATATYPE one of {', '.join(ITEM_BYTES)}, WIDTH >= 1"
        )
    return spec


class FloorServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Prebuilt answers, one per row count seen, with the request's id."""

    def __init__(self, outputs: list[OutputSpec]) -> None:
        self.outputs = outputs
        self._answers: dict[tuple[str, int], pb.ModelInferResponse] = {}

    def _prebuilt(self, model: str, rows: int) -> pb.ModelInferResponse:
        answer = self._answers.get((model, rows))
        if answer is None:
            answer = pb.ModelInferResponse(model_name=model, model_version="1")
            for spec in self.outputs:
                out = answer.outputs.add(name=spec.name, datatype=spec.datatype)
                out.shape.extend((rows, spec.width))
                answer.raw_output_contents.append(
                    bytes(rows * spec.width * ITEM_BYTES[spec.datatype]))
            self._answers[(model, rows)] = answer
        return answer

    def answer(self, request: Any) -> pb.ModelInferResponse:
        rows = request.inputs[0].shape[0] if request.inputs and request.inputs[0].shape else 1
        response = pb.ModelInferResponse()
        response.CopyFrom(self._prebuilt(request.model_name, rows))
        response.id = request.id
        return response

    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        return self.answer(request)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for request in request_iterator:
            yield pb.ModelStreamInferResponse(infer_response=self.answer(request))

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)


async def serve(host: str, port: int, outputs: list[OutputSpec]) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(FloorServicer(outputs), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"osprey ready: grpc={host}:{bound} metrics=off", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--output", type=parse_output, action="append", required=True,
                        help="an output of every answer, NAME:DATATYPE:WIDTH (repeatable)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.grpc_port, args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
