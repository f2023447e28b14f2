"""Study names and cache keys: everything that can invalidate a measurement is in them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from autotune.fingerprint import machine, software
from autotune.models.bert import BertArch, Bucket
from autotune.space import Value


@dataclass(frozen=True)
class StudyIdentity:
    """One Optuna study: (model architecture, op kind, shape bucket, device, machine)."""

    model: str
    arch: BertArch
    kind: str
    bucket: Bucket
    device: str
    dtype: str = "float32"
    #: what the gate also checks on besides synthetic data ("" for nothing): a checkpoint and
    #: texts (see ``measure.run._real_checks``), whose verdicts differ from synthetic ones
    accuracy: str = ""

    @cached_property
    def key_fields(self) -> dict[str, Any]:
        sw = software(self.device)
        return {
            "arch_hash": self.arch.hash,
            "kind": self.kind,
            "batch": self.bucket.batch,
            "seq": self.bucket.seq,
            "dtype": self.dtype,
            "device": self.device,
            "machine": machine(self.device)["fingerprint"],
            "torch": sw["torch"],
            "triton": sw["triton"],
            "schema": sw["schema"],
            **({"accuracy": self.accuracy} if self.accuracy else {}),
        }

    @cached_property
    def key(self) -> str:
        blob = json.dumps(self.key_fields, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def name(self) -> str:
        return f"{self.model}:{self.kind}:{self.bucket.label}:{self.device}:{self.key[:12]}"

    def attrs(self) -> dict[str, Any]:
        """Stored on the study, so export and report need nothing but the database."""
        return {
            "autotune": 1,
            "model": self.model,
            "arch": self.arch.to_dict(),
            "key": self.key,
            "machine_info": machine(self.device),
            "software": software(self.device),
            **self.key_fields,
        }


def config_key(study_key: str, params: dict[str, Value]) -> str:
    blob = json.dumps({"study": study_key, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
