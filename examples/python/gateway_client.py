"""A Python client of the shardpipe gateway over gRPC, using only the .proto.

Generate the stubs (Debian: apt-get install python3-grpcio protobuf-compiler protobuf-compiler-grpc):

    protoc -I gateway/proto --python_out=OUT --grpc_python_out=OUT \
      --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin shardpipe/gateway/v1/gateway.proto

then run:  PYTHONPATH=OUT /usr/bin/python3 examples/python/gateway_client.py 127.0.0.1:7400 [TOKEN]

It writes a key, reads it back, shows a compare-and-set conflict, patches a JSON document (merge
patch, then JSON Patch with compare-and-set), reads part of it back, bulk-writes unsorted rows and
scans them. It prints one JSON line per step.
"""
import json
import sys

import grpc
from shardpipe.gateway.v1 import gateway_pb2 as pb
from shardpipe.gateway.v1 import gateway_pb2_grpc as rpc


def main() -> int:
    address = sys.argv[1]
    metadata = [("authorization", "Bearer " + sys.argv[2])] if len(sys.argv) > 2 else []
    with grpc.insecure_channel(address) as channel:
        gw = rpc.GatewayStub(channel)

        put = gw.Put(pb.PutRequest(key=b"example:greeting", value=b"hello"), metadata=metadata)
        got = gw.Get(pb.GetRequest(key=b"example:greeting"), metadata=metadata)
        print(json.dumps({"step": "put-get", "etag": put.etag, "value": got.value.decode()}))

        # Compare-and-set with a stale etag: ABORTED, the current etag in trailing metadata.
        try:
            gw.Put(pb.PutRequest(key=b"example:greeting", value=b"bye", expected_etag=put.etag + 1000), metadata=metadata)
        except grpc.RpcError as err:
            trailers = dict(err.trailing_metadata() or ())
            print(json.dumps({"step": "cas", "status": err.code().name, "current_etag": trailers.get("shardpipe-current-etag")}))

        # JSON documents: change part of a value on the store node, atomically, and read part of it.
        profile = {"name": "Ada", "address": {"city": "London", "zip": "N1"}, "langs": ["en"]}
        gw.Put(pb.PutRequest(key=b"example:profile", value=json.dumps(profile).encode()), metadata=metadata)
        merged = gw.Patch(pb.PatchRequest(key=b"example:profile", patch=json.dumps({"address": {"zip": None}, "born": 1815})), metadata=metadata)
        ops = [{"op": "test", "path": "/name", "value": "Ada"}, {"op": "add", "path": "/langs/-", "value": "fr"}]
        patched = gw.Patch(
            pb.PatchRequest(key=b"example:profile", patch=json.dumps(ops), mode=pb.PATCH_MODE_JSON_PATCH, if_etag=merged.etag, return_document=True),
            metadata=metadata,
        )
        part = gw.Get(pb.GetRequest(key=b"example:profile", fields=["/address/city", "/langs/1"]), metadata=metadata)
        print(json.dumps({"step": "documents", "etag": patched.etag, "document": json.loads(patched.document), "partial": json.loads(part.value)}))

        # BulkPut takes rows in any order; the gateway sorts them per partition.
        def rows():
            for base in (2, 0, 1):
                yield pb.BulkPutRequest(rows=[pb.BulkRow(key=b"example:row:%03d" % (base * 100 + i), value=b"v%d" % i) for i in range(100)])

        written = gw.BulkPut(rows(), metadata=metadata)
        scanned = sum(len(r.entries) for r in gw.ScanAll(pb.ScanRequest(start=b"example:row:", end=b"example:row;"), metadata=metadata))
        print(json.dumps({"step": "bulk", "written": written.rows, "scanned": scanned}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
