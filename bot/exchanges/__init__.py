"""The exchange layer: one port (`gateway.ExchangeGateway`) over ccxt async, shared by every account.

- `clients`: ccxt instances shared per venue, credentials bound per call under a per-instance lock;
- `errors`: ccxt/venue errors → our types and an action (retry, back off, resync, auth, funds, …);
- `rate_budget`: one request budget per (venue, host) for the whole process (Binance weight per IP);
- `market_data`: cache that merges concurrent requests, valid until the next candle closes / one round;
- `models`: Decimal results (orders, trades, balances, markets, positions);
- `client_ids`: deterministic client order ids valid on every venue;
- `venues`: one adapter per venue (what it can do, its rules and tables), and their registry;
- `key_check`: /connect validation — authenticate, then prove the key cannot withdraw (fail closed).
"""
