"""Triton's ``GRPCInferenceService`` for Ray Serve's gRPC proxy: the entry its
``grpc_servicer_functions`` names.

tritonclient's generated messages call their module ``grpc_service_pb2`` (the name of the
``.proto`` they were generated from), which is not importable under that name; Ray pickles each
message between its proxy and the replica by that name. Importing this module (the proxy does,
to find the entry; a replica does, through the deployment's code) makes the name importable.
"""

from __future__ import annotations

import sys
from typing import Any

import tritonclient.grpc.service_pb2 as service_pb2
import tritonclient.grpc.service_pb2_grpc as service_pb2_grpc

GENERATED_NAME = "grpc_service_pb2"
sys.modules.setdefault(GENERATED_NAME, service_pb2)


def add_service_to_server(servicer: Any, server: Any) -> None:
    """``add_GRPCInferenceServiceServicer_to_server`` of Triton's client package."""
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
