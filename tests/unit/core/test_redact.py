"""The one list of secret values and the one masker, as every writer of logs and records uses them."""

from __future__ import annotations

from core.redact import Redactor, mask_urls, redact, secret_values


def test_secret_values_by_name_and_inside_urls_longest_first() -> None:
    env = {
        "HF_TOKEN": "hf_abcdefgh",
        "MY_API_KEY": "k3y-value-long-one",
        "AUTOTUNER_REPO": "https://bot:s3cretpass@git.example/specs.git",
        "SHORT_TOKEN": "abc",
        "PATH": "/usr/bin",
        "SSH_REPO": "ssh://git@host/x",
    }
    assert secret_values(env) == ["k3y-value-long-one", "hf_abcdefgh", "s3cretpass"]


def test_redact_blanks_values_and_masks_every_url() -> None:
    text = "token hf_abcdefgh leaked; fetch https://u:p@h.example/x failed"
    assert redact(text, ["hf_abcdefgh"]) == "token *** leaked; fetch https://***@h.example/x failed"
    assert mask_urls("mail a@b.c, see https://h/x@y") == "mail a@b.c, see https://h/x@y"


def test_redactor_grows_and_replaces_containing_secrets_whole() -> None:
    r = Redactor(["abcd"])
    r.add("abcdefgh", "xy")  # "xy" is too short to be a secret
    assert r.values == ["abcdefgh", "abcd"]
    assert r.redact("abcdefgh abcd xy") == "*** *** xy"
