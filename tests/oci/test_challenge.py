"""WWW-Authenticate parsing: quoted values, commas inside values, several challenges, garbage."""

from __future__ import annotations

import pytest

from hookd.oci.challenge import parse_www_authenticate


def test_docker_hub_style_bearer() -> None:
    [challenge] = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull"'
    )
    assert challenge.scheme == "bearer"
    assert dict(challenge.params) == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/nginx:pull",
    }


def test_commas_inside_quoted_scope() -> None:
    [challenge] = parse_www_authenticate(
        'Bearer realm="https://r.example/token", scope="repository:a/b:pull,push", '
        'service="r.example"'
    )
    assert challenge.params["scope"] == "repository:a/b:pull,push"
    assert challenge.params["service"] == "r.example"


def test_escapes_tokens_case_and_whitespace() -> None:
    [challenge] = parse_www_authenticate(
        'BEARER  Realm = "https://x/t?a=1,b=2" ,  Service=reg.example , '
        'error="insufficient_scope", note="say \\"hi\\""'
    )
    assert challenge.scheme == "bearer"
    assert challenge.params["realm"] == "https://x/t?a=1,b=2"
    assert challenge.params["service"] == "reg.example"
    assert challenge.params["error"] == "insufficient_scope"
    assert challenge.params["note"] == 'say "hi"'


def test_several_challenges_in_one_header() -> None:
    challenges = parse_www_authenticate(
        'Basic realm="Registry Realm", Bearer realm="https://t.example/token",service="s", '
        "Negotiate abc123==, Empty"
    )
    assert [c.scheme for c in challenges] == ["basic", "bearer", "negotiate", "empty"]
    assert challenges[0].params["realm"] == "Registry Realm"
    assert challenges[1].params["service"] == "s"
    assert challenges[2].token68 == "abc123=="
    assert not challenges[3].params


def test_first_duplicate_parameter_wins() -> None:
    [challenge] = parse_www_authenticate('Bearer realm="a", realm="b"')
    assert challenge.params["realm"] == "a"


def test_edge_cases_the_grammar_allows() -> None:
    # An empty list element (trailing comma) must be accepted (RFC 9110 section 5.6.1) ...
    [challenge] = parse_www_authenticate('Bearer realm="x",')
    assert challenge.params["realm"] == "x"
    # ... and "realm=" alone is a token68, not a realm (the client then finds no realm).
    [challenge] = parse_www_authenticate("Bearer realm=")
    assert challenge.token68 == "realm="
    assert "realm" not in challenge.params


def test_empty_header() -> None:
    assert parse_www_authenticate("") == []
    assert parse_www_authenticate(" , ") == []


@pytest.mark.parametrize(
    "header",
    [
        'Bearer realm="unterminated',
        'Bearer realm="x" service="y"',  # missing comma
        "Bearer =x",
        '=Bearer realm="x"',
        "Bearer realm=a b c",
        '"Bearer"',
        'Bearer realm="a\x01b"',
        'Bearer realm="x"' + ", k=v" * 3000,  # absurdly long
        "Bearer\trealm=x@",
    ],
)
def test_garbage_is_rejected(header: str) -> None:
    with pytest.raises(ValueError):
        parse_www_authenticate(header)
