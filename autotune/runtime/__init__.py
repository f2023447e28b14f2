"""Production runtime: load a tuned config and run BERT with it. Imports only torch.

    model = autotune.load("bert-base-uncased", config="tuned/bert-base-uncased-cpu.json")
    out = model(input_ids, attention_mask=mask)     # .last_hidden_state, .pooler_output
    autotune.apply(hf_model, "tuned/...json")       # patch an existing HF model in place
"""

from __future__ import annotations

from autotune.runtime.config import ConfigError, TunedConfig, parse_config
from autotune.runtime.model import BertOutput, TunedBert, apply, load

__all__ = ["BertOutput", "ConfigError", "TunedBert", "TunedConfig", "apply", "load",
           "parse_config"]
