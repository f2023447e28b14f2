"""``autotune bench``: the tuned model next to the tools users would otherwise pick."""

#: Every contender ``autotune bench --against`` knows, in the order the table lists them.
PEERS = ("eager", "sdpa", "sdpa-bf16", "compile", "compile-bf16", "onnxruntime",
         "onnxruntime-int8", "openvino", "openvino-bf16", "openvino-int8")
