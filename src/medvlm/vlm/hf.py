"""The ``transformers`` backend: a local or cached image-text-to-text model via ``from_pretrained``.

Chat text (shared with fine-tuning): :func:`build_chat_text` renders the user turn (image, then the
prompt) with the processor's chat template and ends with the assistant header followed by
:data:`~medvlm.vlm.prompts.ANSWER_PREFIX` (``"Choice:"``), so the model only has to write the digit and
its reasoning. With ``answer`` it renders the full training text ending in ``"Choice: <answer>"`` and the
end-of-turn token. With few-shot examples (``--shots K``, :mod:`medvlm.vlm.fewshot`) the examples come first
as earlier user/assistant turns, and the processor gets their images before the question's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medvlm.vlm.backends import Backend
from medvlm.vlm.prompts import ANSWER_PREFIX


def _user(prompt_text: str, image: bool) -> dict[str, Any]:
    return {"role": "user", "content": [*([{"type": "image"}] if image else []),
                                        {"type": "text", "text": prompt_text}]}


def _messages(prompt_text: str, image: bool = True, shots: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """The few-shot turns (user: the example's image and prompt; assistant: its answer), then the question."""
    turns: list[dict[str, Any]] = []
    for shot in shots:
        turns += [_user(shot.prompt, bool(shot.image)),
                  {"role": "assistant", "content": [{"type": "text", "text": shot.answer}]}]
    return [*turns, _user(prompt_text, image)]


def build_chat_text(processor: Any, prompt_text: str, answer: int | str | None = None, *,
                    prefix: str = ANSWER_PREFIX, image: bool = True, shots: Sequence[Any] = ()) -> str:
    """Chat text for one image + prompt (``image=False``: the prompt alone, no image token); ``shots``
    (:class:`~medvlm.vlm.types.Shot`, few-shot examples) come first as earlier user/assistant turns, one
    image token for each example with an image.

    - ``answer is None``: ``<user turn with <|image|> and prompt_text><assistant header><prefix>`` (the
      task's answer prefix, ``Choice:``) -- the model continues with `` 1 Reasoning: ...`` (generate) or
      its next tokens are scored (logprobs).
    - ``answer`` given (0/1/2, or a string): the same text followed by `` <answer>`` and the end of the
      assistant turn, for supervised fine-tuning. A string that already starts with ``Choice:`` is used
      as the whole answer (e.g. ``"Choice: 1 Reasoning: enhancing rim"``).

    Pass the result to the processor with ``add_special_tokens=False`` (the template adds BOS).

    >>> from medvlm.vlm.tiny import build_tiny_processor
    >>> proc = build_tiny_processor()
    >>> build_chat_text(proc, "Grade?")[-35:]
    'assistant<|end_header_id|>\\n\\nChoice:'
    >>> build_chat_text(proc, "Grade?", answer=1)[-33:]
    '_header_id|>\\n\\nChoice: 1<|eot_id|>'
    """
    head = processor.apply_chat_template(_messages(prompt_text, image, shots), add_generation_prompt=True,
                                         tokenize=False)
    if answer is None:
        return head + prefix
    answer_text = str(answer)
    if not answer_text.startswith(prefix):
        answer_text = f"{prefix} {answer_text}"
    full = processor.apply_chat_template(
        _messages(prompt_text, image, shots) + [{"role": "assistant", "content": [{"type": "text",
                                                                             "text": answer_text}]}],
        add_generation_prompt=False, tokenize=False)
    if not full.startswith(head):  # a template that renders the assistant turn unusually: fall back
        eos = getattr(getattr(processor, "tokenizer", processor), "eos_token", "") or ""
        full = head + answer_text + eos
    return full


def encode_batch(processor: Any, images: list[Any], texts: list[str]) -> Any:
    """Processor inputs (``BatchFeature`` of tensors) for a batch of PIL images and chat texts.

    One image per text, or a list of images per text (few-shot: the examples' images, then the
    question's, in the order of the text's image tokens); no images: text-only inputs. Left padding (so
    the last position is each row's next-token position).
    """
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.padding_side = "left"
    if not images or all(isinstance(im, list) and not im for im in images):
        return processor(text=texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return processor(images=[im if isinstance(im, list) else [im] for im in images], text=texts,
                     return_tensors="pt", padding=True, add_special_tokens=False)


# ----------------------------------------------------------------------------------------------- backend
def answer_token_ids(tokenizer: Any, prefix: str, codes: tuple[str, ...]) -> tuple[str, list[int]]:
    """(separator, ids of the ``codes``) such that ``prefix + sep + code`` tokenizes as the tokens of
    ``prefix + sep`` plus one token for the code. Tries ``" "`` first (Llama 3 splits digits off, so the
    digit follows a space token), then ``""`` (tokenizers with merged ``" 1"`` tokens)."""
    from medvlm.errors import BackendError

    for sep in (" ", ""):
        head = tokenizer(prefix + sep, add_special_tokens=False)["input_ids"]
        ids = []
        for code in codes if sep else tuple(" " + c for c in codes):
            full = tokenizer(prefix + sep + code, add_special_tokens=False)["input_ids"]
            if full[:len(head)] == head and len(full) == len(head) + 1:
                ids.append(full[-1])
        if len(ids) == len(codes) and len(set(ids)) == len(codes):
            return sep, ids
    raise BackendError(f"the tokenizer has no single next token for each of {list(codes)} after {prefix!r}; "
                       "use --scoring generate")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``mps``, else ``cpu``; anything else as given once it is
    there: ``cuda``/``cuda:N`` without that CUDA device, or ``mps`` without MPS, is a one-line
    ConfigError (before any weight is loaded)."""
    import torch

    from medvlm.errors import ConfigError

    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {device}: no CUDA device is available here "
                              "(torch.cuda.is_available() is False); use --device cpu or auto")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= count:
            raise ConfigError(f"--device {device}: only {count} CUDA device(s) visible (cuda:0 .. "
                              f"cuda:{count - 1}); use one of those, or auto")
    if device == "mps" and not mps:
        raise ConfigError("--device mps: no Apple MPS device is available here; use --device cpu or auto")
    return device


def _batch_key(request: Any) -> tuple:
    """Requests batched together share answer prefix, codes and the images per text (with or without
    the question's image, and the examples' images)."""
    return (request.prefix, request.codes, bool(request.image), tuple(bool(s.image) for s in request.shots))


class TransformersBackend(Backend):
    """Local image-text-to-text model via ``from_pretrained`` (Llama-3.2-Vision and similar).

    Batched (``batch_size``, left padding); bf16 on CUDA, float32 elsewhere (``dtype`` overrides);
    optional PEFT adapter. ``generate``: greedy (or sampled, one request at a time with a per-request
    seed) continuation of :func:`build_chat_text` after the request's prefix (``raw`` = the continuation
    verbatim, ``prefill`` = the prefix). ``logprobs``: one forward pass; softmax over the whole
    vocabulary at the last position, P of each of the request's code tokens and their mass; ``raw``
    empty. ``structured="choice"`` constrains generation to one of the codes (the same forward pass;
    ``raw`` = the most probable code). ``temperature``/``top_p`` None:
    the model's ``generation_config`` decides (``do_sample``, ``temperature``, ``top_p``).
    """

    name = "transformers"
    prefills_answer = True

    def __init__(self, config: Any) -> None:
        from medvlm.errors import BackendError, first_line, require
        from medvlm.vlm.backends import fingerprint

        require("torch", "vlm")
        require("transformers", "vlm")
        import torch
        import transformers

        self.config = config
        self.device = resolve_device(config.device)
        adapter_state = None
        if config.adapter:
            require("peft", "finetune")
            from medvlm.vlm._adapter import read_adapter

            adapter_state = read_adapter(config.adapter)  # before the base model loads
        if config.dtype == "auto":
            self.dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            self.dtype = getattr(torch, config.dtype)
        from medvlm.hub import check_model_source

        check_model_source(config.model)  # a folder, a cached or confirmed Hub id: else one line, at once
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(config.model)
            model_cls = getattr(transformers, "AutoModelForImageTextToText", None)
            try:
                model = model_cls.from_pretrained(config.model, dtype=self.dtype)  # type: ignore[union-attr]
            except (ValueError, AttributeError):
                model = transformers.AutoModelForVision2Seq.from_pretrained(config.model, dtype=self.dtype)
        except Exception as exc:  # noqa: BLE001 - a damaged folder fails in many ways (SafetensorError, ...)
            raise BackendError(f"--model {config.model}: cannot load it with from_pretrained "
                               f"({first_line(exc)})") from None
        if adapter_state is not None:
            from medvlm.vlm._adapter import attach_adapter

            model = attach_adapter(model, config.adapter, adapter_state)
        self.model = model.to(self.device).eval()
        self._fingerprint = fingerprint
        self._digits: dict[tuple[str, tuple[str, ...]], tuple[str, list[int]]] = {}
        self._warned_multi_image = False

    def model_identity(self) -> str:
        return self._fingerprint(self.config.model)

    def adapter_identity(self) -> str | None:
        return None if self.config.adapter is None else self._fingerprint(self.config.adapter)

    def check(self, decoding: Any) -> None:
        from medvlm.errors import ConfigError

        if decoding.structured == "json":
            raise ConfigError("--structured json is not supported by the transformers backend; "
                              "use choice or none")
        if decoding.extra_body:
            raise ConfigError("extra_body is for the openai backend")

    def close(self) -> None:
        del self.model

    # ------------------------------------------------------------------ helpers
    def _inputs(self, batch: list[Any], suffix: str = ""):
        import io

        from PIL import Image

        def pictures(r: Any) -> list[Any]:
            pngs = [s.image for s in r.shots] + [r.image]
            return [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs if png]

        if any(r.shots for r in batch):
            self._warn_multi_image(batch)
            images: list[Any] = [pictures(r) for r in batch]
        else:
            images = [Image.open(io.BytesIO(r.image)).convert("RGB") for r in batch if r.image]
        texts = [build_chat_text(self.processor, r.prompt, prefix=r.prefix, image=bool(r.image),
                                 shots=r.shots) + suffix for r in batch]
        inputs = encode_batch(self.processor, images, texts).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def _warn_multi_image(self, batch: list[Any]) -> None:
        """Warn once: Llama-3.2-Vision (mllama) was trained on one image per conversation."""
        if self._warned_multi_image or getattr(self.model.config, "model_type", "") != "mllama":
            return
        if sum(bool(s.image) for s in batch[0].shots) + bool(batch[0].image) < 2:
            return
        import warnings

        self._warned_multi_image = True
        warnings.warn(f"--model {self.config.model}: Llama-3.2-Vision (mllama) was trained on one image per "
                      "conversation; a few-shot prompt shows it several, so its answers may suffer",
                      UserWarning, stacklevel=2)

    def _code_probs(self, batch: list[Any]) -> list[list[float]]:
        """P(code) at the answer position, one row per request (the batch shares prefix and codes)."""
        import torch

        answer = (batch[0].prefix, tuple(batch[0].codes))
        if answer not in self._digits:
            self._digits[answer] = answer_token_ids(self.processor.tokenizer, *answer)
        sep, ids = self._digits[answer]
        inputs = self._inputs(batch, suffix=sep)
        with torch.no_grad():
            logits = self.model(**inputs).logits[:, -1, :].float()
        return torch.softmax(logits, dim=-1)[:, ids].cpu().tolist()

    def samples(self, decoding: Any) -> bool:
        """Whether ``generate`` samples: temperature > 0, or (temperature None) the model's
        ``generation_config.do_sample``."""
        if decoding.temperature is None:
            gen = getattr(self.model, "generation_config", None)
            return bool(getattr(gen, "do_sample", False))
        return decoding.temperature > 0

    def _generate(self, batch: list[Any], decoding: Any) -> list[tuple[str, str]]:
        import torch

        inputs = self._inputs(batch)
        sample = self.samples(decoding)
        kwargs: dict[str, Any] = {"max_new_tokens": decoding.max_new_tokens}
        if decoding.temperature is not None:  # None: do_sample/temperature from generation_config
            kwargs["do_sample"] = sample
        if sample:
            if decoding.temperature is not None:
                kwargs["temperature"] = decoding.temperature
            if decoding.top_p is not None:  # None: generation_config's top_p
                kwargs["top_p"] = decoding.top_p
            seed = decoding.request_seed(batch[0].repeat)
            torch.manual_seed(0 if seed is None else seed)
        tok = self.processor.tokenizer
        kwargs["pad_token_id"] = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.no_grad():
            out = self.model.generate(**inputs, **kwargs)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [(self.processor.decode(row, skip_special_tokens=True), self._finish_reason(row, decoding))
                for row in new]

    def _finish_reason(self, row: Any, decoding: Any) -> str:
        """``stop`` when the model ended its turn, ``length`` when it was cut at ``max_new_tokens``."""
        gen = getattr(self.model, "generation_config", None)
        ends = getattr(gen, "eos_token_id", None)
        ends = set(ends if isinstance(ends, (list, tuple)) else [ends])
        ends.add(self.processor.tokenizer.eos_token_id)
        ids = [int(t) for t in row]
        if any(t in ends for t in ids):
            return "stop"
        return "length" if len(ids) >= decoding.max_new_tokens else "stop"

    # ------------------------------------------------------------------ many requests
    def answer(self, requests, decoding):
        from medvlm.vlm.types import VLMResponse, normalise_probs

        size = 1 if (decoding.scoring == "generate" and self.samples(decoding)) else self.config.batch_size
        batch: list[Any] = []

        def run(batch):
            if decoding.scoring == "logprobs" or decoding.structured == "choice":
                for req, row in zip(batch, self._code_probs(batch), strict=True):
                    raw = ""
                    if decoding.scoring != "logprobs":
                        probs, _ = normalise_probs(*row)
                        raw = "" if probs is None else req.codes[max(range(len(row)), key=lambda i: probs[i])]
                    yield req, VLMResponse(raw=raw, prefill=req.prefix, mass=float(sum(row)),
                                           code_probs=dict(zip(req.codes, row, strict=True)))
            else:
                for req, (text, reason) in zip(batch, self._generate(batch, decoding), strict=True):
                    yield req, VLMResponse(raw=text, prefill=req.prefix, finish_reason=reason)

        for req in requests:
            if batch and _batch_key(req) != _batch_key(batch[0]):
                yield from run(batch)
                batch = []
            batch.append(req)
            if len(batch) >= size:
                yield from run(batch)
                batch = []
        if batch:
            yield from run(batch)
