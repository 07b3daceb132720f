"""Versioned schema migrations for the main database, applied in order at start-up.

Each migration runs once, inside the same transaction as the bump of `schema_version`, so a crash leaves
either the old or the new schema. Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

from storage.db import Database

#: The advisory lock id serialising migrations on PostgreSQL (any constant no other lock uses).
MIGRATION_LOCK = 0x5354524154_00

MIGRATIONS: list[str] = [
    # 1: users, accounts, credentials (ciphertext only), strategies, order intents, fills, alert outbox.
    """
    CREATE TABLE users (
        id          INTEGER PRIMARY KEY,            -- the Telegram user id
        chat_id     INTEGER NOT NULL,               -- private chat for alerts
        active      INTEGER NOT NULL DEFAULT 1,     -- 0 once Telegram said the user blocked the bot
        settings    TEXT NOT NULL DEFAULT '{}',
        created_at  TEXT NOT NULL
    );
    CREATE TABLE accounts (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id     INTEGER NOT NULL REFERENCES users(id),
        venue       TEXT NOT NULL,
        label       TEXT NOT NULL,
        status      TEXT NOT NULL DEFAULT 'active', -- active | key_rejected
        testnet     INTEGER NOT NULL DEFAULT 0,
        permissions TEXT NOT NULL DEFAULT '',
        created_at  TEXT NOT NULL,
        UNIQUE (user_id, label)
    );
    CREATE TABLE credentials (
        account_id  INTEGER PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
        dek_id      TEXT NOT NULL,                  -- the wrapped data key lives in the key store
        nonce       BLOB NOT NULL,
        ciphertext  BLOB NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE strategies (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id      INTEGER NOT NULL REFERENCES users(id),
        account_id   INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        kind         TEXT NOT NULL,
        symbol       TEXT NOT NULL,
        quote        TEXT NOT NULL,
        budget       TEXT NOT NULL,                 -- Decimal as text
        params       TEXT NOT NULL DEFAULT '{}',
        state        TEXT NOT NULL DEFAULT '{}',
        status       TEXT NOT NULL DEFAULT 'active', -- active | paused | finished | stopped
        pause_reason TEXT,
        spent        TEXT NOT NULL DEFAULT '0',     -- quote spent in fills, fees included
        received     TEXT NOT NULL DEFAULT '0',     -- quote received from sells, net of fees
        fees         TEXT NOT NULL DEFAULT '0',
        last_slot    TEXT,                          -- the last time slot executed (ISO UTC)
        next_run     TEXT,
        alerts       TEXT NOT NULL DEFAULT 'on',    -- on | silent | off
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL
    );
    CREATE INDEX strategies_by_account ON strategies(account_id, status);
    CREATE TABLE orders (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        strategy_id       INTEGER NOT NULL REFERENCES strategies(id) ON DELETE CASCADE,
        account_id        INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        client_order_id   TEXT NOT NULL UNIQUE,
        tag               TEXT NOT NULL,
        symbol            TEXT NOT NULL,
        side              TEXT NOT NULL,
        type              TEXT NOT NULL,
        amount            TEXT,
        price             TEXT,
        cost              TEXT,
        reserved          TEXT NOT NULL DEFAULT '0',  -- worst-case quote held against the budget
        status            TEXT NOT NULL,              -- intent|sent|open|closed|canceled|rejected|unknown
        exchange_order_id TEXT,
        filled            TEXT NOT NULL DEFAULT '0',
        filled_cost       TEXT NOT NULL DEFAULT '0',
        fee               TEXT NOT NULL DEFAULT '0',
        error             TEXT,
        created_at        TEXT NOT NULL,
        updated_at        TEXT NOT NULL,
        UNIQUE (strategy_id, tag)
    );
    CREATE INDEX orders_by_status ON orders(status, account_id);
    CREATE TABLE fills (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        order_id     INTEGER NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
        strategy_id  INTEGER NOT NULL REFERENCES strategies(id) ON DELETE CASCADE,
        trade_key    TEXT NOT NULL,                 -- exchange trade id, or cumulative-filled marker
        side         TEXT NOT NULL,
        amount       TEXT NOT NULL,
        price        TEXT NOT NULL,
        cost         TEXT NOT NULL,
        fee          TEXT NOT NULL,
        fee_currency TEXT,
        at           TEXT NOT NULL,
        UNIQUE (order_id, trade_key)
    );
    CREATE TABLE outbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id     INTEGER NOT NULL,
        chat_id     INTEGER NOT NULL,
        kind        TEXT NOT NULL,                 -- fill | pause | error | summary | info
        text        TEXT NOT NULL,
        silent      INTEGER NOT NULL DEFAULT 0,
        status      TEXT NOT NULL DEFAULT 'pending', -- pending | sent | undeliverable
        attempts    INTEGER NOT NULL DEFAULT 0,
        created_at  TEXT NOT NULL,
        sent_at     TEXT
    );
    CREATE INDEX outbox_pending ON outbox(status, chat_id, id);
    """,
    # 2: why an alert failed last (kept for undeliverable ones), and a quick way to a user's pending alerts.
    """
    ALTER TABLE outbox ADD COLUMN error TEXT;
    CREATE INDEX outbox_by_user ON outbox(user_id, status);
    """,
    # 3: the engine's extras: a strategy's last /status line, fills' fee valued in quote (budget ledger) and a
    #    grid round trip's profit, and indexes for the per-strategy queries of /status and fill polling.
    """
    ALTER TABLE strategies ADD COLUMN note TEXT;
    ALTER TABLE fills ADD COLUMN fee_quote TEXT NOT NULL DEFAULT '0';
    ALTER TABLE fills ADD COLUMN profit TEXT;
    CREATE INDEX orders_by_strategy ON orders(strategy_id, status);
    CREATE INDEX fills_by_strategy ON fills(strategy_id, id);
    """,
    # 4: an account's keyed fingerprints (HMAC under a key-store key, never the value): of its API key, so one
    #    key is connected once across all users; of the exchange account behind it (Binance uid), so a
    #    replacement key is proven to belong to the same exchange account. NULL for accounts connected earlier.
    """
    ALTER TABLE accounts ADD COLUMN key_ref TEXT;
    ALTER TABLE accounts ADD COLUMN owner_ref TEXT;
    CREATE UNIQUE INDEX accounts_by_key_ref ON accounts(key_ref);
    """,
    # 5: whether an order may only reduce a futures position: the risk gate reserves nothing for such an order,
    #    so the venue must be told (reduceOnly) from the same flag, also when the intent is sent after a restart.
    """
    ALTER TABLE orders ADD COLUMN reduce_only INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: orders a /pause, /stop, /panic or /disconnect could not confirm ended yet: the engine resolves them and
    #    alerts the user once (storage/order_watches.py).
    """
    CREATE TABLE order_watches (
        order_id   INTEGER PRIMARY KEY REFERENCES orders(id) ON DELETE CASCADE,
        reason     TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    """,
    # strategies get an optional name the user gives with name= at /allocate (shown in /status, alerts, pickers).
    """
    ALTER TABLE strategies ADD COLUMN name TEXT;
    """,
    # who paused a paused strategy: user (/pause), panic (/panic: "Resume all" resumes only these) or engine
    #    (funds, a refused order, a rejected key). Rows paused earlier are classified from their pause reason.
    """
    ALTER TABLE strategies ADD COLUMN paused_by TEXT;
    UPDATE strategies SET paused_by = CASE pause_reason WHEN 'paused by /panic' THEN 'panic'
        WHEN 'paused by you' THEN 'user' ELSE 'engine' END WHERE status = 'paused';
    """,
    # The last balances (and futures positions) fetched per account, so /accounts answers at once from them
    # ("as of HH:MM UTC") while it refreshes (storage/balances.py). Figures only: nothing secret.
    """
    CREATE TABLE account_balances (
        account_id INTEGER PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
        assets     TEXT NOT NULL,                  -- JSON [[asset, amount, value or null], …], decimal strings
        positions  TEXT,                           -- JSON [{symbol, side, size, entry, …}, …]; NULL: not read
        fetched_at TEXT NOT NULL
    );
    """,
    # Paper accounts: balances, orders and fills kept by Strata itself (bot/exchanges/paper.py), decimal strings.
    """
    CREATE TABLE paper_balances (
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        asset      TEXT NOT NULL,
        free       TEXT NOT NULL,
        used       TEXT NOT NULL,
        PRIMARY KEY (account_id, asset)
    );
    CREATE TABLE paper_orders (
        account_id      INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        id              TEXT NOT NULL,
        client_order_id TEXT,
        symbol          TEXT NOT NULL,
        side            TEXT NOT NULL,
        type            TEXT NOT NULL,
        amount          TEXT NOT NULL,
        price           TEXT,
        status          TEXT NOT NULL,              -- open | closed | canceled
        filled          TEXT NOT NULL,
        cost            TEXT NOT NULL,
        average         TEXT,
        fee             TEXT NOT NULL,
        fee_currency    TEXT,
        reserved_asset  TEXT,
        reserved        TEXT NOT NULL,
        created_ms      INTEGER NOT NULL,
        updated_ms      INTEGER NOT NULL,
        PRIMARY KEY (account_id, id),
        UNIQUE (account_id, client_order_id)
    );
    CREATE INDEX paper_orders_open ON paper_orders (account_id, status);
    CREATE TABLE paper_trades (
        account_id   INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        id           TEXT NOT NULL,
        order_id     TEXT NOT NULL,
        symbol       TEXT NOT NULL,
        side         TEXT NOT NULL,
        price        TEXT NOT NULL,
        amount       TEXT NOT NULL,
        cost         TEXT NOT NULL,
        fee          TEXT NOT NULL,
        fee_currency TEXT NOT NULL,
        maker        INTEGER NOT NULL,
        at_ms        INTEGER NOT NULL,
        PRIMARY KEY (account_id, id)
    );
    """,
    # key health: when each connected key was last checked and is due again, and which warnings about the expiry
    # of its trading permission were sent (persisted, so a restart never repeats them).
    """
    CREATE TABLE key_health (
        account_id  INTEGER PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
        checked_ms  INTEGER,                    -- the last check the venue answered (epoch ms)
        due_ms      INTEGER NOT NULL,           -- when the next periodic check is due (epoch ms)
        expires_ms  INTEGER,                    -- the trading permission's expiration the warnings are about
        warned      TEXT NOT NULL DEFAULT ''    -- warnings sent for that expiration: '', 'week', 'week,day'
    );
    CREATE INDEX key_health_due ON key_health (due_ms);
    """,
    # A photo sent with an alert (the daily summary's chart, PNG bytes; the alert's text is its caption),
    #    cleared once Telegram accepted it so the outbox keeps no pictures.
    """
    ALTER TABLE outbox ADD COLUMN photo BLOB;
    """,
    # Trades on a connected account that Strata did not make (no client order id of ours), one row per venue
    #    trade, so each is alerted once, restarts and re-deliveries included (storage/foreign_trades.py).
    """
    CREATE TABLE foreign_trades (
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        market     TEXT NOT NULL,               -- the unified symbol (the venue's own id if it was not known)
        trade_id   TEXT NOT NULL,               -- the venue's trade id (unique per market on Binance)
        side       TEXT NOT NULL,
        amount     TEXT NOT NULL,               -- decimal strings
        price      TEXT NOT NULL,
        cost       TEXT NOT NULL,
        at_ms      INTEGER NOT NULL,            -- when it traded (epoch ms)
        alerted    INTEGER NOT NULL DEFAULT 0,  -- 1 once its alert was queued (or the user had them off)
        PRIMARY KEY (account_id, market, trade_id)
    );
    CREATE INDEX foreign_trades_pending ON foreign_trades (alerted, account_id);
    """,
    # The audit log (storage/audit.py): append-only, no foreign keys, so its rows outlive accounts and strategies.
    """
    CREATE TABLE audit_log (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        at        TEXT NOT NULL,                -- ISO UTC
        actor_id  INTEGER,                      -- the Telegram user who acted; NULL: the operator or the bot
        user_id   INTEGER,                      -- whose data it concerned (for /history)
        action    TEXT NOT NULL,
        target    TEXT NOT NULL DEFAULT '',
        outcome   TEXT NOT NULL DEFAULT 'ok',
        detail    TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_log_by_user ON audit_log (user_id, id);
    CREATE INDEX audit_log_by_actor ON audit_log (actor_id, id);
    """,
    # The notifier claims pending alerts (storage/outbox.py) instead of reading past an id cursor.
    """
    ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
    CREATE INDEX outbox_unclaimed ON outbox (status, claimed_by, id);
    """,
    # Access modes (STRATA_ACCESS=approval): each user's access state and the name their request showed; users
    #    who were here before are approved. An alert may carry inline buttons (an access request's Approve /
    #    Block), as JSON rows of [label, callback data].
    """
    ALTER TABLE users ADD COLUMN access TEXT NOT NULL DEFAULT 'approved';
    ALTER TABLE users ADD COLUMN name TEXT NOT NULL DEFAULT '';
    ALTER TABLE outbox ADD COLUMN buttons TEXT;
    """,
    # Engine workers on PostgreSQL (storage/partitions.py): each worker's heartbeat, so every worker knows how
    # many are alive and takes its fair share of the account partitions; and the per-IP request weight the
    # workers of one egress address lease in chunks (storage/ip_budgets.py). Unused on SQLite (one process).
    """
    CREATE TABLE engine_workers (
        worker_id  TEXT PRIMARY KEY,
        backend    INTEGER NOT NULL,               -- the server pid of its lock connection (gone: worker dead)
        seen_ms    INTEGER NOT NULL,
        held       INTEGER NOT NULL DEFAULT 0      -- how many partitions it holds (for operators)
    );
    CREATE TABLE ip_budgets (
        egress     TEXT NOT NULL,                  -- the outgoing address the workers share (a name)
        budget     TEXT NOT NULL,                  -- "<venue> <origin host>"
        minute     INTEGER NOT NULL,               -- epoch minute of the venue's window
        used       INTEGER NOT NULL,
        PRIMARY KEY (egress, budget, minute)
    );
    """,
    # Control commands from the Telegram front to the worker owning the account (storage/commands.py).
    """
    CREATE TABLE commands (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id  INTEGER NOT NULL,
        user_id     INTEGER,
        kind        TEXT NOT NULL,
        payload     TEXT NOT NULL,              -- JSON
        status      TEXT NOT NULL DEFAULT 'pending',  -- pending, running, done, failed
        result      TEXT,                       -- JSON, once done or failed
        created_at  TEXT NOT NULL,              -- ISO UTC
        updated_at  TEXT NOT NULL
    );
    CREATE INDEX commands_by_status ON commands (status, id);
    """,
    # The last nonce used with each Kraken key by any process (storage/key_nonces.py; PostgreSQL only: on
    #    SQLite one process counts them in memory). `kid` is the key's short hash, never the key.
    """
    CREATE TABLE key_nonces (
        kid         TEXT PRIMARY KEY,
        last_nonce  INTEGER NOT NULL
    );
    """,
    # Which worker claimed a command, and how many claims it has had: a command left `running` by a worker
    #    that died is taken again at once by the next owner, which knows it is a re-run (storage/commands.py).
    """
    ALTER TABLE commands ADD COLUMN claimed_by TEXT;
    ALTER TABLE commands ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
    """,
]


async def migrate(db: Database) -> int:
    """Apply every migration not yet applied; return the resulting schema version.

    Several processes may start at once on one PostgreSQL database (a front and its workers): each migration's
    transaction first takes a transaction-scoped advisory lock and re-reads the version under it, so exactly one
    process applies each migration and the others see it done.
    """
    async with db.transaction() as tx:
        await _serialise(tx)
        await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        if await tx.fetchone("SELECT version FROM schema_version") is None:
            await tx.execute("INSERT INTO schema_version (version) VALUES (0)")
    version = 0
    for number, script in enumerate(MIGRATIONS, start=1):
        async with db.transaction() as tx:
            await _serialise(tx)
            version = (await tx.fetchone("SELECT version FROM schema_version"))["version"]
            if number <= version:
                continue
            for statement in _statements(script):
                await tx.execute(statement)
            await tx.execute("UPDATE schema_version SET version = ?", (number,))
            version = number
    return version


async def schema_version(db: Database) -> int | None:
    """The applied version (None: never migrated), for `python -m bot migrate` and start-up checks."""
    if not await db.has_table("schema_version"):
        return None
    row = await db.fetchone("SELECT version FROM schema_version")
    return row["version"] if row else None


async def _serialise(tx) -> None:
    if tx.backend == "postgresql":  # SQLite's BEGIN IMMEDIATE already excludes every other writer
        await tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (our scripts hold no semicolons inside literals)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
