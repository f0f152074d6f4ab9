"""Per-application state that middlewares build lazily.

aiohttp freezes an Application when it starts, after which new keys may not be
added; the auth and rate-limit middlewares still need objects of their own per
application (signing keys, token buckets). `per_app(factory)` keeps them per
application, built on first use and dropped with it.
"""
from __future__ import annotations

import weakref
from typing import Callable, TypeVar

from aiohttp import web

T = TypeVar("T")


def per_app(factory: Callable[[web.Application], T]) -> Callable[[web.Application], T]:
    # Keyed by id(app), dropped by a finalizer when the app goes: a WeakKeyDictionary
    # builds a weak reference on every lookup, and middlewares look up on every request.
    cache: dict[int, T] = {}

    def get(app: web.Application) -> T:
        try:
            return cache[id(app)]
        except KeyError:
            value = cache[id(app)] = factory(app)
            weakref.finalize(app, cache.pop, id(app), None)
            return value

    return get
