"""Wire shapes of the simulated exchange's market data: exchangeInfo, errors, weights.

Shaped after the recorded real responses in ``shared/data/binance_wire/`` (the current
``exchangeInfo`` format of the official docs: newer filter set, ``permissionSets``, integers as
JSON integers, quantities as 8-decimal strings).
"""

from __future__ import annotations

from typing import Any

from ..symbols import parse_symbol

__all__ = [
    "market_id",
    "symbol_info",
    "exchange_info",
    "error_body",
    "WEIGHTS",
    "RATE_LIMITS",
    "ERR_INVALID_SYMBOL",
    "ERR_INVALID_INTERVAL",
    "ERR_MANDATORY",
    "ERR_ILLEGAL",
    "ERR_START_AFTER_END",
    "ERR_TOO_MUCH_WEIGHT",
    "ERR_BANNED",
    "ERR_INTERNAL",
]

# Request weights of the endpoints (official docs); the sim reports them, it does not enforce.
WEIGHTS = {"/api/v3/ping": 1, "/api/v3/time": 1, "/api/v3/exchangeInfo": 20, "/api/v3/klines": 2}

RATE_LIMITS: list[dict[str, Any]] = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
]

ERR_INVALID_SYMBOL = (-1121, "Invalid symbol.")
ERR_INVALID_INTERVAL = (-1120, "Invalid interval.")
ERR_MANDATORY = (-1102, "Mandatory parameter '{}' was not sent, was empty/null, or malformed.")
ERR_ILLEGAL = (-1100, "Illegal characters found in parameter '{}'; legal range is '^[0-9]{{1,20}}$'.")
ERR_START_AFTER_END = (-1023, "Start time is greater than end time.")
ERR_TOO_MUCH_WEIGHT = (-1003, "Too much request weight used; current limit is 6000 request weight per 1 "
                       "MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.")
ERR_BANNED = (-1003, "Way too much request weight used; IP banned until {}. Please use WebSocket "
              "Streams for live updates to avoid bans.")
ERR_INTERNAL = (-1001, "Internal error; unable to process your request. Please try again.")


def error_body(error: tuple[int, str], *args: object) -> dict[str, Any]:
    """Binance's error payload: ``{"code": -1121, "msg": "Invalid symbol."}``."""
    code, msg = error
    return {"code": code, "msg": msg.format(*args) if args else msg}


def market_id(symbol: str) -> str:
    """``BTC/USDT`` -> ``BTCUSDT`` (Binance's id)."""
    return parse_symbol(symbol).replace("/", "")


def _filters(price_decimals: int) -> list[dict[str, Any]]:
    tick = f"{10 ** -price_decimals:.8f}"
    return [
        {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000", "tickSize": tick},
        {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
        {"filterType": "ICEBERG_PARTS", "limit": 10},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "100.00000000",
         "stepSize": "0.00000000"},
        {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000,
         "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
        {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
         "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
        {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
         "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
    ]


def symbol_info(symbol: str, price_decimals: int = 2, status: str = "TRADING") -> dict[str, Any]:
    """One ``exchangeInfo.symbols[]`` entry for a unified symbol."""
    base, quote = parse_symbol(symbol).split("/")
    return {
        "symbol": base + quote,
        "status": status,
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "opoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "amendAllowed": True,
        "pegInstructionsAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": _filters(price_decimals),
        "permissions": [],
        "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def exchange_info(server_time_ms: int, symbols: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole ``GET /api/v3/exchangeInfo`` document."""
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "rateLimits": RATE_LIMITS,
        "exchangeFilters": [],
        "symbols": symbols,
    }
