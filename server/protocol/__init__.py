"""Protocol stubs generated from ``proto/`` at build time (see ``setup.py``).

``server.protocol.inference`` holds the KServe v2 / Triton messages and service
(``grpc_service_pb2``, ``grpc_service_pb2_grpc``, ``model_config_pb2``). The stubs
live under this package, with package-relative imports, so they never claim the
top-level ``inference`` module name.
"""
