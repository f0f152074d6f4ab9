"""Per-application state that middlewares build lazily.

aiohttp freezes an Application when it starts, after which new keys may not be
added; the auth and rate-limit middlewares still need objects of their own per
application (signing keys, token buckets). `per_app(factory)` keeps them in a
weak map keyed by the application, built on first use and dropped with it.
"""
from __future__ import annotations

import weakref
from typing import Callable, TypeVar

from aiohttp import web

T = TypeVar("T")


def per_app(factory: Callable[[web.Application], T]) -> Callable[[web.Application], T]:
    cache: "weakref.WeakKeyDictionary[web.Application, T]" = weakref.WeakKeyDictionary()

    def get(app: web.Application) -> T:
        try:
            return cache[app]
        except KeyError:
            value = cache[app] = factory(app)
            return value

    return get
