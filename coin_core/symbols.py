"""Symbols: normalisation, strict validation and file-safe slugs.

A symbol is ccxt's unified ``BASE/QUOTE`` (``BTC/USDT``). Nothing outside this module builds a
path or a page from symbol text without going through :func:`parse_symbol` or :func:`slug`.
"""

from __future__ import annotations

import re
from typing import Iterable

from .errors import ConfigError

__all__ = ["SYMBOL_PATTERN", "parse_symbol", "parse_symbols", "slug", "unslug", "check_listed"]

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,15}/[A-Z0-9]{2,10}$")
_SLUG_PATTERN = re.compile(r"^[A-Z0-9]{2,15}-[A-Z0-9]{2,10}$")


def parse_symbol(text: str) -> str:
    """Trim, upper-case and validate one symbol; the error names the bad entry."""
    value = str(text).strip().upper()
    if not SYMBOL_PATTERN.match(value):
        raise ConfigError(
            f"invalid symbol {text!r}: expected BASE/QUOTE with 2-15 and 2-10 letters or digits, "
            "e.g. BTC/USDT"
        )
    return value


def parse_symbols(items: str | Iterable[str]) -> list[str]:
    """Parse a comma-separated string or a list; de-duplicate keeping the first occurrence."""
    raw = items.split(",") if isinstance(items, str) else list(items)
    entries = [item for item in raw if str(item).strip()]
    if not entries:
        raise ConfigError("TARGET_SYMBOLS is empty: name at least one symbol, e.g. BTC/USDT")
    return list(dict.fromkeys(parse_symbol(item) for item in entries))


def slug(symbol: str) -> str:
    """File-safe form of a validated symbol: ``BTC/USDT`` -> ``BTC-USDT``."""
    return parse_symbol(symbol).replace("/", "-")


def unslug(text: str) -> str:
    """Inverse of :func:`slug`, validating the slug first."""
    if not _SLUG_PATTERN.match(text):
        raise ConfigError(f"invalid symbol slug {text!r}: expected e.g. BTC-USDT")
    return text.replace("-", "/")


def check_listed(symbols: Iterable[str], markets: Iterable[str], exchange_id: str) -> None:
    """Raise naming every symbol the exchange does not list."""
    known = set(markets)
    missing = [s for s in symbols if s not in known]
    if missing:
        raise ConfigError(f"symbol(s) not listed on {exchange_id}: {', '.join(missing)}")
