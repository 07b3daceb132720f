"""The 24/7 trading engine: scheduling, the risk gate, crash-safe order intents, fill tracking.

Modules, one idea each: `scheduler` (the `Engine`: APScheduler jobs, reconciliation, fill polling, control),
`runner` (one strategy run: snapshot → decide → gate → intents), `risk` (the pure Decimal risk gate),
`intents` (sending, resolving and recording orders and fills), `fills` (exchange reports → fill events),
`actions` (pauses and key rejection with their alerts), `alerts` (alert texts), `pnl` (P&L from fills),
`context` (what the parts share), `crash_hook` (the crash-safety test hook).
"""
