"""The Swingup policy server: an exported actor behind gRPC, on onnxruntime (never torch).

Layers, each knowing only those below it: `runtime` (the onnxruntime session) and `batching`
(coalescing concurrent calls) and `sampling`, joined by `dataplane`; `servicer` converts protobuf
to numpy and back; `app` builds the gRPC server around it; `cli` is `swingup-serve`.
"""
