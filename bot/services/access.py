"""Who may use the bot (STRATA_ACCESS): everyone, an allowlist, or whoever an admin approved.

In `approval` mode a new user's /start files a request: every admin (STRATA_ADMINS) gets one message with
Approve / Block buttons, queued in the outbox in the same transaction as the request, so it is never lost nor
sent twice. Admins are always let in. A block is honoured in every mode (an admin may run an open bot and
still shut one abuser out); it pauses the user's strategies and cancels their open orders exactly as their own
/panic does, keeps their data, and tells them. Every admin action is checked here, server-side: a button's
callback data proves nothing about who pressed it.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from bot.services.audit import AuditLog
from bot.services.errors import UserError
from storage.users import APPROVED, BLOCKED, PENDING, UserAccess

logger = logging.getLogger(__name__)

#: Not let in, but not a user the admins know of: in approval mode, someone who has not sent /start yet.
UNKNOWN = "unknown"
#: Not on STRATA_ALLOWED_USERS in allowlist mode.
NOT_LISTED = "not-listed"

CALLBACK_PREFIX = "usr"
APPROVE, BLOCK, UNBLOCK = "approve", "block", "unblock"

NOT_ADMIN = "Only this bot's admins can do that."


def access_button(action: str, user_id: int, page: int | None = None) -> str:
    """Callback data of an admin's button: `usr:<action>:<user id>[:<page of /users to show again>]`."""
    return f"{CALLBACK_PREFIX}:{action}:{user_id}" + (f":{page}" if page is not None else "")


@dataclass(frozen=True)
class AccessChange:
    """What an admin's approve / block / unblock did, in words for the admin."""

    user_id: int
    name: str
    access: str
    paused: int = 0  # a block: the strategies paused and orders cancelled, as /panic reports them
    canceled: int = 0
    errors: tuple[str, ...] = ()


class AccessService:
    def __init__(self, store, settings, strategies) -> None:
        self._store = store
        self._strategies = strategies
        self._audit = AuditLog(store)
        self.mode: str = settings.access
        self.admins: frozenset[int] = settings.admins
        self._allowed: frozenset[int] = settings.allowed_users

    def is_admin(self, user_id: int) -> bool:
        return user_id in self.admins

    async def check(self, user_id: int) -> str:
        """APPROVED (let in), PENDING, BLOCKED, UNKNOWN (approval mode, no request yet) or NOT_LISTED."""
        if user_id in self.admins:
            return APPROVED
        if self.mode == "allowlist" and user_id not in self._allowed:
            return NOT_LISTED
        if not self.admins:  # nobody can block or approve: open or allowlist decide alone, no database read
            return APPROVED
        stored = await self._store.users.access_of(user_id)
        return self._effective(user_id, stored)

    def _effective(self, user_id: int, stored: str | None) -> str:
        if user_id in self.admins:
            return APPROVED
        if stored == BLOCKED:
            return BLOCKED
        if self.mode != "approval" or user_id in self._allowed:  # listed users need no approval
            return APPROVED
        return stored or UNKNOWN

    async def request(self, user_id: int, chat_id: int, name: str) -> str:
        """A /start from someone not let in: file their request and tell every admin, once. Returns their state."""
        name = " ".join(name.split())[:64] or f"user {user_id}"
        async with self._store.db.transaction() as tx:
            if not await self._store.users.request_access(tx, user_id, chat_id, name):
                return self._effective(user_id, await self._store.users.access_of(user_id))
            text = (
                f"🔔 <b>Access request</b>\n{html.escape(name, quote=False)} (id <code>{user_id}</code>) asks to use "
                "this bot.\n/users lists everyone."
            )
            buttons = [[("✅ Approve", access_button(APPROVE, user_id)), ("⛔ Block", access_button(BLOCK, user_id))]]
            for admin in sorted(self.admins):
                admin_chat = await self._store.users.chat_of(admin, tx) or admin  # a private chat's id is the user's
                await self._store.outbox.enqueue(
                    tx, user_id=admin, chat_id=admin_chat, kind="info", text=text, buttons=buttons
                )
            await self._audit.record(
                "request-access", actor_id=user_id, user_id=user_id, target=f"user {user_id} ({name})", tx=tx
            )
        logger.info("user %s asked for access; %d admin(s) told", user_id, len(self.admins))
        return PENDING

    async def users(self, admin_id: int) -> list[UserAccess]:
        """Every user with their access as the guard sees it (admins only), requests waiting first."""
        self._require_admin(admin_id)
        listed = [replace(u, access=self._effective(u.id, u.access)) for u in await self._store.users.access_list()]
        order = {PENDING: 0, APPROVED: 1, BLOCKED: 2}
        return sorted(listed, key=lambda u: (order.get(u.access, 3), u.id))

    async def approve(self, admin_id: int, user_id: int) -> AccessChange:
        self._require_admin(admin_id)
        user = await self._user(user_id)
        async with self._store.db.transaction() as tx:
            if not await self._store.users.set_access(tx, user_id, APPROVED, only_from=(PENDING,)):
                raise UserError(self._unchanged(user, APPROVED))
            await self._store.outbox.enqueue(
                tx, user_id=user_id, chat_id=user.chat_id, kind="info",
                text="✅ An admin approved your access: welcome to Strata! Send /start to begin.",
            )
            await self._audit.record("approve", actor_id=admin_id, user_id=user_id, target=_target(user), tx=tx)
        return AccessChange(user_id, user.name, APPROVED)

    async def unblock(self, admin_id: int, user_id: int) -> AccessChange:
        self._require_admin(admin_id)
        user = await self._user(user_id)
        async with self._store.db.transaction() as tx:
            if not await self._store.users.set_access(tx, user_id, APPROVED, only_from=(BLOCKED,)):
                raise UserError(self._unchanged(user, "unblocked"))
            await self._store.outbox.enqueue(
                tx, user_id=user_id, chat_id=user.chat_id, kind="info",
                text="✅ An admin unblocked your access. Your strategies stay paused: /resume all resumes those "
                     "the block paused, /status shows them.",
            )
            await self._audit.record("unblock", actor_id=admin_id, user_id=user_id, target=_target(user), tx=tx)
        return AccessChange(user_id, user.name, APPROVED)

    async def block(
        self, admin_id: int, user_id: int, *, settle: Callable[[int], Awaitable[object]] | None = None
    ) -> AccessChange:
        """Shut a user out, then pause their strategies and cancel their open orders as /panic does.

        Blocked first, so nothing they send afterwards gets through; `settle(user_id)` then waits for what they
        sent before (an allocation being confirmed), so the panic also catches what that started. Their
        accounts, strategies and history stay.
        """
        self._require_admin(admin_id)
        if user_id in self.admins:
            raise UserError("That user is an admin (STRATA_ADMINS): remove them there first.")
        user = await self._user(user_id)
        async with self._store.db.transaction() as tx:
            if not await self._store.users.set_access(tx, user_id, BLOCKED, only_from=(PENDING, APPROVED)):
                raise UserError(self._unchanged(user, BLOCKED))
        if settle is not None:
            await settle(user_id)
        paused = canceled = 0
        errors: tuple[str, ...] = ("the pause did not finish: see the log",)
        try:
            result = await self._strategies.panic(user_id, actor_id=admin_id)
            paused, canceled, errors = result.paused, result.canceled, result.errors
        finally:
            async with self._store.db.transaction() as tx:
                text = _blocked_text(paused, canceled, errors, has_data=bool(user.accounts or user.strategies))
                await self._store.outbox.enqueue(tx, user_id=user_id, chat_id=user.chat_id, kind="info", text=text)
                await self._audit.record(
                    "block", actor_id=admin_id, user_id=user_id, target=_target(user),
                    outcome="ok" if not errors else "partial",
                    detail=f"paused {paused} strategies, cancelled {canceled} orders"
                           + (f"; {len(errors)} problem(s): {'; '.join(errors)}" if errors else ""),
                    tx=tx,
                )
        logger.info("admin %s blocked user %s: %d paused, %d cancelled", admin_id, user_id, paused, canceled)
        return AccessChange(user_id, user.name, BLOCKED, paused=paused, canceled=canceled, errors=errors)

    def _require_admin(self, user_id: int) -> None:
        if user_id not in self.admins:
            raise UserError(NOT_ADMIN)

    async def _user(self, user_id: int) -> UserAccess:
        found = await self._store.users.access_one(user_id)
        if found is None:
            raise UserError("I know no such user: they have to send /start first.")
        return found

    def _unchanged(self, user: UserAccess, wanted: str) -> str:
        """Why a button changed nothing: another admin (or an earlier press) got there first, or it no longer fits."""
        now = self._effective(user.id, user.access)
        if wanted in (now, "unblocked"):
            return f"{user.name or user.id} is already {now}." if wanted == now else f"{user.name} is not blocked."
        return f"{user.name or user.id} is {now} now: see /users."


def _target(user: UserAccess) -> str:
    return f"user {user.id} ({user.name})" if user.name else f"user {user.id}"


def _blocked_text(paused: int, canceled: int, errors: tuple[str, ...], *, has_data: bool) -> str:
    text = "⛔ An admin blocked your access to this bot."
    if paused or canceled:
        text += (
            f" I paused {paused} running strateg{'y' if paused == 1 else 'ies'} and cancelled {canceled} open "
            f"order{'' if canceled == 1 else 's'}, as /panic does."
        )
    if errors:
        text += " Some orders may still be open: check them on the exchange."
    return text + (" Your accounts, strategies and history are kept." if has_data else "")
