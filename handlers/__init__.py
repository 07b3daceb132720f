"""Telegram handlers: thin adapters that parse an update, call a service and render the answer."""

from __future__ import annotations

from telegram.ext import Application

from handlers import (
    accounts,
    backtest,
    cancel,
    charts,
    connect,
    fallback,
    guard,
    history,
    settings,
    start,
    strategies,
    users,
    views,
)


def register_handlers(application: Application, runtime) -> None:
    """Wire every handler; negative groups (access, key safety) run before the features."""
    pairs = [
        *guard.handlers(runtime.intakes),
        *connect.handlers(runtime.intakes),
        *[(0, h) for h in start.handlers()],
        *accounts.handlers(),
        *cancel.handlers(),
        *strategies.handlers(runtime.drafts),
        *settings.handlers(),
        *backtest.handlers(),
        *views.handlers(),
        *charts.handlers(),
        *history.handlers(),
        *users.handlers(),
        *fallback.handlers(application, runtime),  # last: answers what no feature handler took
    ]
    for group, handler in pairs:
        application.add_handler(handler, group=group)
