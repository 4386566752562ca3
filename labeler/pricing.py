"""Turn token usage into money, from a price table kept as data (labeler/data/prices.json).

Prices change more often than code: the table is a JSON file, a user can point at their
own (``--prices FILE``) or override one model (``--price MODEL=IN,OUT[,CACHED]``). A model
with no known price costs ``None`` (unknown), never a silent zero.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from labeler.completion import Usage
from labeler.errors import ConfigError
from labeler.request import Request

PER = 1_000_000


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


class PriceTable:
    def __init__(self, prices: dict[str, Price], batch_discount: float = 0.5) -> None:
        self.prices = prices
        self.batch_discount = batch_discount
        self._found: dict[str, Price | None] = {}

    @classmethod
    def default(cls) -> PriceTable:
        text = resources.files("labeler").joinpath("data/prices.json").read_text("utf-8")
        return cls.from_json(json.loads(text), "labeler/data/prices.json")

    @classmethod
    def from_file(cls, path: str | Path) -> PriceTable:
        try:
            data = json.loads(Path(path).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read the price table: {exc}") from exc
        return cls.from_json(data, str(path))

    @classmethod
    def from_json(cls, data: Any, where: str) -> PriceTable:
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, dict):
            raise ConfigError(f'{where}: expected {{"models": {{name: {{input, output}}}}}}')
        prices = {}
        for name, p in models.items():
            try:
                prices[name] = Price(
                    float(p["input"]),
                    float(p["output"]),
                    _opt(p.get("cached_input")),
                    _opt(p.get("cache_write")),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: model '{name}': needs numeric input and output") from exc
            _check_price(prices[name], f"{where}: model '{name}'")
        try:
            discount = float(data.get("batch_discount", 0.5))
        except (TypeError, ValueError):
            discount = math.nan
        if not 0.0 <= discount <= 1.0:  # also NaN
            raise ConfigError(f"{where}: batch_discount must be a number in [0, 1]")
        return cls(prices, discount)

    def with_override(self, spec: str) -> PriceTable:
        """``MODEL=IN,OUT[,CACHED]`` in USD per million tokens."""
        name, sep, values = spec.partition("=")
        try:
            nums = [float(v) for v in values.split(",")]
            if not sep or len(nums) not in (2, 3):
                raise ValueError
        except ValueError as exc:
            raise ConfigError(f"--price '{spec}': expected MODEL=IN,OUT[,CACHED] (USD/1M tokens)") from exc
        prices = dict(self.prices)
        prices[name] = Price(nums[0], nums[1], nums[2] if len(nums) == 3 else None)
        _check_price(prices[name], f"--price '{spec}'")
        return PriceTable(prices, self.batch_discount)

    def lookup(self, model: str) -> Price | None:
        """The price of `model`, or of the longest known name it starts with (a dated
        snapshot costs what its family costs). Remembered: it is asked once per answer."""
        try:
            return self._found[model]
        except KeyError:
            pass
        if model in self.prices:
            price: Price | None = self.prices[model]
        else:
            best = max((n for n in self.prices if model.startswith(n)), key=len, default=None)
            price = self.prices[best] if best else None
        self._found[model] = price
        return price

    def cost(self, model: str, usage: Usage, *, batch: bool = False) -> float | None:
        price = self.lookup(model)
        if price is None:
            return None
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        fresh = usage.prompt_tokens - cached
        cached_rate = price.cached_input if price.cached_input is not None else price.input
        write_rate = price.cache_write if price.cache_write is not None else price.input
        usd = (
            fresh * price.input
            + cached * cached_rate
            + usage.cache_write_tokens * write_rate
            + usage.completion_tokens * price.output
        ) / PER
        return usd * (self.batch_discount if batch else 1.0)

    def estimate_request(
        self,
        model: str,
        request: Request,
        max_output: int,
        *,
        batch: bool = False,
        shape: tuple[int, int] | None = None,
    ) -> float:
        """Worst-case cost before sending: prompt estimate plus every allowed output token.

        `shape` is (HTTP requests, answers per request) as `teachers.base.request_shape`
        gives it: a teacher that samples n answers with n requests pays the prompt n
        times. Without it, one request asking for the template's ``n`` answers.
        """
        price = self.lookup(model)
        if price is None:
            return 0.0
        prompt = len(request.prompt or "") + sum(len(m.get("content") or "") for m in request.messages or ())
        calls, n = shape if shape is not None else (1, int(request.params.get("n") or 1))
        usd = ((prompt / 4) * calls * price.input + max_output * calls * n * price.output) / PER
        return usd * (self.batch_discount if batch else 1.0)


def _check_price(price: Price, where: str) -> None:
    """A price is a finite amount of at least zero: a NaN or negative one makes every cost
    NaN or negative, which no budget ever exceeds, so `--budget` would stop nothing."""
    for part in ("input", "output", "cached_input", "cache_write"):
        value = getattr(price, part)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(
                f"{where}: the {part} price must be a finite number >= 0 (USD per 1M tokens), got {value}"
            )


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)
