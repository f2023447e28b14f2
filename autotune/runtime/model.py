"""BERT forward with tuned operators, dispatched per input shape; ``load`` and ``apply``.

Each operator kind looks up the smallest tuned shape bucket that covers the call (rows for the
token-wise GEMMs, batch and sequence for embeddings and attention, batch for the pooler) and
runs the variant built for that bucket and layer. Every variant runs any shape (CPU ops split
rows into the bucket's blocks, Triton kernels mask), so a shape beyond every bucket runs the
nearest bucket's choice; only an op kind the config has no choice for runs the float32
reference (with one warning). A CPU batch with much padding runs padding-free (the token-wise
ops on its real tokens only) whatever the config's layout. Activations stay in whatever dtype
the previous op produced until an op needs another: conversions between precisions are paid
where they occur. Ops are built on first use, under a lock: one loaded model serves callers
on several threads.
"""

from __future__ import annotations

import inspect
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import torch

from autotune.models.bert import FAMILIES, BertArch, Bucket, ResolvedModel, resolve_model
from autotune.models.kinds import KINDS
from autotune.ops import cast_inputs, get_variant, op_spec
from autotune.ops.attention import key_lengths
from autotune.ops.registry import OpFn, Output, Tensors
from autotune.runtime.config import Choice, ConfigError, TunedConfig, check_fit, parse_config
from autotune.runtime.weights import (
    checkpoint_file,
    random_weights,
    read_checkpoint,
    split_weights,
)

# HF BertModel arguments the tuned forward does not implement: when one is set, the call
# goes to the model's original forward (unchanged behaviour, no speed-up).
_UNSUPPORTED = ("inputs_embeds", "head_mask", "encoder_hidden_states", "past_key_values",
                "output_attentions", "output_hidden_states")


#: A CPU batch with at least this share of padding runs padding-free whatever the config's
#: layout. Skipping the padding saves its share of every GEMM, and the gathers around
#: attention cost ~3% of a bert-base forward (8x512, torch profiler); a batch with a quarter
#: of padding ran in 0.72-0.85x the padded time (1x128, 8x128, 4x512). Padding-free calls
#: return zeros at padding positions other than each row's first (the padded layout returns
#: what HF computes there, which some callers compare), so it is taken where it pays
#: clearly, not at every pad.
VARLEN_MIN_PADDING = 0.25

#: Resolved (op, layer, shape) entries kept: about 300 shapes of a 12-layer model.
_DISPATCH_ENTRIES = 20_000


class FallbackWarning(UserWarning):
    """An op kind runs the float32 reference: the config has no choice for it."""


class BertOutput:
    """Like HF's ``BaseModelOutputWithPooling``: attributes, keys and tuple indexing."""

    def __init__(self, last_hidden_state: torch.Tensor,
                 pooler_output: torch.Tensor | None) -> None:
        self.last_hidden_state = last_hidden_state
        self.pooler_output = pooler_output
        self.hidden_states = None
        self.attentions = None
        self.past_key_values = None
        self.cross_attentions = None

    def to_tuple(self) -> tuple[torch.Tensor, ...]:
        if self.pooler_output is None:  # as HF: None fields are left out
            return (self.last_hidden_state,)
        return (self.last_hidden_state, self.pooler_output)

    def keys(self) -> list[str]:
        return ["last_hidden_state", "pooler_output"][: len(self.to_tuple())]

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.to_tuple())

    def __len__(self) -> int:
        return len(self.to_tuple())


def pick_choice(kind: str, choices: Sequence[Choice], batch: int, seq: int) -> Choice | None:
    """The choice for a call: the smallest bucket that covers it (``choices`` are sorted
    smallest first), else the nearest one (the larger of two equally near)."""
    op = KINDS[kind]
    covering = next((c for c in choices if op.covers(c.bucket, batch, seq)), None)
    if covering is not None or not choices:
        return covering
    return min(reversed(choices), key=lambda c: op.distance(c.bucket, batch, seq))


class TunedBert(torch.nn.Module):
    """BERT encoder + pooler running the operators chosen in a ``TunedConfig``."""

    def __init__(self, arch: BertArch, state_dict: dict[str, torch.Tensor],
                 config: TunedConfig | None, device: str | torch.device | None = None) -> None:
        """``device``: where the weights go (default: where ``state_dict`` holds them)."""
        super().__init__()
        self.arch = arch
        self.config = config
        if device is not None:
            state_dict = {k: v.to(device) for k, v in state_dict.items()}
        # op kind -> the weights of each of its calls in a forward pass (one per layer), with
        # the calibrated range of the input where the config has one (static int8 needs it)
        self.weights = split_weights(state_dict, arch)
        for kind, ranges in (config.calibration.items() if config else ()):
            for w, r in zip(self.weights.get(kind, ()), ranges, strict=False):
                width = next(v for v in w.values() if v.dim() == 2).shape[1]
                if r["x_min"].numel() != width:
                    raise ConfigError(f"calibration.{kind}: ranges of {r['x_min'].numel()} "
                                      f"channels for an input of {width}")
                w.update({k: v.to(next(iter(w.values())).device) for k, v in r.items()})
        self._observer: Callable[[str, int, Tensors], None] | None = None
        self.ops: dict[str, tuple[Choice, ...]] = dict(config.ops) if config else {}
        # (kind, bucket, layer) -> the choice for that layer instead of the bucket's default
        self.layer_ops = {(kind, c.bucket, n): c for kind, cs in (
            config.layer_ops.items() if config else ()) for c in cs for n in c.layers}
        self.pad_to = config.pad_to_multiple if config else 1
        self.varlen = bool(config and config.varlen)
        self.cuda_graphs = config.cuda_graphs if config else 0
        self.skips_padded_keys = any(
            c.params.get("skip_padded_keys") for c in
            (*self.ops.get("attention", ()), *(config.layer_ops.get("attention", ())
                                               if config else ())))
        self._graphs: dict[tuple[object, ...], tuple[Any, tuple[torch.Tensor | None, ...],
                                                     tuple[torch.Tensor, torch.Tensor | None]]] = {}
        self._built: dict[tuple[str, int, Bucket], tuple[OpFn, torch.dtype]] = {}
        # (kind, layer, batch, seq) -> what _fn resolved for it: a forward pass then costs one
        # dict look-up per op instead of a bucket search, and shapes repeat in production
        self._dispatch: dict[tuple[str, int, int, int], tuple[OpFn, torch.dtype]] = {}
        self._building = threading.Lock()
        self._released = False
        self._warned: set[str] = set()

    # -- dispatch ---------------------------------------------------------------------------

    def _weights(self, kind: str, layer: int) -> Tensors:
        return self.weights[kind][layer]

    def _fn(self, kind: str, layer: int, batch: int, seq: int) -> tuple[OpFn, torch.dtype]:
        key = (kind, layer, batch, seq)
        found = self._dispatch.get(key)
        if found is not None:
            return found
        choice = pick_choice(kind, self.ops.get(kind, ()), batch, seq)
        if choice is None:
            found = self._reference(kind, layer), torch.float32
        else:
            found = self._built.get((kind, layer, choice.bucket)) or self._build(
                kind, layer, self.layer_ops.get((kind, choice.bucket, layer), choice))
        if len(self._dispatch) >= _DISPATCH_ENTRIES:  # bounded, whatever the traffic
            self._dispatch.clear()
        self._dispatch[key] = found
        return found

    def used_buckets(self) -> set[Bucket]:
        """The buckets whose choices the calls since this method's last call ran (it empties
        the dispatch cache; the ops stay built). The model-level study uses it to know which
        buckets' figures a change of choices can move."""
        with self._building:
            used = {c.bucket for kind, _, batch, seq in list(self._dispatch)
                    if (c := pick_choice(kind, self.ops.get(kind, ()), batch, seq)) is not None}
            self._dispatch.clear()
        return used

    def _build(self, kind: str, layer: int, choice: Choice) -> tuple[OpFn, torch.dtype]:
        key = (kind, layer, choice.bucket)
        with self._building:
            if key in self._built:  # built by another thread meanwhile
                return self._built[key]
            if self._released:
                raise RuntimeError(f"{kind} layer {layer} {choice.bucket.label} was not built "
                                   "before the weights were released")
            variant = get_variant(kind, self.config.device if self.config else "cpu",
                                  choice.variant)
            params = choice.all_params
            if self.config and self.config.threads and "threads" in params:
                params["threads"] = self.config.threads
            with torch.no_grad():
                fn = variant.build(self._weights(kind, layer), params, self.arch, choice.bucket)
            self._built[key] = (fn, variant.input_dtype(params))
        return self._built[key]

    def _layers(self, kind: str) -> range:
        return range(KINDS[kind].count(self.arch))

    def build_all(self, release_weights: bool = False) -> None:
        """Build the op of every tuned choice of every layer now. Every call, whatever its
        shape, runs one of them, so nothing is built later; with ``release_weights`` the
        model then drops its own references to the weights of the kinds it built (kept by
        the ops only in the layouts they use: a bfloat16 op holds the bfloat16 copy, not
        also the float32 original). Kinds without a choice keep theirs for the reference."""
        for kind, choices in self.ops.items():
            for layer in self._layers(kind):
                for choice in choices:
                    self._build(kind, layer,
                                self.layer_ops.get((kind, choice.bucket, layer), choice))
        if not release_weights:
            return
        with self._building:
            self._released = True
            for kind in set(self.ops) & set(self.weights):
                self.weights[kind] = [{} for _ in self.weights[kind]]

    def _reference(self, kind: str, layer: int) -> OpFn:
        if self.config is not None and kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(f"{kind}: the tuned config has no choice for this op kind; running "
                          "the float32 reference", FallbackWarning, stacklevel=4)
        spec, w, arch = op_spec(kind), self._weights(kind, layer), self.arch
        return lambda inputs: spec.reference(w, inputs, arch)

    def observe(self, hook: Callable[[str, int, Tensors], None] | None) -> None:
        """Call ``hook(kind, layer, inputs)`` before each op runs (None: no more): what
        calibration and the search's real-activation checks record."""
        self._observer = hook

    def _run(self, kind: str, layer: int, batch: int, seq: int, inputs: Tensors) -> Output:
        if self._observer is not None:
            self._observer(kind, layer, inputs)
        fn, dtype = self._fn(kind, layer, batch, seq)
        return fn(cast_inputs(inputs, dtype))

    def _run1(self, kind: str, layer: int, batch: int, seq: int,
              inputs: Tensors) -> torch.Tensor:
        out = self._run(kind, layer, batch, seq, inputs)
        assert isinstance(out, torch.Tensor)
        return out

    def prepare(self, shapes: list[tuple[int, int]]) -> None:
        """Build every op for these (batch, seq) shapes now rather than on first use."""
        for batch, seq in shapes:
            for kind in self.weights:
                for layer in self._layers(kind):
                    self._fn(kind, layer, batch, seq)

    # -- forward ----------------------------------------------------------------------------

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, **_: Any) -> BertOutput:
        _check_inputs(self.arch, input_ids, attention_mask, token_type_ids, position_ids)
        batch, seq = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None and self.arch.spec.offset_positions:
            # RoBERTa: non-padding tokens count from pad_token_id + 1; padding gets pad_token_id
            real = input_ids.ne(self.arch.pad_token_id)
            position_ids = torch.cumsum(real, dim=1) * real + self.arch.pad_token_id
        padded = -(-seq // self.pad_to) * self.pad_to
        varlen = self._padding_free(attention_mask)
        if varlen:  # columns after the last real token of every row hold padding only
            used = int(attention_mask.any(dim=0).nonzero().max()) + 1
            padded = min(padded, -(-used // self.pad_to) * self.pad_to)
        ids, mask, types, pos = (self._pad(t, padded) if t is not None else None
                                 for t in (input_ids, attention_mask, token_type_ids,
                                           position_ids))
        assert ids is not None and mask is not None and types is not None
        if self.cuda_graphs and ids.is_cuda and batch <= self.cuda_graphs and not varlen:
            h, pooled = self._graphed(ids, mask, types, pos)
        else:
            h, pooled = self._encode(ids, mask, types, pos, varlen)
        h = h[:, :seq] if padded >= seq else torch.nn.functional.pad(h, (0, 0, 0, seq - padded))
        return BertOutput(h.float(), None if pooled is None else pooled.float())

    def _padding_free(self, mask: torch.Tensor) -> bool:
        """Whether a call runs padding-free: always where the config says so, and on a CPU
        where at least ``VARLEN_MIN_PADDING`` of the batch is padding (production batches are
        padded to their longest input; the study may have chosen the padded layout on batches
        without any). A batch with a row without a real token runs padded."""
        if self.varlen:
            return bool(mask.any(dim=1).all())
        if mask.is_cuda:  # counting the padding would wait for the GPU; not measured there
            return False
        real = int(mask.count_nonzero())
        return real <= (1.0 - VARLEN_MIN_PADDING) * mask.numel() and bool(mask.any(dim=1).all())

    def _encode(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor,
                pos: torch.Tensor | None, varlen: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states and pooled output of a padded batch; with ``varlen`` the token-wise
        ops run on the real tokens only."""
        batch, padded = ids.shape
        emb_in = {"input_ids": ids, "token_type_ids": types}
        if pos is not None:
            emb_in["position_ids"] = pos
        h = self._run1("embeddings", 0, batch, padded, emb_in)
        masks, q_keep = self._masks(mask)
        real = _computed_tokens(mask) if varlen else None
        if real is not None:
            h = h.reshape(batch * padded, -1).index_select(0, real)[None]  # (1, tokens, hidden)
        for layer in range(self.arch.num_hidden_layers):
            h = self._layer(layer, h, batch, padded, masks, real, q_keep)
        if real is not None:
            full = h.new_zeros(batch * padded, h.shape[-1])
            full.index_copy_(0, real, h[0])
            h = full.view(batch, padded, -1)
        pooled = self._run1("pooler", 0, batch, padded, {"hidden": h}) \
            if "pooler" in self.weights else None
        return h, pooled

    def _masks(self, mask: torch.Tensor) -> tuple[Tensors, torch.Tensor | None]:
        """Attention's mask inputs, and the factor on Q of rows without a real token: (batch,
        1, 1, 1), 0 for such a row, 1 elsewhere; None when every row has one (or on a GPU,
        where finding out would wait for it). HF's eager softmax there is over keys all at
        the dtype's minimum, so the row attends uniformly; a bfloat16 mask turned that
        minimum into -inf, and the row into NaN. Here such a row keeps every key and zero
        queries, which score every key alike: uniform too."""
        keep = mask.bool()
        has = keep.any(dim=1, keepdim=True)
        q_keep = None if mask.is_cuda or bool(has.all()) else has[:, :, None, None]
        keep = (keep | ~has)[:, None, None, :]
        masks = {"mask_bool": keep,
                 "mask_add": torch.zeros(keep.shape, device=keep.device).masked_fill(
                     ~keep, torch.finfo(torch.float32).min)}
        if self.skips_padded_keys:  # only flash attention reads them (~20 µs on a CPU)
            masks["key_lengths"] = key_lengths(mask)
        return masks, q_keep

    @torch.no_grad()
    def run_layer(self, layer: int, hidden: torch.Tensor,
                  attention_mask: torch.Tensor) -> torch.Tensor:
        """Encoder layer ``layer`` alone on ``hidden`` (batch, seq, hidden; padded layout):
        fed the float32 model's input to that layer, its output shows the layer's own error."""
        batch, seq = attention_mask.shape
        masks, q_keep = self._masks(attention_mask)
        return self._layer(layer, hidden, batch, seq, masks, None, q_keep)

    def _graphed(self, *args: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``_encode`` replayed from a CUDA graph captured once per input shape: one launch
        instead of one per kernel (whether that pays is the model-level study's to measure)."""
        key = tuple(None if t is None else tuple(t.shape) for t in args)
        if key not in self._graphs:
            static = tuple(None if t is None else t.clone() for t in args)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # build, compile and autotune outside the capture
                for _ in range(2):
                    self._encode(*static)  # type: ignore[arg-type]
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._encode(*static)  # type: ignore[arg-type]
            self._graphs[key] = (graph, static, out)
        graph, static, (h, pooled) = self._graphs[key]
        for dst, src in zip(static, args, strict=True):
            if dst is not None and src is not None:
                dst.copy_(src)
        graph.replay()
        return h.clone(), None if pooled is None else pooled.clone()

    def _pad(self, t: torch.Tensor, length: int) -> torch.Tensor:
        if t.shape[1] == length:
            return t
        if t.shape[1] > length:
            return t[:, :length]
        return torch.nn.functional.pad(t, (0, length - t.shape[1]))

    def _layer(self, layer: int, h: torch.Tensor, batch: int, seq: int, masks: Tensors,
               real: torch.Tensor | None, q_keep: torch.Tensor | None = None) -> torch.Tensor:
        rows_b, rows_s = (1, h.shape[1]) if real is not None else (batch, seq)
        qkv = self._run("qkv_proj", layer, rows_b, rows_s, {"x": h})
        assert isinstance(qkv, tuple)
        q, k, v = qkv
        if real is not None:  # attention keeps per-sequence structure: scatter to padded
            q, k, v = (self._repad(t, real, batch, seq) for t in qkv)
        if q_keep is not None:
            q = q * q_keep.to(q.dtype)
        ctx = self._run1("attention", layer, batch, seq, {"q": q, "k": k, "v": v, **masks})
        if real is not None:
            ctx = ctx.reshape(batch * seq, -1).index_select(0, real)[None]
        h1 = self._run1("attn_out", layer, rows_b, rows_s, {"ctx": ctx, "residual": h})
        up = self._run1("ffn_up", layer, rows_b, rows_s, {"x": h1})
        return self._run1("ffn_down", layer, rows_b, rows_s, {"h": up, "residual": h1})

    def _repad(self, t: torch.Tensor, real: torch.Tensor, batch: int, seq: int) -> torch.Tensor:
        _, heads, _, d = t.shape  # (1, heads, tokens, d) -> (batch, heads, seq, d)
        full = t.new_zeros(batch * seq, heads, d)
        full.index_copy_(0, real, t[0].transpose(0, 1))
        return full.view(batch, seq, heads, d).transpose(1, 2)


def _computed_tokens(mask: torch.Tensor) -> torch.Tensor:
    """Flat indices of the tokens a padding-free call computes: the real ones, and each
    row's first, which the pooler and CLS pooling read whether or not it is padding (a
    left-padded batch): it is computed as HF computes it, attending to the row's real keys."""
    first = torch.zeros_like(mask, dtype=torch.bool)
    first[:, 0] = True
    return (mask.bool() | first).reshape(-1).nonzero().squeeze(1)


def _check_inputs(arch: BertArch, ids: torch.Tensor, *others: torch.Tensor | None) -> None:
    """One-line errors for inputs the model cannot run: anything else would fail deep in an
    op, or (a sequence longer than the position table) silently read the wrong embeddings."""
    if ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, sequence); got shape {tuple(ids.shape)}")
    if ids.shape[1] == 0:
        raise ValueError("input_ids holds no tokens (sequence length 0)")
    if ids.shape[1] > arch.max_seq:
        raise ValueError(f"input of {ids.shape[1]} tokens is longer than the model's maximum "
                         f"of {arch.max_seq}; truncate it (tokenizer(..., truncation=True))")
    for t in others:
        if t is not None and tuple(t.shape) != tuple(ids.shape):
            raise ValueError(f"attention_mask, token_type_ids and position_ids must have "
                             f"input_ids' shape {tuple(ids.shape)}; got {tuple(t.shape)}")


_BASE_MODELS = {f.hf_class for f in FAMILIES.values()}


def _find_bert(model: Any) -> torch.nn.Module:
    """The encoder inside a model, a task model or a ``transformers`` pipeline."""
    if not isinstance(model, torch.nn.Module):  # a pipeline holds its model here
        model = getattr(model, "model", model)
    if isinstance(model, torch.nn.Module):
        for m in model.modules():
            if type(m).__name__ in _BASE_MODELS:
                return m
    raise TypeError(f"{type(model).__name__} holds no encoder autotune can tune (one of "
                    f"{', '.join(sorted(_BASE_MODELS))})")


def apply(model: Any, config: str | Path | TunedConfig, strict: bool = False) -> Any:
    """Patch the encoder inside ``model`` (BertModel, RobertaModel, XLMRobertaModel,
    ElectraModel or DistilBertModel, alone, with a task head, in a sentence-transformers
    model or in a ``transformers`` pipeline) to run the tuned operators; heads keep working.
    Returns ``model``."""
    cfg = config if isinstance(config, TunedConfig) else parse_config(config)
    bert = _find_bert(model)
    hf_config: Any = getattr(bert, "config")  # noqa: B009  (a transformers PretrainedConfig)
    arch = BertArch.from_hf_config(hf_config.to_dict(), type(model).__name__)
    check_fit(cfg, arch, strict)
    tuned = TunedBert(arch, dict(bert.state_dict()), cfg)
    original = bert.forward
    signature = inspect.signature(original)  # families differ in their arguments' order
    var_kw = [n for n, p in signature.parameters.items() if p.kind == p.VAR_KEYWORD]

    def forward(*args: Any, **kwargs: Any) -> Any:
        kwargs = dict(signature.bind_partial(*args, **kwargs).arguments)
        for name in var_kw:
            kwargs.update(kwargs.pop(name, {}))
        if _needs_original(kwargs):
            return original(**kwargs)
        out = tuned(kwargs["input_ids"], kwargs.get("attention_mask"),
                    kwargs.get("token_type_ids"), kwargs.get("position_ids"))
        return out if kwargs.get("return_dict", True) is not False else out.to_tuple()

    bert.forward = forward
    bert.autotune = tuned  # keeps the tuned weights alive and inspectable
    return model


def _needs_original(kwargs: dict[str, Any]) -> bool:
    """Whether a call asks for what only the model's own forward does: an argument the tuned
    forward does not implement (a tensor or True), no ``input_ids``, or a mask that is not
    (batch, sequence) (HF also takes a ready 3-D or 4-D one)."""
    if any(kwargs.get(k) is not None and kwargs.get(k) is not False for k in _UNSUPPORTED):
        return True
    ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
    return ids is None or (mask is not None and mask.dim() != 2)


#: transformers pipeline tasks → the model class a pipeline of that task runs
TASK_MODELS = {"feature-extraction": "AutoModel",
               "text-classification": "AutoModelForSequenceClassification",
               "token-classification": "AutoModelForTokenClassification",
               "fill-mask": "AutoModelForMaskedLM"}


@overload
def load(name_or_path: str, config: str | Path | TunedConfig | None = None,
         strict: bool = False, device: str | None = None, task: None = None) -> TunedBert: ...


@overload
def load(name_or_path: str, config: str | Path | TunedConfig | None = None,
         strict: bool = False, device: str | None = None, *, task: str) -> Any: ...


def load(name_or_path: str, config: str | Path | TunedConfig | None = None,
         strict: bool = False, device: str | None = None, task: str | None = None) -> Any:
    """A BERT model (known name, local directory or hub id) running a tuned config, with its
    weights on ``device`` (default: the config's device, else the CPU), every op built.

    Without ``config`` every op runs its float32 reference. Without weights (no network, not
    in the cache) the architecture gets random weights, with a warning.

    With ``task`` (a pipeline task: feature-extraction, text-classification,
    token-classification, fill-mask) the model is the transformers model of that task (its
    head from the checkpoint where it has one) with the tuned encoder applied: a model to
    hand to ``transformers.pipeline(task, model=...)``. This needs ``transformers``."""
    resolved = resolve_model(name_or_path)
    cfg = None if config is None else (
        config if isinstance(config, TunedConfig) else parse_config(config))
    if cfg is not None:
        check_fit(cfg, resolved.arch, strict)
    device = device or (cfg.device if cfg is not None else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("the tuned config is for CUDA, and torch sees no CUDA device")
    if task is not None:
        model = _task_model(resolved, task).to(device)
        return model if cfg is None else apply(model, cfg, strict)
    state = read_checkpoint(resolved.path) if resolved.path else None
    if state is None:
        warnings.warn(f"no weights found for {name_or_path}; using random weights "
                      "(timings are valid, outputs are not)", stacklevel=2)
        state = random_weights(resolved.arch)
    tuned = TunedBert(resolved.arch, state, cfg, device).eval()
    del state
    # Every op built now, and the float32 originals of the kinds the config covers dropped:
    # the model holds each weight in the layouts its ops use (no first-call build either).
    tuned.build_all(release_weights=True)
    return tuned


def _task_model(resolved: ResolvedModel, task: str) -> Any:
    """The transformers model of ``task`` for a resolved model (float32, eval mode)."""
    if task not in TASK_MODELS:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(TASK_MODELS)}")
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"load(task={task!r}) builds a transformers model: "
                          "pip install transformers") from None
    cls = getattr(transformers, TASK_MODELS[task])
    if resolved.path is not None and checkpoint_file(resolved.path) is not None:
        return cls.from_pretrained(str(resolved.path)).eval()
    warnings.warn(f"no weights found for {resolved.name}; using random weights "
                  "(timings are valid, outputs are not)", stacklevel=3)
    return cls.from_config(resolved.arch.hf_config()).eval()
