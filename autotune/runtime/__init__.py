"""Production runtime: load a tuned config and run BERT with it. Imports only torch.

    model = autotune.load("bert-base-uncased", config="tuned/bert-base-uncased-cpu.json")
    out = model(input_ids, attention_mask=mask)     # .last_hidden_state, .pooler_output
    autotune.apply(hf_model, "tuned/...json")       # patch an existing HF model in place
"""

from __future__ import annotations

import os

#: oneDNN compiles and caches a kernel per GEMM shape (its primitive cache, and ideep's cache
#: above it), 1,024 of each by default at ~0.3 MB apiece: a bert-base server grew by ~3.5 MB
#: per distinct batch shape it saw, toward ~700 MB (benchmarks/kernel_cache_cpu.py). The
#: runtime bounds both unless the environment sets them. They are read when torch runs its
#: first oneDNN kernel: this holds where the runtime is imported before any model has run.
KERNEL_CACHE_ENTRIES = 256
for _name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
    os.environ.setdefault(_name, str(KERNEL_CACHE_ENTRIES))

from autotune.runtime.config import ConfigError, TunedConfig, parse_config  # noqa: E402
from autotune.runtime.model import BertOutput, TunedBert, apply, load  # noqa: E402

__all__ = ["KERNEL_CACHE_ENTRIES", "BertOutput", "ConfigError", "TunedBert", "TunedConfig",
           "apply", "load", "parse_config"]
