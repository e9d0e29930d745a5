"""Token usage and cost of the model calls a run actually sent, and the ``--max-cost`` budget.

A backend that knows what a call used (the ``litellm`` backend) puts it in the response:
``response.extra["usage"] = {"prompt_tokens", "completion_tokens", "cost_usd"}`` (each None where the
provider or LiteLLM's cost map does not say). The engine (:func:`medvlm.vlm.engine.ask_images`) adds up
the responses the backend returned -- answers read from the cache cost nothing and are not counted -- in
a :class:`Usage`, and asks a :class:`Budget` before it hands each request to the backend. ``run.json``
records :meth:`Usage.record` as ``usage``; the report shows :func:`usage_facts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medvlm.vlm.types import VLMResponse

#: the reason recorded for a request the budget kept back (failures.csv ``error`` starts with it)
MAX_COST_REASON = "max-cost"
USAGE_KEY = "usage"


def call_usage(prompt_tokens: Any, completion_tokens: Any, cost_usd: Any) -> dict[str, Any]:
    """The ``extra["usage"]`` entry of one response: token counts as ints and the cost as a float, each
    None when unknown. A provider that reports 0 prompt tokens reported nothing (every real request has a
    prompt; LiteLLM fills in zeros), and a cost computed from no tokens is no cost: both None, so
    ``--max-cost`` never counts such a call as free.

    >>> call_usage(100, 7, 0.00032), call_usage(0, 0, 0.0)
    ({'prompt_tokens': 100, 'completion_tokens': 7, 'cost_usd': 0.00032}, {'prompt_tokens': None, \
'completion_tokens': None, 'cost_usd': None})
    """
    def count(x: Any) -> int | None:
        return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 else None

    p, c = count(prompt_tokens), count(completion_tokens)
    if not p:
        p = c = None
    cost = float(cost_usd) if isinstance(cost_usd, (int, float)) and not isinstance(cost_usd, bool) else None
    if p is None or (cost is not None and cost < 0):
        cost = None
    return {"prompt_tokens": p, "completion_tokens": c, "cost_usd": cost}


@dataclass
class Usage:
    """What the calls sent in one run used: ``n_calls`` responses (answers and failures),
    token sums over the calls that reported them, the cost over those with a known price, and how many
    did not report tokens (``n_tokens_unknown``) or a price (``n_cost_unknown``)."""

    n_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    n_tokens_unknown: int = 0
    n_cost_unknown: int = 0

    def add(self, response: VLMResponse) -> float | None:
        """Count one response the backend returned; returns its cost (None when unknown)."""
        self.n_calls += 1
        used = response.extra.get(USAGE_KEY) if isinstance(response.extra, Mapping) else None
        used = used if isinstance(used, Mapping) else {}
        if used.get("prompt_tokens") is None:
            self.n_tokens_unknown += 1
        else:
            self.prompt_tokens += int(used["prompt_tokens"])
            self.completion_tokens += int(used.get("completion_tokens") or 0)
        cost = used.get("cost_usd")
        if cost is None:
            if not response.failed:  # a failed call is not billed
                self.n_cost_unknown += 1
            return None if not response.failed else 0.0
        self.cost_usd += float(cost)
        return float(cost)

    def merge(self, other: Usage) -> None:
        """Add ``other``'s counts (several ``ask_images`` calls of one run)."""
        for name in ("n_calls", "prompt_tokens", "completion_tokens", "cost_usd", "n_tokens_unknown",
                     "n_cost_unknown"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def record(self) -> dict[str, Any]:
        """``run.json``'s ``usage``: the sums, with ``cost_usd`` None when no call's price was known (and
        some call was sent), and ``cost_complete`` False when some calls' prices were unknown."""
        priced = self.n_calls - self.n_cost_unknown
        counted = self.n_calls > self.n_tokens_unknown or not self.n_calls
        return {"n_calls": self.n_calls, "prompt_tokens": self.prompt_tokens if counted else None,
                "completion_tokens": self.completion_tokens if counted else None,
                "n_tokens_unknown": self.n_tokens_unknown,
                "cost_usd": round(self.cost_usd, 8) if priced > 0 or not self.n_calls else None,
                "n_cost_unknown": self.n_cost_unknown, "cost_complete": self.n_cost_unknown == 0}


@dataclass
class Budget:
    """``--max-cost USD``: a request is handed to the backend only while the spend so far, plus the
    requests in flight and this one each at the dearest call seen so far, stays within ``max_cost_usd``.
    Before the first price is known, only one request is in flight at a time (the probe). The first
    request kept back stops the run: it and every later one are counted in ``n_not_asked`` (answers
    already in the cache are still read).

    >>> b = Budget(1.0)
    >>> b.allows(0)  # the probe: no price known yet
    True
    >>> b.spend(0.3); b.allows(0), b.allows(1)  # 0.3 + 1 x 0.3, 0.3 + 2 x 0.3
    (True, True)
    >>> b.allows(2), b.allows(0)  # 0.3 + 3 x 0.3 > 1: stopped for the rest of the run
    (False, False)
    """

    max_cost_usd: float
    spent_usd: float = 0.0
    dearest_usd: float | None = None
    n_not_asked: int = 0
    stopped: bool = field(default=False)

    def spend(self, cost: float | None) -> None:
        if cost is None:
            return
        self.spent_usd += cost
        self.dearest_usd = cost if self.dearest_usd is None else max(self.dearest_usd, cost)

    def allows(self, in_flight: int) -> bool:
        """Whether one more request may be sent while ``in_flight`` are on their way."""
        if self.stopped:
            return False
        if self.dearest_usd is None:
            ok = in_flight == 0 and self.spent_usd < self.max_cost_usd
        else:
            ok = self.spent_usd + (in_flight + 1) * self.dearest_usd <= self.max_cost_usd + 1e-12
        self.stopped = not ok  # the first request kept back stops the run: the rest are kept back too
        return ok

    def reason(self, in_flight: int = 0) -> str:
        """The failure text of a request kept back while ``in_flight`` requests were on their way: asking it
        could exceed the limit (the spend so far alone may still be below it).

        >>> Budget(0.0005, spent_usd=0.000225, dearest_usd=0.000075).reason(3)  # doctest: +ELLIPSIS
        'max-cost: not asked, --max-cost 0.0005 USD would be exceeded (spent 0.000225 USD when this call ...'
        """
        return (f"{MAX_COST_REASON}: not asked, --max-cost {self.max_cost_usd:g} USD would be exceeded "
                f"(spent {self.spent_usd:.6g} USD when this call was held back, {in_flight} call(s) "
                "in flight); rerun with a higher --max-cost to ask it")

    def record(self) -> dict[str, Any]:
        return {"max_cost_usd": self.max_cost_usd, "n_not_asked": self.n_not_asked}


def run_usage(backend: Any, usage: Usage, budget: Budget | None) -> dict[str, Any] | None:
    """``run.json``'s ``usage`` for a run that asked ``backend``: :meth:`Usage.record`, the budget's
    limit and what it kept back, and the backend's notes (e.g. a dropped seed); None when the backend
    reports no usage (the record is then left out, as before usage existed)."""
    if backend is None or not getattr(backend, "reports_usage", False):
        return None
    out = usage.record()
    if budget is not None:
        out.update(budget.record())
    notes = getattr(backend, "notes", None)
    if notes:
        out["notes"] = list(notes)
    return out


def usage_line(usage: Mapping[str, Any]) -> str:
    """One line for the terminal: tokens and cost of the calls sent.

    >>> usage_line({"n_calls": 2, "prompt_tokens": 200, "completion_tokens": 14, "cost_usd": 0.00064})
    'usage: 2 calls sent, 200 prompt + 14 completion tokens, cost 0.00064 USD'
    >>> usage_line({"n_calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0})
    'usage: 0 calls sent, 0 prompt + 0 completion tokens, cost 0 USD'
    """
    p, c, cost = usage.get("prompt_tokens"), usage.get("completion_tokens"), usage.get("cost_usd")
    tokens = f"{p} prompt + {c} completion tokens" if p is not None else "tokens not reported"
    price = "cost unknown" if cost is None else f"cost {cost:.6g} USD"
    return f"usage: {usage.get('n_calls', 0)} calls sent, {tokens}, {price}"


def max_cost_message(usage: Mapping[str, Any] | None) -> str | None:
    """The one line that says ``--max-cost`` stopped a run (None when it did not)."""
    if not usage or not usage.get("n_not_asked"):
        return None
    return (f"--max-cost {usage['max_cost_usd']:g} USD reached: {usage['n_not_asked']} request(s) not asked "
            f"(failures.csv, reason max-cost; spent {usage.get('cost_usd') or 0:.6g} USD in this run); rerun "
            "with a higher --max-cost to ask only those (answers so far are cached)")


def _number(x: Any, spec: str = "g") -> str | None:
    """``x`` formatted when it is a number (not a bool), else None."""
    return format(x, spec) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def usage_facts(usage: Any) -> list[tuple[str, str]]:
    """The report's lines for ``run.json``'s ``usage`` (nothing when the run has none or it is not an
    object; a value of the wrong type is shown as not recorded): tokens, cost (``unknown`` where no price
    was known) and what ``--max-cost`` kept back.

    >>> usage_facts({"n_calls": 3, "prompt_tokens": 300, "completion_tokens": 21, "cost_usd": 0.00096,
    ...              "n_cost_unknown": 0, "max_cost_usd": 0.001, "n_not_asked": 2})
    [('tokens sent (this invocation)', '300 prompt + 21 completion in 3 calls'), ('cost', '0.00096 USD'), \
('--max-cost', '0.001 USD: 2 call(s) not asked')]
    >>> usage_facts({"n_calls": "x", "cost_usd": None}), usage_facts([1])
    ([('tokens sent (this invocation)', 'not reported in ? calls'), ('cost', "unknown (no price in \
LiteLLM's cost map)")], [])
    """
    if not isinstance(usage, Mapping):
        return []
    n, p, c = (_number(usage.get(k), "d") if isinstance(usage.get(k), int) else None
               for k in ("n_calls", "prompt_tokens", "completion_tokens"))
    cost = _number(usage.get("cost_usd"), ".6g")
    tokens = f"{p} prompt + {c or '?'} completion" if p is not None else "not reported"
    out = [("tokens sent (this invocation)", f"{tokens} in {n or '?'} calls")]
    if cost is None:
        out.append(("cost", "unknown (no price in LiteLLM's cost map)"))
    else:
        unknown = _number(usage.get("n_cost_unknown"))
        note = f" ({unknown} call(s) without a price)" if unknown not in (None, "0") else ""
        out.append(("cost", f"{cost} USD{note}"))
    limit = _number(usage.get("max_cost_usd"))
    if limit is not None:
        out.append(("--max-cost", f"{limit} USD: {_number(usage.get('n_not_asked')) or 0} call(s) not asked"))
    return out
