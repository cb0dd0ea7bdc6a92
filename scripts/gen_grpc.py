"""Regenerate the committed gRPC stubs of mlserve/serving/proto/ from grpc_predict_v2.proto.

    pip install grpcio-tools && python scripts/gen_grpc.py

The stubs are committed (not generated at build time) so that building or
installing mlserve needs no code generator; rerun this after editing the .proto.
Two edits follow grpcio-tools' output:

* the messages are built in a descriptor pool of their own, not protobuf's
  default pool: tritonclient (and any other V2 client or server) registers its
  own messages of package ``inference`` there, and two files defining
  ``inference.ModelInferRequest`` in one pool is an error, so mlserve's server
  and tritonclient could not be imported in one process otherwise;
* the service module imports the messages from this package (grpcio-tools
  writes a top-level ``import grpc_predict_v2_pb2``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parent.parent / "mlserve" / "serving" / "proto"
NAME = "grpc_predict_v2"
PACKAGE = "mlserve.serving.proto"


def main() -> int:
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={PROTO_DIR}",
            f"--grpc_python_out={PROTO_DIR}",
            str(PROTO_DIR / f"{NAME}.proto"),
        ]
    )
    if status:
        return int(status)
    messages = PROTO_DIR / f"{NAME}_pb2.py"
    text = messages.read_text()
    default_pool = "_descriptor_pool.Default().AddSerializedFile("
    if default_pool not in text:
        raise SystemExit(f"{messages}: grpcio-tools' output changed; update {__file__}")
    text = text.replace(
        default_pool,
        "_descriptor_pool.DescriptorPool().AddSerializedFile(  # a pool of its own: see "
        "scripts/gen_grpc.py\n    ",
    )
    messages.write_text(text)
    service = PROTO_DIR / f"{NAME}_pb2_grpc.py"
    text, count = re.subn(
        rf"^import {NAME}_pb2 as", f"from {PACKAGE} import {NAME}_pb2 as", service.read_text(),
        flags=re.MULTILINE,
    )
    if count != 1:
        raise SystemExit(f"{service}: grpcio-tools' output changed; update {__file__}")
    service.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
