"""The guided allocation's draft: Back keeps earlier answers, a changed answer forgets what it invalidates, and a
refusal can only send the user back, never ahead of the answers given."""

from bot.services.drafts import Draft, DraftStep


def answered() -> Draft:
    draft = Draft(user_id=1)
    draft.set_account("binance", "binance")
    draft.set_kind("grid")
    draft.set_symbol("BTC/USDT", "USDT")
    draft.set_budget("100")
    draft.params = {"levels": "9"}
    return draft


def test_back_goes_one_step_up_and_keeps_every_answer():
    draft = answered()
    assert draft.step is DraftStep.PARAMS
    assert [draft.back() for _ in range(5)] == [
        DraftStep.BUDGET, DraftStep.SYMBOL, DraftStep.STRATEGY, DraftStep.ACCOUNT, DraftStep.ACCOUNT
    ]
    assert (draft.account_label, draft.kind, draft.symbol, draft.budget, draft.params) == (
        "binance", "grid", "BTC/USDT", "100", {"levels": "9"}
    )


def test_the_same_answer_again_keeps_the_later_ones_and_another_forgets_them():
    draft = answered()
    draft.set_symbol("BTC/USDT", "USDT")
    assert draft.params == {"levels": "9"} and draft.step is DraftStep.BUDGET
    draft.set_symbol("ETH/USDT", "USDT")
    assert draft.params == {}
    draft = answered()
    draft.set_kind("dca")
    assert (draft.symbol, draft.quote, draft.budget, draft.params) == (None, None, None, {})
    draft = answered()
    draft.set_account("kraken", "kraken")
    assert draft.kind is None and draft.step is DraftStep.STRATEGY


def test_a_refusal_sends_back_but_never_ahead():
    draft = answered()
    draft.go_to(DraftStep.BUDGET)
    assert draft.step is DraftStep.BUDGET
    draft.go_to(DraftStep.PARAMS)
    assert draft.step is DraftStep.BUDGET
    assert not Draft(user_id=1).awaits_text and draft.awaits_text
