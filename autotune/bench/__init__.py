"""``autotune bench``: the tuned model next to the tools users would otherwise pick."""

#: Every contender ``autotune bench --against`` knows, in the order the table lists them.
PEERS = ("eager", "sdpa", "sdpa-bf16", "compile", "compile-bf16", "onnxruntime",
         "onnxruntime-int8", "openvino", "openvino-bf16", "openvino-int8")
#: The precision tier each peer computes in (its GEMMs): the bench compares the tuned model
#: with the best peer of each tier.
PEER_TIERS = {"eager": "float32", "sdpa": "float32", "compile": "float32",
              "onnxruntime": "float32", "openvino": "float32", "sdpa-bf16": "bfloat16",
              "compile-bf16": "bfloat16", "openvino-bf16": "bfloat16",
              "onnxruntime-int8": "int8", "openvino-int8": "int8"}
TIERS = ("float32", "bfloat16", "int8")
