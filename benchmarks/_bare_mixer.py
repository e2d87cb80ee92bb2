"""A bare grpc.aio server for the Mixer API: answers every Check with one fixed OK response and
every Report with an empty one. It is the baseline the Check/Report benchmarks compare with: the
same Python gRPC stack, protobuf runtime and event loop as mixerd, and no work at all."""

from __future__ import annotations

import asyncio
import sys

import grpc

from mixerd._proto.mixer.v1 import check_pb2, mixer_pb2_grpc, report_pb2


class Bare(mixer_pb2_grpc.MixerServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        resp = check_pb2.CheckResponse()
        resp.precondition.status.code = 0
        resp.precondition.valid_duration.seconds = 60
        resp.precondition.valid_use_count = 10000
        self.check = resp
        self.report = report_pb2.ReportResponse()

    async def Check(self, request, context):
        return self.check

    async def Report(self, request, context):
        return self.report


async def main(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 1024)])
    mixer_pb2_grpc.add_MixerServicer_to_server(Bare(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main(int(sys.argv[1])))
    except ImportError:
        asyncio.run(main(int(sys.argv[1])))
