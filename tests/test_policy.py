"""Issue 4: the managers' policy file: validated with line-precise errors, reloaded live, and a
bad edit keeps the old policy and tells the agents once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.errors import PolicyError
from bot.policy import Policy, PolicyStore, deprecations, load_policy, parse_policy
from bot.policy_defaults import defaults_text
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.harness import REVIEW_CHANNEL, draft_id_of, running_bot, wait_until


def problems(source: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(source, "policy.toml")
    return caught.value.problems


def test_a_missing_file_means_the_built_in_defaults(tmp_path: Path) -> None:
    assert load_policy(tmp_path / "absent.toml") == Policy()


def test_the_defaults_shown_without_a_policy_file_are_the_defaults_in_force() -> None:
    # The playground's editor starts from this text when there is no policy file: saving it
    # unchanged must change nothing (amounts as typed, "500.00", not the cents they are kept in).
    text = defaults_text()
    assert 'max_amount = "500.00"' in text
    assert parse_policy(text) == Policy()


def test_the_example_policy_is_valid() -> None:
    policy = load_policy(Path(__file__).parent.parent / "policy.example.toml")
    assert policy.refunds.max_amount == 50_000 and policy.refunds.manager_threshold == 10_000


def test_each_error_names_the_line_and_the_field() -> None:
    found = problems(
        '[assistant]\ntone = "warm"\n\n[refunds]\nwindow_days = "thirty"\nmax_amount = "12.345"\n'
        "[limits]\nmax_tool_steps = 0\nsurprise = true\n"
    )
    assert "line 5: refunds.window_days: Input should be a valid integer, unable to parse string as an integer" in found
    assert any(p.startswith("line 6: refunds.max_amount:") and "2 decimals" in p for p in found)
    assert any(p.startswith("line 8: limits.max_tool_steps:") for p in found)
    assert "line 9: limits.surprise: unknown field" in found


def test_invalid_toml_names_the_line() -> None:
    [problem] = problems('[refunds]\nmax_amount = "10\n')
    assert "line 2" in problem


def test_memory_thresholds_must_make_sense() -> None:
    [problem] = problems("[memory]\nsummarize_after_turns = 4\nkeep_recent_turns = 6\n")
    assert problem.startswith("line 1: memory:") and "smaller" in problem


async def test_live_reload_applies_good_edits_and_keeps_the_old_policy_on_a_bad_one(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with running_bot(tmp_path, kimi, slack, policy='[approvers]\nagents = ["U333"]\n') as harness:
        policy_file = tmp_path / "policy.toml"
        core = harness.bot.core
        assert core is not None
        await harness.mention("where is #W2611340")
        [card] = await harness.wait_cards(1)

        # An agent not on the list cannot approve.
        await harness.click("approve_draft", draft_id_of(card), user="U444")
        await wait_until(lambda: [t for t in harness.ephemerals("U444") if "approver list" in t])

        # A manager breaks the file: the old policy stays and the review channel hears it once.
        policy_file.write_text('[approvers]\nagents = "U444"\n')
        notices = await wait_until(
            lambda: [
                c
                for c in harness.slack.calls_to("chat.postMessage")
                if c.params.get("channel") == REVIEW_CHANNEL and "not reloaded" in str(c.params.get("text"))
            ]
        )
        assert "line 2: approvers.agents" in notices[0].params["text"]
        # Looking at the same bad file again (the watcher's next rounds) says nothing new.
        assert await core.reload_policy() is not None
        assert await core.reload_policy() is not None
        assert (
            len([c for c in harness.slack.calls_to("chat.postMessage") if "not reloaded" in str(c.params.get("text"))])
            == 1
        )
        assert core.policy.current.approvers.agents == ("U333",)

        # The fix takes effect without a restart: U444 may approve now.
        policy_file.write_text('[approvers]\nagents = ["U333", "U444"]\n')
        await wait_until(lambda: [1] if core.policy.current.approvers.agents == ("U333", "U444") else [])
        await harness.click("approve_draft", draft_id_of(card), user="U444")
        await harness.wait_replies(None)


async def test_the_watcher_never_puts_a_half_written_file_in_force(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('[refunds]\nmax_amount = "300.00"\n\n[approvers]\nmanagers = ["mgr"]\n')
    store = PolicyStore(policy_file)
    refused: list[PolicyError] = []

    async def look() -> bool:  # one look of the watcher
        async def report(error: PolicyError) -> None:
            refused.append(error)

        return await store.reload_if_changed(report, settled=True)

    # An editor saving in place: the file is empty for a moment, then holds the new text.
    policy_file.write_text("")
    assert not await look() and store.current.refunds.max_amount == 30_000, "the empty moment is not taken"
    policy_file.write_text('[refunds]\nmax_amount = "400.00"\n\n[approvers]\nmanagers = ["mgr"]\n')
    assert not await look(), "seen once: it may still be on its way"
    assert await look() and store.current.refunds.max_amount == 40_000
    assert not await look()

    # A copy cut short mid-line is no error for the desk; the same bad text on two looks is one.
    policy_file.write_text('[refunds]\nmax_amount = "3')
    assert not await look() and refused == []
    assert not await look() and len(refused) == 1
    assert not await look() and len(refused) == 1 and store.current.refunds.max_amount == 40_000

    # Emptied on purpose (it stays so): the built-in defaults, one look later.
    policy_file.write_text("")
    assert not await look()
    assert await look() and store.current == Policy()


def test_a_knowledge_file_that_does_not_exist_is_a_policy_error(tmp_path: Path) -> None:
    (tmp_path / "faq.md").write_text("# FAQ\n\nWe ship worldwide.\n")
    policy = tmp_path / "policy.toml"
    policy.write_text('[assistant]\ntone = "warm"\n\n[knowledge]\nfiles = ["faq.md", "returns.md"]\n')
    with pytest.raises(PolicyError) as caught:
        load_policy(policy)
    assert caught.value.problems == ["line 5: knowledge.files: no such file: returns.md"]


# --------------------------------------------------------------------------------------------
# Guards (issue 8): a policy that contradicts itself is refused, naming line and field


def test_thresholds_above_the_maximum_are_refused_naming_line_and_field() -> None:
    found = problems(
        '[refunds]\nmax_amount = "100.00"\nmanager_threshold = "150.00"\ntwo_approvers_threshold = "250.00"\n'
    )
    assert found == [
        "line 3: refunds.manager_threshold: 150.00 is above refunds.max_amount 100.00, so it could never apply",
        "line 4: refunds.two_approvers_threshold: 250.00 is above refunds.max_amount 100.00, so it could never apply",
    ]


def test_knowledge_files_outside_the_policys_folder_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    (tmp_path / "secret.md").write_text("not for the model\n")
    (folder / "faq.md").write_text("# FAQ\n")
    policy = folder / "policy.toml"
    policy.write_text('[knowledge]\nfiles = ["faq.md", "../secret.md", "/etc/hostname"]\n')
    with pytest.raises(PolicyError) as caught:
        load_policy(policy)
    assert caught.value.problems == [
        "line 2: knowledge.files: ../secret.md is outside the policy's folder",
        "line 2: knowledge.files: /etc/hostname is outside the policy's folder",
    ]


def test_the_identity_section_is_validated() -> None:
    found = problems('[identity]\nunverified_may_see = "everything"\nmax_attempts = 0\n')
    assert any(p.startswith("line 2: identity.unverified_may_see:") for p in found)
    assert any(p.startswith("line 3: identity.max_attempts:") for p in found)
    policy = parse_policy('[identity]\nprofile_email = true\n[refunds]\nmax_per_customer_per_day = "300"\n')
    assert policy.identity.profile_email and policy.refunds.max_per_customer_per_day == 30_000


def test_each_platform_names_its_on_call_group_in_its_own_section() -> None:
    policy = parse_policy('[escalation]\nmax_failed_drafts = 3\n\n[escalation.slack]\non_call = "S0ONCALL"\n')
    assert policy.escalation.on_call("slack") == "S0ONCALL"
    assert policy.escalation.on_call("discord") == ""  # a platform without a section tags nobody
    [problem] = problems('[escalation.discord]\non_call = "1299"\noncall = "1300"\n')
    assert problem == "line 3: escalation.discord.oncall: unknown field"


def test_the_old_on_call_keys_still_load_and_each_says_it_is_deprecated() -> None:
    source = (
        '[escalation]\non_call_slack = "S0OLD"\non_call_discord = "1299"\n\n[escalation.slack]\non_call = "S0NEW"\n'
    )
    policy = parse_policy(source)
    assert policy.escalation.on_call("discord") == "1299"
    assert policy.escalation.on_call("slack") == "S0NEW"  # the new section wins
    assert deprecations(source) == [
        'line 2: escalation.on_call_slack is deprecated; write [escalation.slack] on_call = "S0OLD" instead',
        'line 3: escalation.on_call_discord is deprecated; write [escalation.discord] on_call = "1299" instead',
    ]
    assert deprecations('[escalation.slack]\non_call = "S0NEW"\n') == []


def test_the_running_bot_logs_each_deprecated_key_once_when_it_loads_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[escalation]\non_call_slack = "S0OLD"\n')
    with caplog.at_level(logging.WARNING, logger="bot.policy"):
        store = PolicyStore(path)
    assert store.current.escalation.on_call("slack") == "S0OLD"
    assert [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()] == [
        f'{path}: line 2: escalation.on_call_slack is deprecated; write [escalation.slack] on_call = "S0OLD" instead'
    ]
